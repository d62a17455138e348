"""Training pipeline: autoencoder / extraction / generator on a tiny config and a tiny synthetic dataset.

Everything runs through the real command line (``dystream train ...``) with a tiny model built from a
checkpoint (``--init``), so these tests cover the code users run, in a few seconds each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from dystream_ros.cli import main as cli
from dystream_ros.config import load_profile
from dystream_ros.model.checkpoint import load_checkpoint, save_checkpoint
from dystream_ros.model.dystream import build_model

REPO = Path(__file__).resolve().parents[1]

TINY = dict(
    latent_dim=8,
    audio={"channels": 16, "dilations": [1, 2], "feature_dim": 16},
    generator={"width": 32, "layers": 1, "heads": 2, "mlp_ratio": 2, "window": 16},
    head={"width": 32, "blocks": 1, "mlp_ratio": 2, "time_freq_dim": 16},
    autoencoder={
        "image_size": 32,
        "warp_size": 16,
        "app_channels": 8,
        "enc_channels": [8],
        "enc_blocks": 1,
        "motion_size": 32,
        "motion_channels": [8, 16, 16],
        "motion_extra_convs": [1],
        "flow_channels": [16, 8],
        "refine_channels": 8,
        "up_channels": [],
    },
)


def tiny_config():
    return load_profile("lite", **TINY)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from dystream_ros.data.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("train")
    synthesize_dataset(root / "train", 2, seed=0, split="train", duration_s=4.0, progress=False)
    synthesize_dataset(root / "heldout", 1, seed=0, split="heldout", duration_s=4.0, progress=False)
    save_checkpoint(build_model(tiny_config(), seed=0), root / "tiny.safetensors")
    return root


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _ae(workdir: Path, out: Path, steps: int, *extra: str) -> int:
    return cli([
        "train", "autoencoder", "--data", str(workdir / "train"), "--val-data", str(workdir / "heldout"),
        "--init", str(workdir / "tiny.safetensors"), "--out", str(out), "--steps", str(steps),
        "--batch", "4", "--lr", "3e-3", "--warmup", "2", "--save-every", "3", "--val-every", "1000",
        "--val-pairs", "4", "--log-every", "1", "--threads", "1", *extra,
    ])  # fmt: skip


def _state(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_autoencoder_loss_drops(workdir, tmp_path):
    assert _ae(workdir, tmp_path / "ae", 40) == 0
    train = [r for r in _log(tmp_path / "ae") if r["event"] == "train"]
    assert len(train) == 40
    # the reconstruction term (the standardised articulation probe is noisy at batch 4 on 2 conversations)
    l1 = [r["l1"] for r in train]
    assert np.mean(l1[-5:]) < 0.7 * np.mean(l1[:5])
    assert all(np.isfinite(r["aux"]) for r in train)
    vals = [r for r in _log(tmp_path / "ae") if r["event"] == "val"]
    assert vals and np.isfinite(vals[-1]["psnr"])


def test_autoencoder_resume_is_exact_and_exports_ema(workdir, tmp_path):
    # 6 steps in one go == 3 steps, stop, --resume to 6 (step count, EMA and optimiser carried over).
    assert _ae(workdir, tmp_path / "full", 6) == 0
    assert _ae(workdir, tmp_path / "split", 3) == 0
    assert _ae(workdir, tmp_path / "split", 6, "--resume") == 0
    starts = [r for r in _log(tmp_path / "split") if r["event"] == "start"]
    assert [r["step"] for r in starts] == [0, 3]
    a, b = _state(tmp_path / "full" / "state.safetensors"), _state(tmp_path / "split" / "state.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with safe_open(str(tmp_path / "split" / "state.safetensors"), framework="pt") as f:
        md = f.metadata()
    assert md["step"] == "6" and md["ema_updates"] == "6"
    # The exported checkpoint carries the EMA weights, which differ from the raw ones.
    exported = load_checkpoint(tmp_path / "split" / "autoencoder.safetensors")
    differs = 0
    for k, v in exported.autoencoder.state_dict().items():
        assert torch.equal(v, b[f"ema.{k}"]), k
        differs += not torch.equal(v, b[f"model.ae.{k}"])
    assert differs > 0


def test_extract_is_deterministic_and_standardised(workdir, tmp_path):
    def run(out):
        return cli([
            "train", "extract", "--data", str(workdir / "train"),
            "--checkpoint", str(workdir / "tiny.safetensors"), "--out", str(out), "--standardise",
        ])  # fmt: skip

    assert run(tmp_path / "a") == 0 and run(tmp_path / "b") == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.npy"))
    assert len(files) == 2 * 4  # latents, ref_latent, mel, params per conversation
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    lat = np.concatenate([np.load(p) for p in sorted((tmp_path / "a").glob("*/latents.npy"))])
    assert np.abs(lat.mean(0)).max() < 0.5 and 0.5 < lat.std(0).mean() < 1.5


def test_fold_latent_normalisation_keeps_images(workdir):
    from dystream_ros.train.data import FrameBank, to_tensor
    from dystream_ros.train.latents import fold_latent_normalisation

    model = build_model(tiny_config(), seed=1).eval()
    bank = FrameBank(workdir / "train", size=32)
    src = to_tensor(np.stack([bank.reference(0), bank.frame(0, 5)]))
    drv = to_tensor(np.stack([bank.frame(0, 40), bank.frame(1, 60)]))
    with torch.no_grad():
        before = model.autoencoder.reconstruct(src, drv)
        mean, std = torch.randn(8) * 0.3, torch.rand(8) + 0.5
        fold_latent_normalisation(model, mean, std)
        after = model.autoencoder.reconstruct(src, drv)
    torch.testing.assert_close(after["image"], before["image"], atol=1e-5, rtol=0)
    torch.testing.assert_close(after["m_driving"], (before["m_driving"] - mean) / std, atol=1e-5, rtol=1e-4)


def test_encode_mels_equals_encode_sequence(workdir, tmp_path):
    from dystream_ros.data.dataset import load_conversation
    from dystream_ros.model.audio import frame_windows
    from dystream_ros.train.generator import encode_mels
    from dystream_ros.train.latents import clip_mels

    model = build_model(tiny_config(), seed=0).eval()
    conv = load_conversation(workdir / "train" / "conv_0000")
    mel = clip_mels(model, conv.speaker, conv.listener, conv.num_frames)
    a = model.audio.cfg
    for f0, t in ((0, 7), (33, 12)):
        wave = frame_windows(np.stack([conv.speaker, conv.listener]), f0, t, a)[None]
        want = model.audio.encode_sequence(wave, t)
        m = a.hops_per_frame
        got = encode_mels(
            model.audio, torch.from_numpy(mel[:, :, m * f0 : m * f0 + a.window_mels + m * (t - 1)])[None]
        )
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def latents(workdir):
    out = workdir / "latents"
    assert cli(["train", "extract", "--data", str(workdir / "train"), "--checkpoint",
                str(workdir / "tiny.safetensors"), "--out", str(out), "--standardise"]) == 0  # fmt: skip
    val = workdir / "val_latents"
    assert cli(["train", "extract", "--data", str(workdir / "heldout"), "--checkpoint",
                str(out / "autoencoder.safetensors"), "--out", str(val)]) == 0  # fmt: skip
    return out


def _gen(workdir: Path, out: Path, steps: int, *extra: str) -> int:
    return cli([
        "train", "generator", "--latents", str(workdir / "latents"), "--val-latents",
        str(workdir / "val_latents"), "--out", str(out), "--steps", str(steps), "--batch", "4",
        "--frames", "24", "--lr", "2e-3", "--warmup", "2", "--save-every", "4", "--val-every", "4",
        "--val-windows", "4", "--log-every", "1", "--threads", "1", *extra,
    ])  # fmt: skip


@pytest.mark.parametrize("anchor", ["window", "reference"])
def test_generator_loss_drops_on_a_fixed_batch(latents, anchor):
    from dystream_ros.train.generator import GenLoss, sample_windows
    from dystream_ros.train.latents import LatentSet

    torch.manual_seed(0)
    model = load_checkpoint(latents / "autoencoder.safetensors", render=False).train()
    mod = GenLoss(model, anchor)
    windows = sample_windows(LatentSet(latents), np.random.default_rng(0), 4, 24)
    windows = [torch.from_numpy(w) for w in windows]
    opt = torch.optim.Adam(mod.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, _ = mod(*windows, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_the_anchor_a_window_trains_with(latents):
    """'window': a latent of the window's last ``anchor_last`` frames (the published recipe);
    'reference': the conversation's reference latent, the anchor a session conditions every frame on."""
    from dystream_ros.train.generator import GenLoss, sample_windows
    from dystream_ros.train.latents import LatentSet

    data = LatentSet(latents)
    model = load_checkpoint(latents / "autoencoder.safetensors", render=False)
    mels, motion, refs = sample_windows(data, np.random.default_rng(3), 4, 24, start_fraction=0.0)
    names = [next(i for i, lat in enumerate(data.latents) if any(np.array_equal(m, x) for x in lat))
             for m in motion[:, -1]]  # the conversation each window was cut from
    assert all(np.array_equal(r, data.refs[c]) for r, c in zip(refs, names, strict=True))
    seen = {}
    model.generator.embed.register_forward_pre_hook(
        lambda _mod, inputs: seen.update(anchor=inputs[2].detach().clone()))
    last = model.cfg.train.anchor_last
    for mode in ("window", "reference"):
        batch = (torch.from_numpy(w) for w in (mels, motion, refs))
        GenLoss(model, mode)(*batch, torch.Generator().manual_seed(0))
        a = seen["anchor"].numpy()
        assert (a == a[:, :1]).all()  # one anchor for every frame of a window
        for w in range(len(a)):
            if mode == "reference":
                np.testing.assert_array_equal(a[w, 0], refs[w])
            else:
                assert any(np.array_equal(a[w, 0], x) for x in motion[w, -last:])
                assert not np.array_equal(a[w, 0], refs[w])
    with pytest.raises(ValueError, match="anchor must be one of"):
        GenLoss(model, "last")


