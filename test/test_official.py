"""The official-model package without the released code: converter round trip and strictness on synthetic
checkpoints in the released on-disk layout (made from our own modules), the GPT's KV ring against its
whole-sequence definition, and the two inference modes (release == the offline procedure; streaming's
lookahead and chunking invariance; release vs streaming on a short clip). Small configs (official.tiny)."""

from __future__ import annotations

import collections
import copy
import pickle

import numpy as np
import pytest
import torch

from dystream_ros.official.config import OfficialConfig, tiny
from dystream_ros.official.convert import Entry, convert, load_lightning, released_generator_layout
from dystream_ros.official.gpt import causal_mask
from dystream_ros.official.infer import Engine, offline
from dystream_ros.official.model import OfficialCheckpointError, OfficialModel, load_official
from dystream_ros.official.parity import run_groups
from dystream_ros.official.pipeline import OfficialPipeline, load

torch.set_num_threads(1)
SN = ("conv_0", "conv_1", "conv_s")


def _cfg(**streaming) -> OfficialConfig:
    return tiny(streaming=streaming) if streaming else tiny()


def _model(cfg: OfficialConfig, seed: int = 0) -> OfficialModel:
    torch.manual_seed(seed)
    m = OfficialModel(cfg).eval()
    with torch.no_grad():  # informative values everywhere (LayerNorm weights, biases, BN statistics)
        for k, t in m.state_dict().items():
            if t.dtype.is_floating_point and ("norm" in k or k.endswith("bias")):
                t.add_(0.1 * torch.randn_like(t))
            if k.endswith("running_var"):
                t.abs_().add_(0.5)
    return m


def _released(model: OfficialModel) -> tuple[dict, dict]:
    """(generator, autoencoder) Lightning dicts in the released layout whose EMA weights are ``model``'s."""
    cfg = model.cfg
    ours = model.state_dict()
    g = torch.Generator().manual_seed(1)
    sd, shadow = collections.OrderedDict(), []
    for e in released_generator_layout(cfg):
        if e.buffer:
            src = {"cos_angles": model.gpt.cos, "sin_angles": model.gpt.sin}.get(e.name.split(".")[-1])
            t = src.clone() if src is not None else model.gpt.pe[None].clone()
        elif e.ours is None:
            t = torch.randn(e.shape, generator=g)
        elif e.rows is not None:
            t = torch.randn(e.shape, generator=g)
            t[e.rows[0] : e.rows[1]] = ours[e.ours]
        else:
            t = ours[e.ours].clone()
        if not e.buffer:
            shadow.append(t)
            t = t + 0.05 * torch.randn(t.shape, generator=g)  # raw weights differ from the EMA ones
        sd[f"model.{e.name}"] = t
    gen = {
        "epoch": 0,
        "global_step": 1,
        "state_dict": sd,
        "optimizer_states": [],
        "lr_schedulers": [],
        "ema_state": {"decay": 0.999, "num_updates": 1, "shadow_params": shadow, "collected_params": None},
    }
    ae_sd = collections.OrderedDict()
    for k, t in ours.items():
        if not k.startswith("ae."):
            continue
        k = k[3:]
        if k.rsplit(".", 2)[-2] in SN and k.endswith(".weight") and "face_generator" in k:
            p = k[: -len(".weight")]
            w = t.reshape(t.shape[0], -1)
            v = torch.randn(w.shape[1], generator=g)
            wv = w @ v
            ae_sd[f"{p}.weight_orig"] = t * 3.0
            ae_sd[f"{p}.weight_u"] = wv / wv.dot(wv)  # sigma = u . (W_orig v) = 3 -> folded == ours
            ae_sd[f"{p}.weight_v"] = v
        else:
            ae_sd[k] = t.clone()
    for i in range(1, len(cfg.autoencoder.motion_channels)):
        for part in ("conv2", "skip"):
            kernel = model.ae.motion_encoder.convs[i].skip[0].kernel
            ae_sd[f"motion_encoder.convs.{i}.{part}.0.kernel"] = kernel
    V = cfg.autoencoder.warp_channels[0]
    ae_sd["face_generator.warp_layer.weight"] = torch.randn(V, V, 1, 1, generator=g)
    ae_sd["discriminator.convs.0.weight"] = torch.randn(4, 3, 3, 3, generator=g)  # training only: ignored
    ae = {"epoch": 0, "global_step": 1, "state_dict": ae_sd, "optimizer_states": [], "lr_schedulers": []}
    return gen, ae


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("official")
    model = _model(_cfg())
    gen, ae = _released(model)
    torch.save(gen, d / "last.ckpt")
    torch.save(ae, d / "ae.ckpt")
    return model, d, gen, ae


