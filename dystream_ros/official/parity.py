"""Outputs of this implementation for the parity harness's fixed inputs (keys: its fixture_spec.py).

Each group computes what the released code computes on the same inputs: ``audio`` the offline feature path
of one 3 s track, ``head`` the time embedding and one x0 prediction, ``step`` one generated frame from a
precomputed feature window (all five branches recorded), ``e2e`` the first frames of the offline run and
``ae`` the autoencoder's four parts separately.
"""

from __future__ import annotations

import numpy as np
import torch

from dystream_ros.official.audio import prepare, to_25hz
from dystream_ros.official.infer import Engine, offline
from dystream_ros.official.model import OfficialModel

__all__ = ["run_groups"]


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


@torch.no_grad()
def run_groups(
    model: OfficialModel, inputs: dict[str, np.ndarray], groups: list[str]
) -> dict[str, np.ndarray]:
    eng = Engine(model)
    out: dict[str, torch.Tensor] = {}
    if "audio" in groups:
        for name, enc in (("self", model.audio_self), ("other", model.audio_other)):
            x = prepare(inputs[f"audio.{name}_wave"], model.cfg.audio.pad_samples)
            f50 = enc(x)
            out[f"audio.wav_in_{name}"] = x
            out[f"audio.feat50_{name}"] = f50
            out[f"audio.feat25_{name}"] = to_25hz(f50)
    if "head" in groups:
        t = torch.from_numpy(np.asarray(inputs["head.t"]))
        temb = model.time_embed(t)
        out["head.temb"] = temb
        out["head.x0"] = model.head(_t(inputs["head.noisy"]), _t(inputs["head.cond"]), temb[:, None])
    if "step" in groups:
        R = model.cfg.gpt.history
        fs, fo = _t(inputs["step.feat_self"])[:, 1:], _t(inputs["step.feat_other"])[:, 1:]
        anchor_tok, anc = eng.anchor_terms(_t(inputs["step.anchor"]))
        c, h, audio = eng.window_condition(_t(inputs["step.history"]), fs[:, :R], fo[:, :R], anc)
        rec: dict = {}
        x = eng.sample(c, _t(inputs["step.noise"]), record=rec)
        sig, ts, _ = eng.grid(model.cfg.sampler.steps)
        out.update(
            {
                "step.gpt_cond": c,
                "step.gpt_hidden": h,
                "step.audio_tokens": audio,
                "step.anchor_tokens": anchor_tok,
                "step.x0_branches": rec["x0"],
                "step.velocity": rec["velocity"],
                "step.traj": rec["traj"],
                "step.out": x,
                "sched.sigmas": sig,
                "sched.timesteps": ts,
            }
        )
    if "e2e" in groups:
        noise = _t(inputs["e2e.noise"])
        rec = {}
        lat = offline(
            eng,
            inputs["audio.self_wave"],
            inputs["audio.other_wave"],
            _t(inputs["e2e.m0"]),
            noises=noise,
            frames=noise.shape[0],
            record=rec,
        )
        out["e2e.out"] = lat
        out["e2e.feat25_self"], out["e2e.feat25_other"] = rec["feat25_self"], rec["feat25_other"]
        out["e2e.gpt_cond"] = torch.stack(rec["gpt_cond"])
    if "ae" in groups:
        ae = model.ae
        img = _t(inputs["ae.image"])
        out["ae.m0"] = ae.motion_encoder(img)
        out["ae.m0_from256"] = ae.motion_encoder(_t(inputs["ae.image256"]))
        vol = ae.face_encoder(img)
        out["ae.face_feat"] = vol
        out["ae.flow_out"] = ae.flow_estimator(_t(inputs["ae.flow_ref"]), _t(inputs["ae.flow_tgt"]))
        tgt = ae.flow_estimator(_t(inputs["ae.gen_ref"]), _t(inputs["ae.gen_tgt"]))
        out["ae.gen_tgt_latent"] = tgt
        rec = {}
        out["ae.frame"] = ae.face_generator(tgt, vol, record=rec)
        out["ae.warp_z"], out["ae.seg"] = rec["warp_z"], rec["seg"]
    return {k: v.detach().float().cpu().numpy() for k, v in out.items()}
