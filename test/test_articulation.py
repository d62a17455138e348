"""The articulation motion space: config, articulation set, training/export, checkpoint checks, the
session's determinism and lookahead invariance, and the latent model's linear read-out.

Tiny models (a few thousand parameters) and a tiny synthetic corpus, so each test takes seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dystream_ros.cli import main as cli
from dystream_ros.config import ARTICULATION_DIM, ConfigError, ModelConfig, load_profile
from dystream_ros.data.face import ARTICULATION_FIELDS, PARAM_RANGES
from dystream_ros.model.articulation import Readout, load_readout, readout_path, save_readout
from dystream_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dystream_ros.model.dystream import build_model
from dystream_ros.train.articulation import (
    REFERENCE_ARTICULATION,
    articulation_config,
    build_articulation_model,
    build_articulation_set,
    fit_readout,
    readout_scores,
)
from dystream_ros.train.latents import LatentSet

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


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny corpus, its articulation sets and a tiny articulation model trained for a few steps."""
    from dystream_ros.data.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("artic")
    synthesize_dataset(root / "train", 2, seed=0, split="train", duration_s=6.0, progress=False)
    synthesize_dataset(root / "heldout", 1, seed=0, split="heldout", duration_s=6.0, progress=False)
    tiny = root / "tiny.safetensors"
    save_checkpoint(build_model(load_profile("lite", **TINY), seed=0), tiny)
    assert cli(["train", "articulation-set", "--data", str(root / "train"), "--out", str(root / "art_train"),
                "--profile", str(tiny)]) == 0
    assert cli(["train", "articulation-set", "--data", str(root / "heldout"), "--out",
                str(root / "art_heldout"), "--stats-from", str(root / "art_train"),
                "--profile", str(tiny)]) == 0
    args = ["train", "generator", "--latents", str(root / "art_train"),
            "--val-latents", str(root / "art_heldout"), "--out", str(root / "gen"), "--profile", str(tiny),
            "--steps", "6", "--batch", "2", "--frames", "24",
            "--warmup", "2", "--lr", "3e-3", "--val-windows", "2", "--val-every", "3", "--save-every", "3",
            "--log-every", "1", "--threads", "1", "--device", "cpu"]
    assert cli(args) == 0
    return root


# -- config -------------------------------------------------------------------------------------------


def test_config_motion_field():
    assert ARTICULATION_DIM == len(ARTICULATION_FIELDS)
    cfg = articulation_config("lite")
    assert cfg.motion == "articulation" and cfg.latent_dim == ARTICULATION_DIM
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    # the same encoder / generator / head sizes as the latent profile
    lite = load_profile("lite")
    assert (cfg.audio, cfg.generator, cfg.head) == (lite.audio, lite.generator, lite.head)
    # a config written before the field existed is a latent model
    d = lite.to_dict()
    del d["motion"]
    assert ModelConfig.from_dict(d).motion == "latent"
    with pytest.raises(ConfigError, match="ModelConfig.motion"):
        lite.replace(motion="pixels")
    with pytest.raises(ConfigError, match="ModelConfig.latent_dim"):
        lite.replace(motion="articulation")  # latent_dim 64
    with pytest.raises(ValueError, match="render=False"):
        build_model(cfg, render=True)


# -- the articulation set ------------------------------------------------------------------------------