def test_generator_resume_ema_export_and_pipeline(workdir, latents, tmp_path):
    run = tmp_path / "gen"
    assert _gen(workdir, run, 4) == 0
    assert _gen(workdir, run, 8, "--resume") == 0
    log = _log(run)
    assert [r["step"] for r in log if r["event"] == "start"] == [0, 4]
    assert [r["step"] for r in log if r["event"] == "val"] == [4, 8]
    st = _state(run / "state.safetensors")
    with safe_open(str(run / "state.safetensors"), framework="pt") as f:
        assert f.metadata()["ema_updates"] == "8"
    model = load_checkpoint(run / "model.safetensors")
    differs = 0
    for name in ("audio", "generator", "head"):
        for k, v in getattr(model, name).state_dict().items():
            assert torch.equal(v, st[f"ema.{name}.{k}"]), k
            differs += not torch.equal(v, st[f"model.{name}.{k}"])
    assert differs > 0
    # The latent set has ground-truth articulation: the export carries the fitted head-pose directions.
    basis = model.head_basis
    torch.testing.assert_close(basis @ basis.T, torch.eye(3), atol=1e-5, rtol=0)
    # The exported file is a full pipeline: it streams frames.
    from dystream_ros.model import load_pipeline

    pipe = load_pipeline(run / "model.safetensors", backend="torch")
    sess = pipe.start_session(np.zeros((32, 32, 3), np.uint8) + 128)
    sess.push_audio(speaker=np.zeros(16000, np.float32), listener=np.zeros(16000, np.float32))
    frame = sess.step()
    assert frame is not None and frame.image.shape == (32, 32, 3) and frame.latent.shape == (8,)