def _inputs(cfg: OfficialConfig, seconds: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(seconds * cfg.sample_rate)
    t = np.arange(n) / cfg.sample_rate
    wave = (0.3 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    D, S = cfg.latent_dim, cfg.autoencoder.image_size
    R = cfg.gpt.history
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {
        "audio.self_wave": wave + 0.01 * f(n),
        "audio.other_wave": 0.05 * f(n),
        "head.noisy": f(3, 1, D),
        "head.cond": f(3, 1, D),
        "head.t": np.array([1000, 750, 1]),
        "step.feat_self": f(1, R + 2, cfg.audio.hidden),
        "step.feat_other": f(1, R + 2, cfg.audio.hidden),
        "step.history": f(1, R, D),
        "step.anchor": f(1, 1, D),
        "step.noise": f(1, 1, D),
        "e2e.m0": f(1, D),
        "e2e.noise": f(3, 1, D),
        "ae.image": np.tanh(f(1, 3, S, S)),
        "ae.image256": np.tanh(f(1, 3, S // 2, S // 2)),
        "ae.flow_ref": f(2, D),
        "ae.flow_tgt": f(2, D),
        "ae.gen_ref": f(1, D),
        "ae.gen_tgt": f(1, D),
    }


# ------------------------------------------------------------------------------------------ converter
def test_round_trip_from_released_layout(tiny_files, tmp_path):
    model, d, _, _ = tiny_files
    report = convert(d / "last.ckpt", d / "ae.ckpt", tmp_path / "o.safetensors", cfg=model.cfg)
    loaded = load_official(tmp_path / "o.safetensors")
    for k, v in model.state_dict().items():  # the EMA weights, spectral norm folded to our weights
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=1e-6, atol=1e-6, msg=k)
    groups = ["audio", "head", "step", "e2e", "ae"]
    inputs = _inputs(model.cfg)
    a, b = run_groups(model, inputs, groups), run_groups(loaded, inputs, groups)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert report.weightnorm_naming == "parametrizations"
    dropped = " ".join(report.dropped)
    for part in ("cross_attn_rope", "norm2", "past_proj", "warp_layer", "q/k rows"):
        assert part in dropped
    assert report.ignored_keys == 1  # the discriminator tensor


def _convert_fails(tmp_path, cfg, gen=None, ae=None, base=None):
    g, a = base
    torch.save(gen if gen is not None else g, tmp_path / "g.ckpt")
    torch.save(ae if ae is not None else a, tmp_path / "a.ckpt")
    with pytest.raises(OfficialCheckpointError) as e:
        convert(tmp_path / "g.ckpt", tmp_path / "a.ckpt", tmp_path / "o.safetensors", cfg=cfg)
    assert not (tmp_path / "o.safetensors").exists()
    return str(e.value)


def test_missing_tensor_with_intact_ema_is_named(tiny_files, tmp_path):
    model, _, gen, ae = tiny_files
    g = copy.copy(gen)
    g["state_dict"] = collections.OrderedDict(gen["state_dict"])
    del g["state_dict"]["model.blocks.1.mlp.fc2.weight"]
    msg = _convert_fails(tmp_path, model.cfg, gen=g, base=(gen, ae))
    assert "blocks.1.mlp.fc2.weight" in msg


def test_short_ema_list_fails(tiny_files, tmp_path):
    model, _, gen, ae = tiny_files
    g = copy.copy(gen)
    g["ema_state"] = dict(gen["ema_state"], shadow_params=gen["ema_state"]["shadow_params"][:-1])
    assert "shadow_params" in _convert_fails(tmp_path, model.cfg, gen=g, base=(gen, ae))


def test_wrong_shape_in_state_dict_and_ema_is_named(tiny_files, tmp_path):
    model, _, gen, ae = tiny_files
    key = "diffusion_head.blocks.1.adaLN_modulation2.1.weight"
    params = [e.name for e in released_generator_layout(model.cfg) if not e.buffer]
    i = params.index(key)
    g = copy.copy(gen)
    g["state_dict"] = collections.OrderedDict(gen["state_dict"])
    g["state_dict"]["model." + key] = gen["state_dict"]["model." + key][:, :-1].clone()
    sh = list(gen["ema_state"]["shadow_params"])
    sh[i] = sh[i][:, :-1].clone()
    g["ema_state"] = dict(gen["ema_state"], shadow_params=sh)
    assert key in _convert_fails(tmp_path, model.cfg, gen=g, base=(gen, ae))


def test_autoencoder_missing_and_wrong_shape_are_named(tiny_files, tmp_path):
    model, _, gen, ae = tiny_files
    a = copy.copy(ae)
    a["state_dict"] = collections.OrderedDict(ae["state_dict"])
    del a["state_dict"]["face_generator.G_middle_3.conv_1.weight_orig"]
    assert "G_middle_3.conv_1.weight_orig" in _convert_fails(tmp_path, model.cfg, ae=a, base=(gen, ae))
    a["state_dict"] = collections.OrderedDict(ae["state_dict"])
    key = "flow_estimator.direction.weight"
    a["state_dict"][key] = ae["state_dict"][key][:, 1:]
    assert "flow_estimator.direction.weight" in _convert_fails(tmp_path, model.cfg, ae=a, base=(gen, ae))
    a["state_dict"] = collections.OrderedDict(ae["state_dict"])
    a["state_dict"]["face_encoder.extra.weight"] = torch.zeros(1)
    assert "face_encoder.extra.weight" in _convert_fails(tmp_path, model.cfg, ae=a, base=(gen, ae))


def test_old_weight_norm_names_are_accepted(tiny_files, tmp_path):
    model, d, gen, _ = tiny_files
    ren = collections.OrderedDict()
    for k, v in gen["state_dict"].items():  # in place: order and EMA positions unchanged
        k = k.replace("pos_conv_embed.conv.parametrizations.weight.original0", "pos_conv_embed.conv.weight_g")
        k = k.replace("pos_conv_embed.conv.parametrizations.weight.original1", "pos_conv_embed.conv.weight_v")
        ren[k] = v
    assert sum(k.endswith(("weight_g", "weight_v")) for k in ren) == 4
    torch.save(dict(gen, state_dict=ren), tmp_path / "old.ckpt")
    report = convert(tmp_path / "old.ckpt", d / "ae.ckpt", tmp_path / "o.safetensors", cfg=model.cfg)
    assert report.weightnorm_naming == "weight_g/weight_v"
    loaded = load_official(tmp_path / "o.safetensors")
    for k in (
        "audio_self.encoder.pos_conv_embed.conv.parametrizations.weight.original1",
        "audio_other.encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    ):
        torch.testing.assert_close(loaded.state_dict()[k], model.state_dict()[k], rtol=0, atol=0)


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_is_refused(tiny_files, tmp_path, capsys):
    _, _, gen, _ = tiny_files
    torch.save(dict(gen, hyper_parameters=_Payload()), tmp_path / "evil.ckpt", pickle_module=pickle)
    with pytest.raises(OfficialCheckpointError, match="restricted unpickler"):
        load_lightning(tmp_path / "evil.ckpt")
    assert "pickled code ran" not in capsys.readouterr().out


def test_layout_matches_released_counts():
    """The full-size released layout: 862 state_dict entries, 778 parameters (the harness README's counts)."""
    layout = released_generator_layout(OfficialConfig())
    assert len(layout) == 862
    params = [e for e in layout if not e.buffer]
    assert len(params) == 778
    assert sum(int(np.prod(e.shape)) for e in params) == 393_908_736
    assert isinstance(params[0], Entry) and params[0].name.startswith("audio_encoder_face.feature_extractor")


# ------------------------------------------------------------------------------------------ GPT ring
def test_ring_equals_banded_recompute_and_first_window_is_released():
    cfg = _cfg()
    torch.manual_seed(3)
    gpt = _model(cfg).gpt
    R, N, W, D = cfg.gpt.history, cfg.gpt.history + 9, cfg.gpt.width, cfg.latent_dim
    lat = torch.randn(1, N, D)
    audio = torch.randn(5, N, W)
    anc = gpt.anchor_terms(torch.randn(5, 1, W))
    with torch.no_grad():
        ring = gpt.new_ring(5, "cpu", torch.float32)
        cs = [gpt.ring_prefill(ring, lat[:, :R], audio[:, :R], anc)]
        cs += [gpt.ring_step(ring, lat[:, i : i + 1], audio[:, i : i + 1], anc) for i in range(R, N)]
        ref = gpt.banded_forward(lat, audio, anc)
        c0, _ = gpt.window_forward(lat[:, :R], audio[:, :R], anc)
    torch.testing.assert_close(torch.stack(cs, 1), ref[:, R - 1 :], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cs[0], c0, rtol=1e-6, atol=1e-6)
    # unlike the released window (every frame recomputed from 94 tokens), the ring's cached states carry
    # older tokens on through the deeper blocks: token 0 still reaches the last output
    lat2 = lat.clone()
    lat2[:, 0] += 5.0
    with torch.no_grad():
        ref2 = gpt.banded_forward(lat2, audio, anc)
    assert not torch.allclose(ref2[:, -1], ref[:, -1], atol=1e-6)


def test_causal_mask_is_the_released_one():
    m = causal_mask(4)
    assert torch.isinf(m[0, 1]) and m[1, 0] == 0 and m[3, 3] == 0


# ------------------------------------------------------------------------------------------ modes
def _speech(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    env = (np.sin(2 * np.pi * 2.5 * t) > 0).astype(np.float32)
    return (0.3 * env * np.sin(2 * np.pi * 140 * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)


def _run(pipe: OfficialPipeline, spk: np.ndarray, lis: np.ndarray, chunk: int, seed: int = 0):
    ref = np.full((32, 32, 3), 128, np.uint8)
    s = pipe.start_session(ref, seed=seed)
    out = []
    for i in range(0, len(spk), chunk):
        s.push_audio(speaker=spk[i : i + chunk], listener=lis[i : i + chunk])
        while (f := s.step()) is not None:
            out.append(f)
    return s, out


@pytest.fixture(scope="module")
def tiny_model():
    return _model(_cfg(audio_window_frames=20, lookahead_frames=1))


def test_release_session_is_the_offline_procedure(tiny_model):
    pipe = OfficialPipeline(tiny_model, "tiny", mode="release", render=False)
    n = 640 * 12
    spk, lis = _speech(n, 0), _speech(n, 1) * 0.3
    s, frames = _run(pipe, spk, lis, chunk=n)  # the whole clip before stepping
    assert [f.index for f in frames] == list(range(12 - 1))  # floor(S/640) - 1 frames, as released
    noises = torch.stack([s.start_noise(k)[0] for k in range(len(frames))])
    ref = offline(Engine(tiny_model), spk, lis, torch.from_numpy(s.reference_motion)[None], noises=noises)
    np.testing.assert_allclose(np.stack([f.latent for f in frames]), ref.numpy(), rtol=1e-5, atol=1e-5)


def test_streaming_lookahead_and_chunking_invariance(tiny_model):
    pipe = OfficialPipeline(tiny_model, "tiny", mode="streaming", render=False)
    n = 640 * 14
    spk, lis = _speech(n, 2), _speech(n, 3) * 0.2
    _, a = _run(pipe, spk, lis, chunk=640)
    _, b = _run(pipe, spk, lis, chunk=999)
    assert [f.index for f in a] == list(range(14 - 1))  # frame k needs audio to k+1+L (L = 1)
    np.testing.assert_allclose(np.stack([f.latent for f in a]), np.stack([f.latent for f in b]), atol=1e-6)
    # changing audio after frame 6 + lookahead leaves frames 0..6 unchanged, and changes later ones
    cut = (6 + 1 + 1) * 640
    spk2 = spk.copy()
    spk2[cut:] = _speech(n - cut, 9)
    _, c = _run(pipe, spk2, lis, chunk=640)
    np.testing.assert_allclose(
        np.stack([f.latent for f in c[:7]]), np.stack([f.latent for f in a[:7]]), atol=1e-6
    )
    assert not np.allclose(c[8].latent, a[8].latent, atol=1e-4)


def test_release_vs_streaming_on_a_short_clip(tiny_model):
    n = 640 * 16
    spk, lis = _speech(n, 4), np.zeros(n, np.float32)
    _, rel = _run(OfficialPipeline(tiny_model, "t", mode="release", render=False), spk, lis, chunk=n)
    _, st = _run(OfficialPipeline(tiny_model, "t", mode="streaming", render=False), spk, lis, chunk=640)
    k = min(len(rel), len(st))
    assert k == 15
    r, s = np.stack([f.latent for f in rel[:k]]), np.stack([f.latent for f in st[:k]])
    spread = r.std(axis=0).mean()
    rms = np.sqrt(((r - s) ** 2).mean())
    # the same model, noise and history rule: close, but not the same computation
    assert 0 < rms < 0.5 * np.abs(r).mean() + spread
    # a different seed moves release further than the mode change does
    _, rel2 = _run(OfficialPipeline(tiny_model, "t", mode="release", render=False), spk, lis, chunk=n, seed=7)
    r2 = np.stack([f.latent for f in rel2[:k]])
    assert rms < np.sqrt(((r - r2) ** 2).mean())


def test_render_and_random_pipeline():
    pipe = load(_cfg(), mode="streaming", render=True)
    s = pipe.start_session(np.zeros((40, 50, 3), np.uint8))
    z = np.zeros(640 * 3, np.float32)
    s.push_audio(speaker=z, listener=z)
    f = s.step()
    assert f.image.shape == (512, 512, 3) and f.image.dtype == np.uint8
    assert set(f.timings) == {"audio", "generator", "head", "render", "total"}
    s.steps = 2
    with pytest.raises(ValueError):
        s.steps = 0


def test_half_precision_path_runs_on_cpu(tiny_model):
    """The reduced-precision path (meant for CUDA) in bfloat16 on the CPU: GPT and head in bf16, audio and
    autoencoder in fp32; the latents stay close to the fp32 ones."""
    cfg = _cfg(audio_window_frames=20, lookahead_frames=1)
    n = 640 * 6
    spk, lis = _speech(n, 5), np.zeros(n, np.float32)
    full = load(cfg, mode="streaming", render=True)
    half = load(cfg, mode="streaming", render=True, half="bfloat16")
    assert next(half.model.gpt.parameters()).dtype == torch.bfloat16
    assert next(half.model.audio_self.parameters()).dtype == torch.float32
    _, a = _run(full, spk, lis, chunk=n)
    _, b = _run(half, spk, lis, chunk=n)
    la, lb = np.stack([f.latent for f in a]), np.stack([f.latent for f in b])
    assert np.isfinite(lb).all() and b[0].image.dtype == np.uint8
    assert np.sqrt(((la - lb) ** 2).mean()) < 0.1 * np.abs(la).mean() + 0.05


def test_the_engine_drives_the_official_session(tiny_model):
    """runtime's AvatarEngine (node, replay, render) runs the official pipeline through the Session interface:
    its offline stream gives the frames a direct streaming session gives."""
    from dystream_ros.runtime.engine import AvatarEngine, model_sampler
    from dystream_ros.runtime.settings import Settings

    pipe = OfficialPipeline(tiny_model, "tiny", mode="streaming", render=False)
    n = 640 * 10
    spk, lis = _speech(n, 6), _speech(n, 7) * 0.2
    engine = AvatarEngine(
        Settings(num_threads=1, warmup_frames=0, **model_sampler(pipe)),
        pipe=pipe,
        reference=np.full((32, 32, 3), 128, np.uint8),
    )
    got = np.stack([o.frame.latent for o in engine.offline(spk, lis)])
    assert got.shape == (10, tiny_model.cfg.latent_dim)
    _, direct = _run(pipe, spk, lis, chunk=640)
    np.testing.assert_allclose(got[: len(direct)], np.stack([f.latent for f in direct]), atol=1e-6)


def test_streaming_skip_before_the_first_frame(tiny_model):
    pipe = OfficialPipeline(tiny_model, "tiny", mode="streaming", render=False)
    s = pipe.start_session(np.full((32, 32, 3), 128, np.uint8))
    s.push_audio(speaker=_speech(640 * 30, 8), listener=np.zeros(640 * 30, np.float32))
    assert s.skip(20) == 20
    f = s.step()
    assert f.index == 20 and np.isfinite(f.latent).all()
    assert s.step().index == 21


def test_load_pipeline_takes_a_converted_file(tiny_files, tmp_path):
    """runtime.load_pipeline (node, replay, render, bench) recognises a converted file by its metadata."""
    from dystream_ros.runtime.session import load_pipeline

    model, d, _, _ = tiny_files
    convert(d / "last.ckpt", d / "ae.ckpt", tmp_path / "o.safetensors", cfg=model.cfg)
    pipe = load_pipeline(tmp_path / "o.safetensors", render=False)
    assert isinstance(pipe, OfficialPipeline) and pipe.profile == "official" and pipe.mode == "streaming"
    s = pipe.start_session(np.full((32, 32, 3), 128, np.uint8))
    z = np.zeros(640 * 3, np.float32)
    s.push_audio(speaker=z, listener=z)
    assert s.step().latent.shape == (model.cfg.latent_dim,)