def test_articulation_set_is_standardised_ground_truth(work):
    tr, ho = LatentSet(work / "art_train"), LatentSet(work / "art_heldout")
    norm = tr.index["normalisation"]
    mean, std = np.array(norm["mean"], np.float32), np.array(norm["std"], np.float32)
    for z, p in zip(tr.latents, tr.params, strict=True):
        assert z.shape == (len(p), ARTICULATION_DIM)
        np.testing.assert_allclose(z * std + mean, p, atol=1e-5)
    allz = np.concatenate(tr.latents)
    np.testing.assert_allclose(allz.mean(0), 0.0, atol=1e-4)
    # standardised where the column moves (std above the floor), untouched scale otherwise
    moving = std > 1e-3
    np.testing.assert_allclose(allz.std(0)[moving], 1.0, atol=1e-3)
    np.testing.assert_allclose(tr.refs[0] * std + mean, REFERENCE_ARTICULATION.to_array(), atol=1e-6)
    # the held-out set is standardised with the training statistics: same fingerprint
    assert ho.fingerprint == tr.fingerprint and ho.index["normalisation"]["mean"] == norm["mean"]
    # with its own statistics it would be a different space, refused by the trainer's check
    other = build_articulation_set(work / "heldout", work / "art_other", progress=False)
    assert other["motion_fingerprint"] != tr.fingerprint
    # mels are the extraction's: a frame range is a slice (same length rule as `train extract`)
    e = tr.index["conversations"][0]
    assert tr.mels[0].shape[-1] == e["mel_frames"]