def test_fit_head_basis_spans_the_pose_directions():
    from dystream_ros.data.face import ARTICULATION_FIELDS
    from dystream_ros.train.latents import HEAD_POSE, fit_head_basis

    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(3, 16))  # how the latent moves per unit of yaw, pitch, roll
    params, latents = [], []
    for n in (300, 200):
        p = rng.uniform(-0.5, 0.5, size=(n + 5, len(ARTICULATION_FIELDS)))  # longer than the latents
        pose = p[:n, [ARTICULATION_FIELDS.index(k) for k in HEAD_POSE]]
        latents.append(pose @ dirs + 0.01 * rng.normal(size=(n, 16)) + 2.0)
        params.append(p)
    basis = fit_head_basis(latents, params)
    assert basis.shape == (3, 16)
    np.testing.assert_allclose(basis @ basis.T, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(dirs @ basis.T @ basis, dirs, atol=0.02)  # the span holds every direction
    other = rng.normal(size=16)
    other -= dirs.T @ np.linalg.lstsq(dirs.T, other, rcond=None)[0]  # orthogonal to all three
    assert np.linalg.norm(basis @ other) < 0.02 * np.linalg.norm(other)


def test_torchrun_ddp_two_processes_stay_in_sync(workdir, latents, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for stage, args in (
        ("autoencoder", ["--data", str(workdir / "train"), "--init", str(workdir / "tiny.safetensors"),
                         "--batch", "2", "--val-every", "1000"]),
        ("generator", ["--latents", str(latents), "--batch", "2", "--frames", "16", "--val-every", "1000"]),
    ):  # fmt: skip
        out = tmp_path / stage
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "dystream_ros.cli", "train", stage, *args, "--out", str(out), "--steps", "3",
               "--threads", "1", "--device", "cpu"]  # fmt: skip
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=REPO)
        assert r.returncode == 0, r.stderr[-3000:]
        done = [x for x in _log(out) if x["event"] == "done"][-1]
        assert done["world"] == 2 and done["ranks_in_sync"] is True and done["step"] == 3


def test_autoencoder_aux_only_trains_the_motion_encoder_only(workdir, tmp_path):
    assert _ae(workdir, tmp_path / "pre", 3, "--aux-only") == 0
    before = load_checkpoint(workdir / "tiny.safetensors").autoencoder.state_dict()
    st = _state(tmp_path / "pre" / "state.safetensors")
    for k, v in before.items():
        moved = not torch.equal(v, st[f"model.ae.{k}"])
        assert moved == k.startswith("motion."), k


def test_articulation_probe_targets_are_standardised(workdir):
    """The probe regresses (params - mean) / std over the training set, so every parameter counts."""
    from dystream_ros.train.autoencoder import AELoss
    from dystream_ros.train.data import FrameBank, normalise_params

    bank = FrameBank(workdir / "train", size=32, keep_audio=False)
    mean, std = bank.param_stats()
    every = normalise_params(np.concatenate([c.params for c in bank.convs]))
    np.testing.assert_allclose(mean, every.mean(0), rtol=1e-5, atol=1e-6)
    assert (std > 0).all() and std.shape == (13,)

    model = build_model(tiny_config(), render=True, seed=0)
    loss_mod = AELoss(model.autoencoder, 8, 1.0, 0.0, param_stats=(mean, std))
    params = torch.from_numpy(every[:5])
    target = (params - torch.from_numpy(mean)) / torch.from_numpy(std)
    m = torch.randn(5, 8)
    expected = torch.nn.functional.mse_loss(loss_mod.probe(m), target)
    assert torch.allclose(loss_mod._aux(m, params), expected)
    # and not the raw [0, 1] parameters
    raw = torch.nn.functional.mse_loss(loss_mod.probe(m), params)
    assert not torch.allclose(loss_mod._aux(m, params), raw)