def test_sets_of_one_standardisation_combine(work, tmp_path):
    """--latents A B: the conversations of both, in order; sets standardised differently are refused."""
    tr, ho = LatentSet(work / "art_train"), LatentSet(work / "art_heldout")
    both = LatentSet([work / "art_train", work / "art_heldout"])
    assert len(both) == len(tr) + len(ho) == 3
    assert both.names == [f"art_train/{n}" for n in tr.names] + [f"art_heldout/{n}" for n in ho.names]
    assert all(np.array_equal(a, b) for a, b in zip(both.latents, tr.latents + ho.latents, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(both.mels, tr.mels + ho.mels, strict=True))
    assert len(both.params) == 3 and both.fingerprint == tr.fingerprint
    assert both.index["conversations"] == tr.index["conversations"] + ho.index["conversations"]
    assert len(LatentSet([work / "art_train", work / "art_heldout"], max_conversations=2)) == 2
    build_articulation_set(work / "heldout", tmp_path / "own_stats", profile=work / "tiny.safetensors",
                           progress=False)
    with pytest.raises(ValueError, match="'motion_fingerprint' differs"):
        LatentSet([work / "art_train", tmp_path / "own_stats"])
    # the trainer takes both
    assert cli(["train", "generator", "--latents", str(work / "art_train"), str(work / "art_heldout"),
                "--out", str(tmp_path / "gen2"), "--profile", str(work / "tiny.safetensors"), "--steps", "1",
                "--batch", "2", "--frames", "24", "--warmup", "1", "--threads", "1", "--device", "cpu"]) == 0
    assert (tmp_path / "gen2" / "model.safetensors").is_file()



# -- training, export and the checkpoint ---------------------------------------------------------------


def test_trained_checkpoint_holds_the_space_and_loads_strictly(work):
    path = work / "gen" / "model.safetensors"
    log = [json.loads(line) for line in (work / "gen" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["event"] == "val"] == [3, 6]
    model = load_checkpoint(path, render=False)
    assert model.cfg.motion == "articulation" and not model.render
    norm = LatentSet(work / "art_train").index["normalisation"]
    np.testing.assert_allclose(model.articulation.mean.numpy(), norm["mean"], rtol=1e-6)
    np.testing.assert_allclose(model.articulation.std.numpy(), norm["std"], rtol=1e-6)
    # head-pose directions: unit rows on yaw, pitch, roll
    hb = model.head_basis.numpy()
    for i, n in enumerate(("head_yaw", "head_pitch", "head_roll")):
        assert hb[i, ARTICULATION_FIELDS.index(n)] == 1.0 and hb[i].sum() == 1.0
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in names}
    assert {"autoencoder.motion.mean", "autoencoder.motion.std", "autoencoder.motion.reference"} <= names
    assert not any(k.startswith(("autoencoder.appearance", "autoencoder.decoder")) for k in names)
    assert meta["motion"] == "articulation" and meta["render"] == "false"
    with pytest.raises(CheckpointError, match="render=False"):
        load_checkpoint(path, render=True)
    # a mis-shaped or missing standardisation tensor fails loudly, naming it
    bad = dict(tensors)
    bad["autoencoder.motion.std"] = torch.ones(12)
    save_file(bad, str(work / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="autoencoder.motion.std"):
        load_checkpoint(work / "bad.safetensors", render=False)
    del bad["autoencoder.motion.std"]
    save_file(bad, str(work / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="missing tensor.*autoencoder.motion.std"):
        load_checkpoint(work / "bad.safetensors", render=False)


def test_training_moves_the_weights_and_resume_export_is_the_same(work):
    idx = LatentSet(work / "art_train").index
    fresh = build_articulation_model(idx, work / "tiny.safetensors", seed=0)
    trained = load_checkpoint(work / "gen" / "model.safetensors", render=False)
    moved = [
        not torch.equal(a, b)
        for (n, a), (_, b) in zip(fresh.state_dict().items(), trained.state_dict().items(), strict=True)
        if n.startswith(("generator.", "head."))
    ]
    assert any(moved)
    # --export-only from the state file writes the same tensors
    import shutil

    shutil.copytree(work / "gen", work / "gen_exp")
    assert cli(["train", "generator", "--latents", str(work / "art_train"), "--out", str(work / "gen_exp"),
                "--profile", str(work / "tiny.safetensors"), "--steps", "6", "--resume",
                "--export-only"]) == 0
    a = load_checkpoint(work / "gen" / "model.safetensors", render=False).state_dict()
    b = load_checkpoint(work / "gen_exp" / "model.safetensors", render=False).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_fine_tunes_from_a_checkpoint_and_refuses_another_space(work, tmp_path):
    """--init starts from the checkpoint's weights (step 0, a fresh schedule), not from the seed."""
    base = ["train", "generator", "--latents", str(work / "art_train"), "--profile",
            str(work / "tiny.safetensors"), "--batch", "2", "--frames", "24", "--warmup", "1",
            "--log-every", "1", "--threads", "1", "--device", "cpu"]
    src = work / "gen" / "model.safetensors"
    # zero steps: the export is exactly the checkpoint's networks
    assert cli(base + ["--out", str(tmp_path / "i0"), "--steps", "0", "--init", str(src),
                       "--export-only"]) == 0
    a = load_checkpoint(src, render=False).state_dict()
    b = load_checkpoint(tmp_path / "i0" / "model.safetensors", render=False).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # two steps from there move the weights, and the log starts at step 0
    assert cli(base + ["--out", str(tmp_path / "i2"), "--steps", "2", "--lr", "3e-3",
                       "--init", str(src)]) == 0
    c = load_checkpoint(tmp_path / "i2" / "model.safetensors", render=False).state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a if k.startswith("generator."))
    log = [json.loads(line) for line in (tmp_path / "i2" / "log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and log[0]["step"] == 0
    # a checkpoint of other sizes, or with another standardisation, is refused by name
    other = build_articulation_model(LatentSet(work / "art_train").index, "lite", seed=0)
    save_checkpoint(other, tmp_path / "lite_sizes.safetensors", extra={"motion": "articulation"})
    with pytest.raises(ValueError, match="sizes"):
        cli(base + ["--out", str(tmp_path / "x"), "--steps", "1", "--init",
                                    str(tmp_path / "lite_sizes.safetensors")])
    moved = load_checkpoint(src, render=False)
    with torch.no_grad():
        moved.articulation.mean.add_(1.0)
    save_checkpoint(moved, tmp_path / "other_stats.safetensors", extra={"motion": "articulation"})
    with pytest.raises(ValueError, match="standardisation"):
        cli(base + ["--out", str(tmp_path / "y"), "--steps", "1", "--init",
                                    str(tmp_path / "other_stats.safetensors")])


def test_history_noise_and_anchor_options_train_and_are_recorded(work, tmp_path):
    """--history-noise replaces the recipe's noisy history (the exported config says so); --anchor
    reference trains; an out-of-range noise is refused with TrainConfig's message."""
    base = ["train", "generator", "--latents", str(work / "art_train"), "--profile",
            str(work / "tiny.safetensors"), "--batch", "2", "--frames", "24", "--warmup", "1",
            "--log-every", "1", "--threads", "1", "--device", "cpu", "--steps", "2"]
    assert cli(base + ["--out", str(tmp_path / "n"), "--history-noise", "0.9", "0.8",
                       "--anchor", "reference"]) == 0
    cfg = load_checkpoint(tmp_path / "n" / "model.safetensors", render=False).cfg.train
    assert (cfg.history_noise_p, cfg.history_noise_max) == (0.9, 0.8)
    default = load_checkpoint(work / "gen" / "model.safetensors", render=False).cfg.train
    assert (default.history_noise_p, default.history_noise_max) == (0.5, 0.5)
    with pytest.raises(ValueError, match="history_noise_max"):
        cli(base + ["--out", str(tmp_path / "bad"), "--history-noise", "0.5", "1.5"])


def test_loss_weight_weighs_the_columns_and_is_recorded(work, tmp_path):
    """--loss-weight FIELD=W: the velocity loss is the column-weighted MSE (weights scaled to mean 1; all
    equal = the plain loss), recorded in the exported config; unknown fields, bad numbers and a latent
    model are refused."""
    from dystream_ros.model.training import flow_matching_loss
    from dystream_ros.train.generator import column_weights

    cfg = load_checkpoint(work / "gen" / "model.safetensors", render=False).cfg  # an articulation model
    model = build_model(cfg, render=False, seed=0)
    feats = torch.randn(2, 6, 2, cfg.audio.feature_dim)
    motion = torch.randn(2, 7, cfg.latent_dim)

    def loss(weights):
        c = cfg.replace(train={"loss_weight": weights})
        with torch.no_grad():
            return flow_matching_loss(c, model.generator, model.head, feats, motion,
                                      torch.Generator().manual_seed(3))[0]

    w = column_weights(["jaw_open=4", "lip_close=2.5"], cfg)
    assert w[ARTICULATION_FIELDS.index("jaw_open")] == 4.0 and w.count(1.0) == len(ARTICULATION_FIELDS) - 2
    plain = loss(())
    torch.testing.assert_close(loss((3.0,) * cfg.latent_dim), plain)
    # each column's share of the plain loss, from the same draws: (almost) all weight on that column
    per_col = []
    for col in range(cfg.latent_dim):
        one_hot = tuple(1e-9 if i != col else 1.0 for i in range(cfg.latent_dim))
        per_col.append(loss(one_hot) * sum(one_hot) / cfg.latent_dim)  # its mean squared error / D
    wt = torch.tensor(w) / torch.tensor(w).mean()
    expect = sum(wt[c] * per_col[c] for c in range(cfg.latent_dim))
    torch.testing.assert_close(loss(w), expect, rtol=1e-4, atol=1e-6)
    assert not torch.isclose(loss(w), plain)

    base = ["train", "generator", "--latents", str(work / "art_train"), "--profile",
            str(work / "tiny.safetensors"), "--batch", "2", "--frames", "24", "--warmup", "1",
            "--log-every", "1", "--threads", "1", "--device", "cpu", "--steps", "2"]
    assert cli(base + ["--out", str(tmp_path / "w"), "--loss-weight", "jaw_open=4", "lip_close=2.5"]) == 0
    assert load_checkpoint(tmp_path / "w" / "model.safetensors", render=False).cfg.train.loss_weight == w
    with pytest.raises(ValueError, match="FIELD=W"):
        column_weights(["mouth=3"], cfg)
    with pytest.raises(ValueError, match="must be a number"):
        column_weights(["jaw_open=lots"], cfg)
    with pytest.raises(ConfigError, match="loss_weight"):
        cfg.replace(train={"loss_weight": column_weights(["jaw_open=-1"], cfg)})
    with pytest.raises(ValueError, match="articulation"):
        column_weights(["jaw_open=3"], load_profile("lite"))


# -- the session: determinism and lookahead invariance ------------------------------------------------


def _audio(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    env = (np.sin(2 * np.pi * 3.0 * t) > 0).astype(np.float32)
    spk = (0.3 * env * np.sin(2 * np.pi * 180 * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)
    lis = (0.02 * rng.standard_normal(n)).astype(np.float32)
    return spk, lis


def _stream(pipe, spk, lis, frames: int, seed: int = 0, chunk: int | None = None) -> np.ndarray:
    sess = pipe.start_session(pipe.default_reference(), seed=seed)
    out = []
    if chunk is None:
        sess.push_audio(spk, lis)
    else:
        for i in range(0, len(spk), chunk):
            sess.push_audio(spk[i : i + chunk], lis[i : i + chunk])
            while (fr := sess.step()) is not None:
                out.append(fr.latent)
    while (fr := sess.step()) is not None:
        out.append(fr.latent)
    return np.stack(out)[:frames]


@pytest.fixture(scope="module")
def pipe(work):
    from dystream_ros.runtime.session import load_pipeline

    return load_pipeline(checkpoint=work / "gen" / "model.safetensors", render=False, backend="torch")


def test_session_frames_are_the_articulation_and_deterministic(pipe):
    assert pipe.config.motion == "articulation" and not pipe.render and pipe.latent_dim == ARTICULATION_DIM
    spk, lis = _audio(16000 * 2, 0)
    a = _stream(pipe, spk, lis, 40, seed=3)
    assert a.shape == (40, ARTICULATION_DIM) and np.isfinite(a).all()
    sess = pipe.start_session(pipe.default_reference(), seed=3)
    sess.push_audio(spk, lis)
    fr = sess.step()
    assert fr.image is None and fr.latent.shape == (ARTICULATION_DIM,)
    # m0 is the standardised rest pose, whatever the image
    ro = Readout.of_model(pipe.model)
    np.testing.assert_allclose(ro(sess.reference_motion), REFERENCE_ARTICULATION.to_array(), atol=1e-5)
    # same seed, same audio: identical, however the audio is chunked
    np.testing.assert_array_equal(a, _stream(pipe, spk, lis, 40, seed=3))
    np.testing.assert_array_equal(a, _stream(pipe, spk, lis, 40, seed=3, chunk=777))
    # another seed samples other motion
    assert np.abs(a - _stream(pipe, spk, lis, 40, seed=4)).max() > 1e-3


def test_session_lookahead_invariance(pipe):
    """Frame n depends on audio up to 40(n+1) + 60 ms only: changing later audio leaves frames 0..n
    bit-identical, changing audio inside the lookahead changes frame n."""
    a = pipe.config.audio
    spk, lis = _audio(16000 * 2, 1)
    base = _stream(pipe, spk, lis, 40)
    n = 20
    cut = (n + 1) * a.samples_per_frame + a.lookahead_samples  # first sample frame n must not see
    rng = np.random.default_rng(9)
    spk2, lis2 = spk.copy(), lis.copy()
    spk2[cut:] = rng.standard_normal(len(spk) - cut).astype(np.float32)
    lis2[cut:] = rng.standard_normal(len(lis) - cut).astype(np.float32)
    alt = _stream(pipe, spk2, lis2, 40)
    np.testing.assert_array_equal(base[: n + 1], alt[: n + 1])
    assert np.abs(base[n + 1 :] - alt[n + 1 :]).max() > 0
    # the last 40 ms frame n reads (inside its lookahead, after what frame n - 1 reads): frame n changes
    spk3 = spk.copy()
    spk3[cut - a.samples_per_frame : cut] = rng.standard_normal(a.samples_per_frame).astype(np.float32)
    alt3 = _stream(pipe, spk3, lis, 40)
    np.testing.assert_array_equal(base[:n], alt3[:n])
    assert np.abs(base[n] - alt3[n]).max() > 0


# -- the read-out --------------------------------------------------------------------------------------


def test_fit_readout_recovers_an_affine_map_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    d = 8
    w = rng.standard_normal((ARTICULATION_DIM, d)).astype(np.float32)
    b = rng.standard_normal(ARTICULATION_DIM).astype(np.float32)
    lats = [rng.standard_normal((300, d)).astype(np.float32) for _ in range(3)]
    pars = [x @ w.T + b for x in lats]
    ro = fit_readout(lats, pars)
    np.testing.assert_allclose(ro.weight, w, atol=1e-4)
    np.testing.assert_allclose(ro.bias, b, atol=1e-4)
    sc = readout_scores(ro, lats, pars)
    assert all(v["r2"] > 0.9999 for v in sc.values())
    # noise lowers the score: it measures something
    noisy = [p + rng.standard_normal(p.shape).astype(np.float32) * 3 for p in pars]
    assert min(v["r2"] for v in readout_scores(fit_readout(lats, noisy), lats, noisy).values()) < 0.9
    path = save_readout(ro, readout_path(tmp_path / "m.safetensors"))
    assert path.name == "m.readout.safetensors"
    back = load_readout(path, d)
    np.testing.assert_array_equal(back.weight, ro.weight)
    z = lats[0][:5]
    np.testing.assert_allclose(back(z), z @ w.T + b, atol=1e-3)
    with pytest.raises(ValueError, match="needs"):
        load_readout(path, d + 1)
    with pytest.raises(ValueError, match="latents"):
        back(np.zeros((2, d + 1), np.float32))
    save_file({"weight": torch.zeros(ARTICULATION_DIM, d), "b": torch.zeros(ARTICULATION_DIM)},
              str(tmp_path / "x.safetensors"), metadata={"format": "dystream_ros-readout/1",
                                                          "fields": json.dumps(list(ARTICULATION_FIELDS))})
    with pytest.raises(ValueError, match="tensors"):
        load_readout(tmp_path / "x.safetensors", d)
    reversed_fields = json.dumps(list(ARTICULATION_FIELDS)[::-1])
    save_file({"weight": torch.zeros(ARTICULATION_DIM, d), "bias": torch.zeros(ARTICULATION_DIM)},
              str(tmp_path / "y.safetensors"), metadata={"format": "dystream_ros-readout/1",
                                                          "fields": reversed_fields})
    with pytest.raises(ValueError, match="fields"):
        load_readout(tmp_path / "y.safetensors", d)


def test_model_readout_is_the_destandardisation(pipe):
    sp = pipe.model.articulation
    ro = Readout.of_model(pipe.model)
    z = np.random.default_rng(0).standard_normal((4, ARTICULATION_DIM)).astype(np.float32)
    np.testing.assert_allclose(ro(z), sp.to_articulation(z), atol=1e-6)
    np.testing.assert_allclose(sp.from_articulation(sp.to_articulation(z)), z, atol=1e-5)
    assert ro.fields == ARTICULATION_FIELDS and set(ro.fields) == set(PARAM_RANGES)


def test_evaluate_articulation_runs_the_reader(work, tmp_path):
    from dystream_ros.train.evaluate import evaluate_articulation

    r = evaluate_articulation(work / "gen" / "model.safetensors", work / "heldout", tmp_path, conversations=1,
                              max_frames=60, backend="torch", progress=False)
    assert r["motion"] == "articulation" and r["frames"] == 60
    assert set(r["articulation_vs_ground_truth"]) == set(ARTICULATION_FIELDS)
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "frames.png").is_file()
    assert r["per_conversation"][0]["face_found"] > 0.9  # the reader finds the rendered face
    assert set(r["articulation_listener"]) == {"generated", "ground_truth"}
    assert len(r["mouth_without_reader"]["per_conversation"]) == 1


def test_articulation_listener_measures_the_head_pitch_column(work):
    """The no-reader listening figure: head pitch's motion by state, the generated against the truth."""
    from dystream_ros.data.dataset import iter_dataset
    from dystream_ros.eval.lipsync import listener_behaviour
    from dystream_ros.train.evaluate import articulation_listener

    conv = next(iter_dataset(work / "heldout"))
    gt = conv.params.astype(np.float64)
    convs = [{"speaker": conv.speaker, "listener": conv.listener}]
    pitch = ARTICULATION_FIELDS.index("head_pitch")
    still = gt.copy()
    still[:, pitch] = 0.1  # a head that never moves; every other column as the truth
    r = articulation_listener([still], [gt], convs)
    want = listener_behaviour(gt[:, pitch], conv.speaker, conv.listener)
    np.testing.assert_equal(r["ground_truth"]["motion"], want["motion"])  # NaN where a state has no frames
    np.testing.assert_equal(r["ground_truth"]["listen_vs_silence"], want["listen_vs_silence"])
    assert np.isfinite(want["motion"]["other"]) and np.isfinite(want["motion"]["silence"])
    assert all(v == 0.0 or np.isnan(v) for v in r["generated"]["motion"].values())
    moved = gt.copy()
    moved[:, pitch] *= 2.0  # twice the motion everywhere: twice each state's motion, the same ratio
    m = articulation_listener([moved], [gt], convs)["generated"]
    for k, v in want["motion"].items():
        assert np.isnan(v) or m["motion"][k] == pytest.approx(2 * v)


def test_mouth_without_reader_splits_the_mouth_figure_at_the_renderer():
    """The model's own mouth against the truth, and the reader against what was rendered: a perfect model
    scores 1 on the first, a reader that reads exactly the rendered opening 1 on the second, and noise
    added on either side lowers that side only."""
    from scipy.ndimage import gaussian_filter1d

    from dystream_ros.eval.lipsync import gt_columns, gt_mouth
    from dystream_ros.train.evaluate import mouth_without_reader

    rng = np.random.default_rng(0)
    jaw, close = ARTICULATION_FIELDS.index("jaw_open"), ARTICULATION_FIELDS.index("lip_close")
    gt = np.zeros((500, len(ARTICULATION_FIELDS)))  # 20 s of syllable-rate jaw motion, some closures
    gt[:, jaw] = np.clip(gaussian_filter1d(rng.normal(0.0, 1.0, 500), 2.0) * 0.6 + 0.2, 0.0, 1.0)
    gt[:, close] = (rng.random(500) < 0.1).astype(float)
    truth = gt_mouth(gt_columns(gt))
    exact = mouth_without_reader([gt], [gt], [truth])
    assert exact["articulation"] == pytest.approx(1.0) and exact["reader"] == pytest.approx(1.0)
    noisy_read = truth + rng.normal(0.0, truth.std(), truth.shape)
    r = mouth_without_reader([gt], [gt], [noisy_read])
    assert r["articulation"] == pytest.approx(1.0) and r["reader"] < 0.95
    wrong = gt.copy()
    wrong[:, jaw] = rng.permutation(wrong[:, jaw])  # a model whose jaw ignores the speech
    w = mouth_without_reader([wrong], [gt], [gt_mouth(gt_columns(wrong))])
    assert w["articulation"] < 0.5 and w["reader"] == pytest.approx(1.0)
    assert w["per_conversation"] == [{"articulation": w["articulation"], "reader": w["reader"]}]
    still = mouth_without_reader([np.zeros_like(gt)], [gt], [truth])  # a shut mouth: nothing to correlate
    assert still["articulation"] is None


def test_evaluate_with_several_sampler_seeds(work, tmp_path):
    """``train evaluate --seeds 2``: one evaluation per seed (each its own eval.json, seeded as asked) and
    seeds.json with each seed's headline figures and their mean."""
    import json

    ck = work / "gen" / "model.safetensors"
    assert cli(["train", "evaluate", "--data", str(work / "heldout"), "--checkpoint", str(ck), "--out",
                str(tmp_path), "--conversations", "1", "--backend", "torch", "--seed", "3",
                "--seeds", "2"]) == 0  # fmt: skip
    runs = {sd: json.loads((tmp_path / f"seed_{sd}" / "eval.json").read_text()) for sd in (3, 4)}
    assert [r["seed"] for r in runs.values()] == [3, 4]
    rep = json.loads((tmp_path / "seeds.json").read_text())
    assert rep["seeds"] == [3, 4]
    ratio = [r["pooled"]["listen_vs_silence"] for r in runs.values()]
    assert [rep["per_seed"][str(sd)]["listen_vs_silence_pooled"] for sd in (3, 4)] == ratio
    assert ratio[0] != ratio[1]  # the sampler's seed moves it
    over = rep["over_seeds"]["listen_vs_silence_pooled"]
    assert over == pytest.approx({"mean": np.mean(ratio), "min": min(ratio), "max": max(ratio)})
    # a figure a 6-s conversation cannot give (the mouth's band-passed correlation) is None, not 0
    mouth = [r["summary"]["gt_mouth_correlation_best"]["mean"] for r in runs.values()]
    assert [rep["per_seed"][str(sd)]["mouth_correlation_mean"] for sd in (3, 4)] == mouth
    known = [m for m in mouth if m is not None]
    got = rep["over_seeds"]["mouth_correlation_mean"]
    assert got is None if not known else got["mean"] == pytest.approx(np.mean(known))
    with pytest.raises(SystemExit, match="--seeds must be at least 1"):
        cli(["train", "evaluate", "--data", str(work / "heldout"), "--checkpoint", str(ck), "--out",
             str(tmp_path / "x"), "--seeds", "0"])  # fmt: skip


def test_readout_command_fits_the_latent_model(work, tmp_path):
    """``train readout`` on an extracted latent set: side file next to the checkpoint, scores on the
    held-out set, a refusal for latents of another motion encoder."""
    tiny = work / "tiny.safetensors"
    assert cli(["train", "extract", "--data", str(work / "train"), "--checkpoint", str(tiny),
                "--out", str(tmp_path / "lat")]) == 0
    assert cli(["train", "extract", "--data", str(work / "heldout"), "--checkpoint", str(tiny),
                "--out", str(tmp_path / "lat_ho")]) == 0
    ck = tmp_path / "lat" / "autoencoder.safetensors"
    assert cli(["train", "readout", "--latents", str(tmp_path / "lat"), "--checkpoint", str(ck),
                "--val-latents", str(tmp_path / "lat_ho"), "--scores", str(tmp_path / "s.json")]) == 0
    ro = load_readout(readout_path(ck), 8)
    lat = LatentSet(tmp_path / "lat")
    ref = fit_readout(lat.latents, lat.params)
    np.testing.assert_allclose(ro.weight, ref.weight, rtol=1e-5, atol=1e-6)
    scores = json.loads((tmp_path / "s.json").read_text())
    assert set(scores) == {"train", "heldout"} and set(scores["heldout"]) == set(ARTICULATION_FIELDS)
    # the least-squares fit is at least as good as the intercept alone on its own training frames
    assert all(v["r2"] >= -1e-6 for v in scores["train"].values() if v["r2"] == v["r2"])
    # the same fit from every 3rd frame rendered straight from the corpus (no extraction)
    side = tmp_path / "sampled.readout.safetensors"
    assert cli(["train", "readout", "--data", str(work / "train"), "--every", "3", "--checkpoint", str(ck),
                "--out", str(side)]) == 0
    sampled = load_readout(side, 8)
    sub = fit_readout([x[::3] for x in lat.latents], [p[::3] for p in lat.params])
    np.testing.assert_allclose(sampled.weight, sub.weight, rtol=1e-4, atol=1e-5)
    other = tmp_path / "other.safetensors"
    save_checkpoint(build_model(load_profile("lite", **TINY), seed=1), other)
    with pytest.raises(ValueError, match="motion encoder"):
        cli(["train", "readout", "--latents", str(tmp_path / "lat"), "--checkpoint", str(other)])
    with pytest.raises(ValueError, match="articulation model"):
        cli(["train", "readout", "--latents", str(tmp_path / "lat"),
             "--checkpoint", str(work / "gen" / "model.safetensors")])