def test_motion_encoder_sees_where_things_are():
    """The latent is read from the flattened map, not a global pool: moving a patch changes the latent."""
    from dystream_ros.model.autoencoder import MotionEncoder

    cfg = tiny_config().autoencoder
    enc = MotionEncoder(cfg, 8).eval()
    a = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
    b = a.clone()
    a[..., 4:12, 4:12] = 1.0
    b[..., 20:28, 20:28] = 1.0  # same patch, other place: a global average pool would see ~the same
    with torch.no_grad():
        assert (enc(a) - enc(b)).abs().max() > 1e-3
        assert enc(a).shape == (1, 8)


def test_mouth_box_holds_the_mouth_and_follows_the_head():
    """The renderer's mouth box (the decoder's --mouth-weight region) holds the open mouth: the pixels that
    turn into its dark inside or its teeth when the jaw opens (the chin below moves too, outside)."""
    from dystream_ros.data.face import Articulation, FaceRenderer, identity_from_seed

    for seed in (0, 3, 5):
        r = FaceRenderer(identity_from_seed(seed), 256)
        centres = []
        for yaw, pitch, roll in ((-0.4, 0.2, 0.1), (0.4, -0.2, -0.2)):
            pose = dict(head_yaw=yaw, head_pitch=pitch, head_roll=roll)
            shut = Articulation(lip_close=1.0, **pose)
            wide = Articulation(jaw_open=1.0, lip_spread=1.0, **pose)
            a, b = r.render(wide).astype(int), r.render(shut).astype(int)
            red, green, blue = a[..., 0], a[..., 1], a[..., 2]
            dark_inside = (red - green > 25) & (red < 140) & (green < 70)
            teeth = (a.min(-1) > 185) & (np.abs(red - blue) < 40)
            opened = (np.abs(a - b).max(-1) > 12) & (dark_inside | teeth)
            x0, y0, x1, y1 = r.mouth_box(wide)
            assert r.mouth_box(shut) == (x0, y0, x1, y1)  # depends on the pose only
            ys, xs = np.nonzero(opened)
            inside = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
            assert len(xs) > 300 and inside.mean() > 0.95, (seed, yaw, inside.mean())
            assert (x1 - x0) * (y1 - y0) < 0.08 * 256 * 256
            centres.append(((x0 + x1) / 2, (y0 + y1) / 2))
        assert centres[1][0] - centres[0][0] > 10  # follows the yaw


def test_mouth_weight_up_weights_the_mouth_box(workdir, tmp_path):
    from dystream_ros.train.autoencoder import AELoss, box_mask

    model = build_model(tiny_config(), render=True, seed=0)
    img = torch.zeros(2, 3, 32, 32)
    boxes = torch.tensor([[4.0, 8.0, 12.0, 16.0], [0.0, 0.0, 32.0, 3.0]])  # pixel centres at +0.5
    mask = box_mask(boxes, 32)
    assert mask[0, 0].sum() == 8 * 8 and mask[0, 0, 8:16, 4:12].all()
    assert mask[1, 0].sum() == 3 * 32
    w = AELoss(model.autoencoder, 8, 0.0, 0.0, mouth_weight=20.0).pixel_weights(img, img, boxes)
    assert torch.equal(w, 1.0 + 20.0 * mask)
    with pytest.raises(ValueError, match="mouth boxes"):
        AELoss(model.autoencoder, 8, 0.0, 0.0, mouth_weight=20.0).pixel_weights(img, img, None)
    # Through the command line: the held-out validation reports the PSNR inside the mouth box.
    assert _ae(workdir, tmp_path / "m", 3, "--mouth-weight", "20", "--val-every", "3") == 0
    (val,) = [r for r in _log(tmp_path / "m") if r["event"] == "val"]
    assert np.isfinite(val["mouth_psnr"]) and val["mouth_psnr"] != val["psnr"]


def test_mouth_l2_scores_the_squared_error_inside_the_mouth_box(workdir, tmp_path):
    from dystream_ros.train.autoencoder import AELoss

    model = build_model(tiny_config(), render=True, seed=0)
    boxes = torch.tensor([[4.0, 8.0, 12.0, 16.0], [0.0, 0.0, 32.0, 3.0]])
    src, drv = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    base = AELoss(model.autoencoder, 8, 0.0, 0.0)
    with_l2 = AELoss(model.autoencoder, 8, 0.0, 0.0, mouth_l2=3.0)
    with torch.no_grad():
        loss0, _ = base(src, drv, None)
        loss1, parts = with_l2(src, drv, None, boxes)
        pred = model.autoencoder.reconstruct(src, drv)["image"]
    inside = torch.cat([(pred - drv)[0, :, 8:16, 4:12].flatten(), (pred - drv)[1, :, 0:3, :].flatten()])
    torch.testing.assert_close(parts["mouth_l2"], inside.square().mean())
    torch.testing.assert_close(loss1, loss0 + 3.0 * parts["mouth_l2"])
    with pytest.raises(ValueError, match="mouth boxes"):
        with_l2(src, drv, None, None)
    # Through the command line (without --mouth-weight the boxes still reach the loss).
    assert _ae(workdir, tmp_path / "l2", 2, "--mouth-l2", "2", "--synth-weight", "1") == 0
    rec = [r for r in _log(tmp_path / "l2") if r["event"] == "train"]
    assert rec and all(r["mouth_l2"] > 0 for r in rec)


def test_init_motion_copies_the_motion_encoder_only(workdir, tmp_path):
    """--init-motion: a decoder of another design on an existing motion encoder (same latent space)."""
    from dystream_ros.train.autoencoder import copy_motion_encoder
    from dystream_ros.train.latents import motion_fingerprint

    src = build_model(tiny_config(), render=True, seed=0)
    other = tiny_config().replace(autoencoder={"flow_channels": (32, 16), "refine_blocks": 2})
    dst = build_model(other, render=True, seed=1)
    flow_before = {k: v.clone() for k, v in dst.autoencoder.decoder.state_dict().items()}
    assert motion_fingerprint(src) != motion_fingerprint(dst)
    save_checkpoint(src, tmp_path / "src.safetensors")
    copy_motion_encoder(tmp_path / "src.safetensors", dst)
    assert motion_fingerprint(src) == motion_fingerprint(dst)
    for k, v in dst.autoencoder.decoder.state_dict().items():
        assert torch.equal(v, flow_before[k]), k
    wrong = build_model(tiny_config().replace(autoencoder={"motion_channels": (8, 16, 32)}), render=True)
    save_checkpoint(wrong, tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError, match="motion_channels"):
        copy_motion_encoder(tmp_path / "wrong.safetensors", dst)
    # Through the command line, on the lite profile: the exported autoencoder keeps the motion encoder.
    lite = build_model(load_profile("lite"), render=False, seed=3)
    save_checkpoint(lite, tmp_path / "motion.safetensors")
    assert cli([
        "train", "autoencoder", "--data", str(workdir / "train"), "--init-motion",
        str(tmp_path / "motion.safetensors"), "--freeze-motion", "--aux-weight", "0", "--out",
        str(tmp_path / "dec"), "--steps", "1", "--batch", "1", "--threads", "1",
    ]) == 0  # fmt: skip
    out = load_checkpoint(tmp_path / "dec" / "autoencoder.safetensors")
    assert motion_fingerprint(out) == motion_fingerprint(lite)
    with pytest.raises(ValueError, match="exclusive"):
        cli(["train", "autoencoder", "--data", str(workdir / "train"), "--out", str(tmp_path / "x"),
             "--init", str(tmp_path / "motion.safetensors"),
             "--init-motion", str(tmp_path / "motion.safetensors")])  # fmt: skip


def test_synth_weight_trains_the_synthesis_branch_under_a_saturated_blend():
    """With the blend saturated on the warped reference the synthesis branch gets (almost) no gradient
    from the image loss; --synth-weight scores it on its own so it keeps learning."""
    from dystream_ros.train.autoencoder import AELoss

    model = build_model(tiny_config(), render=True, seed=0)
    dec = model.autoencoder.decoder
    with torch.no_grad():
        dec.flow.out.bias[3] = 30.0  # blend logit: sigmoid(30) == 1, the output is the warped reference
    g = torch.Generator().manual_seed(0)
    src, drv = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.rand(2, 3, 32, 32, generator=g) * 2 - 1

    def rgb_grad(synth_weight):
        loss_mod = AELoss(model.autoencoder, 8, 0.0, 0.0, synth_weight=synth_weight)
        model.zero_grad()
        loss, parts = loss_mod(src, drv, None)
        loss.backward()
        return dec.to_rgb.weight.grad.abs().sum().item(), parts

    off, parts_off = rgb_grad(0.0)
    on, parts_on = rgb_grad(1.0)
    assert "synth" not in parts_off and parts_on["synth"] > 0
    assert off < 1e-6 < on


def test_voice_augmentation_warps_the_spectrum_and_scales_the_gain():
    """``augment_mels``: off is the identity; the gain adds its drawn dB to every bin above the floor and
    leaves silence at the floor; the warp moves a tone's peak to the filter of ``f * alpha``; both draws
    per window and channel, from the training loop's generator."""
    from dystream_ros.config import AudioConfig, TrainConfig
    from dystream_ros.model.audio import LogMel, hz_to_mel, mel_centres
    from dystream_ros.train.generator import augment_mels

    cfg = AudioConfig()
    t = np.arange(cfg.sample_rate // 2) / cfg.sample_rate
    wave = np.stack([0.3 * np.sin(2 * np.pi * 1000.0 * t), np.zeros_like(t)]).astype(np.float32)
    with torch.no_grad():
        mel = LogMel(cfg)(torch.from_numpy(wave)).numpy()  # (2, n_mels, M): a 1 kHz tone, silence
    mels = np.stack([mel] * 4)  # 4 windows x (tone, silence)
    floor = np.log(LogMel.FLOOR) * LogMel.SCALE + LogMel.OFFSET

    assert augment_mels(mels, np.random.default_rng(0), cfg, 0.0, 0.0) is mels
    out = augment_mels(mels, np.random.default_rng(5), cfg, 0.0, 6.0)
    gain = np.random.default_rng(5).uniform(-6.0, 6.0, size=(8, 1, 1)).reshape(4, 2)
    loud = mels[:, 0] > floor + 2.0
    for w in range(4):
        shift = (out[w, 0] - mels[w, 0])[loud[w]]
        np.testing.assert_allclose(shift, LogMel.SCALE * np.log(10.0) * gain[w, 0] / 10.0, atol=1e-3)
    np.testing.assert_allclose(out[:, 1], floor, atol=1e-4)
    assert abs(gain[:, 0]).max() > 1.0  # the draws did move it

    out = augment_mels(mels, np.random.default_rng(7), cfg, 0.2, 0.0)
    alpha = np.random.default_rng(7).uniform(0.8, 1.2, size=8).reshape(4, 2)
    centres = hz_to_mel(mel_centres(cfg.n_mels, cfg.fmin, cfg.fmax))
    spacing = centres[1] - centres[0]
    peak = centres[out[:, 0].mean(axis=-1).argmax(axis=-1)]
    assert np.all(np.abs(peak - hz_to_mel(1000.0 * alpha[:, 0])) <= spacing)
    assert np.ptp(peak) > spacing  # the windows drew different warps
    np.testing.assert_allclose(out[:, 1], floor, atol=1e-4)
    with pytest.raises(ValueError, match="voice_warp"):
        TrainConfig(voice_warp=0.5)


def test_the_training_recipe_is_recorded_in_the_exported_config(workdir, latents, tmp_path):
    """--voice-augment and --history-noise land in the exported file's ``train`` section."""
    recipe = ("--voice-augment", "0.1", "3", "--history-noise", "0.7", "0.4")
    assert _gen(workdir, tmp_path / "gen", 2, *recipe) == 0
    train = load_checkpoint(tmp_path / "gen" / "model.safetensors", render=False).cfg.train
    assert (train.voice_warp, train.voice_gain_db) == (0.1, 3.0)
    assert (train.history_noise_p, train.history_noise_max) == (0.7, 0.4)
