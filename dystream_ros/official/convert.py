"""Strict converter from the released Lightning checkpoints to one safetensors file.

Inputs: the generator ``last.ckpt`` (``state_dict`` keys ``model.*``, EMA weights in
``ema_state.shadow_params``, a positional list) and the autoencoder ``epoch=0-step=312000.ckpt``
(prefixes ``motion_encoder.``, ``flow_estimator.``, ``face_generator.``, ``face_encoder.``).

Loading never runs pickled code: ``torch.load(weights_only=True)`` is torch's restricted unpickler, which
rebuilds only tensors, storages and plain containers and refuses any other global. Lightning may pickle a
few bookkeeping objects beside the weights (``hyper_parameters`` as an OmegaConf container, an
``AttributeDict``); those names are allow-listed as :class:`Inert`, a class that only stores the state it is
given (no import of the real class, nothing called), and the converter never reads them.

What is checked, before anything is written (any failure raises :class:`OfficialCheckpointError` naming
the key as it appears in the checkpoint):

* every tensor the released architecture has is present with its exact shape, nothing else (training-only
  prefixes ``discriminator.``, ``criterion_vgg.`` and the Lightning extras are ignored);
* the EMA list has one entry per parameter (the state_dict keys minus the 84 buffers, in the released
  registration order, which this module derives from the architecture, not from the file) and each entry
  has that parameter's shape; the EMA entries are the weights used;
* the positional convolution's weight norm is accepted under both namings (``parametrizations.weight
  .original0/1`` and the older ``weight_g``/``weight_v``);
* buffers (rotation and PE tables, blur kernels) equal the values this implementation rebuilds.

Tensors the released computation never reads are dropped and listed (:data:`DEAD_GENERATOR`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dystream_ros.official.autoencoder import blur_kernel
from dystream_ros.official.config import OfficialConfig
from dystream_ros.official.gpt import rotation_tables, sinusoid_table
from dystream_ros.official.model import OfficialCheckpointError, _expected, save_official

__all__ = [
    "ConversionReport",
    "Inert",
    "convert",
    "convert_autoencoder",
    "convert_generator",
    "load_lightning",
    "released_generator_layout",
]

WN_NEW = ("parametrizations.weight.original0", "parametrizations.weight.original1")
WN_OLD = ("weight_g", "weight_v")
AE_PREFIXES = ("motion_encoder.", "flow_estimator.", "face_generator.", "face_encoder.")


class Inert:
    """Stand-in for an allow-listed non-tensor class in a checkpoint: keeps its state, does nothing."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state) -> None:
        self.state = state

    def __setitem__(self, k, v) -> None:
        self.__dict__.setdefault("items", {})[k] = v


_INERT_NAMES = (
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "lightning.fabric.utilities.data.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
)


def load_lightning(path: str | Path) -> dict:
    """A Lightning checkpoint through torch's restricted unpickler (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    safe = [(Inert, name) for name in _INERT_NAMES]
    try:
        with torch.serialization.safe_globals(safe):
            ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any refusal is reported with the file
        raise OfficialCheckpointError(f"{path}: cannot be read with the restricted unpickler: {e}") from None
    if not isinstance(ck, dict) or not isinstance(ck.get("state_dict"), dict):
        raise OfficialCheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict' dict)")
    return ck


# ----------------------------------------------------------------------------------- generator layout
@dataclass(frozen=True)
class Entry:
    name: str  # released name, without the 'model.' prefix
    shape: tuple[int, ...]
    buffer: bool
    ours: str | None  # our tensor name, None = dropped (dead or rebuilt buffer)
    rows: tuple[int, int] | None = None  # slice of the released tensor's first axis that we keep


def _lin(prefix: str, dout: int, din: int, ours: str | None, bias: bool = True) -> list[Entry]:
    out = [Entry(f"{prefix}.weight", (dout, din), False, ours and f"{ours}.weight")]
    if bias:
        out.append(Entry(f"{prefix}.bias", (dout,), False, ours and f"{ours}.bias"))
    return out


def _ln(prefix: str, n: int, ours: str | None) -> list[Entry]:
    return [
        Entry(f"{prefix}.weight", (n,), False, ours and f"{ours}.weight"),
        Entry(f"{prefix}.bias", (n,), False, ours and f"{ours}.bias"),
    ]


def _mha(prefix: str, W: int, ours: str | None) -> list[Entry]:
    return [
        Entry(f"{prefix}.in_proj_weight", (3 * W, W), False, ours and f"{ours}.in_proj_weight"),
        Entry(f"{prefix}.in_proj_bias", (3 * W,), False, ours and f"{ours}.in_proj_bias"),
        *_lin(f"{prefix}.out_proj", W, W, ours and f"{ours}.out_proj"),
    ]


def released_generator_layout(cfg: OfficialConfig) -> list[Entry]:
    """Every tensor of the released ``Audio2FaceGPT.state_dict()`` in its order (names without 'model.')."""
    W, D, C, P = cfg.gpt.width, cfg.latent_dim, cfg.audio.hidden, cfg.gpt.max_positions
    Wh = cfg.head.width
    out: list[Entry] = []
    with torch.device("meta"):
        from dystream_ros.official.audio import Wav2Vec2Encoder

        enc = Wav2Vec2Encoder(cfg.audio)
    enc_entries = [(k, tuple(v.shape)) for k, v in enc.state_dict().items()]
    for rel, ours in (("audio_encoder_face", "audio_self"), ("audio_encoder_face_other", "audio_other")):
        out += [Entry(f"{rel}.{k}", s, False, f"{ours}.{k}") for k, s in enc_entries]
    out += _lin("audio_proj", W, C, "gpt.audio_proj") + _lin("audio_other_proj", W, C, "gpt.audio_other_proj")
    out += _lin("audio_audioother_fusion", W, 2 * W, "gpt.fusion")
    out += _lin("face_embed", W, D, "gpt.face_embed") + _lin("anchor_embed", W, D, "gpt.anchor_embed")
    out += _lin("time_embed.time_embedder.linear_1", Wh, Wh, "time_embed.linear_1")
    out += _lin("time_embed.time_embedder.linear_2", Wh, Wh, "time_embed.linear_2")
    rope = [("rope.cos_angles", (P, W // 2)), ("rope.sin_angles", (P, W // 2))]
    for i in range(cfg.gpt.blocks):
        b, o = f"blocks.{i}", f"gpt.blocks.{i}"
        out += _ln(f"{b}.norm1", W, f"{o}.norm1") + _ln(f"{b}.norm2", W, None)
        out += _ln(f"{b}.norm3", W, f"{o}.norm3") + _ln(f"{b}.norm4", W, f"{o}.norm4")
        out += _ln(f"{b}.norm_anchor", W, None)  # feeds only the query of a one-key attention
        out += _mha(f"{b}.self_attn_rope.self_attn", W, f"{o}.attn_rope")
        out += [Entry(f"{b}.self_attn_rope.{n}", s, True, None) for n, s in rope]
        out += _mha(f"{b}.cross_attn_rope.cross_attn", W, None)
        out += [Entry(f"{b}.cross_attn_rope.{n}", s, True, None) for n, s in rope]
        out += _mha(f"{b}.self_attn_pos.self_attn", W, f"{o}.attn_pos")
        out.append(Entry(f"{b}.self_attn_pos.pe.pe", (1, P, W), True, None))
        a = f"{b}.cross_attn_anchor.cross_attn"
        out += [
            Entry(f"{a}.in_proj_weight", (3 * W, W), False, f"{o}.anchor.value.weight", (2 * W, 3 * W)),
            Entry(f"{a}.in_proj_bias", (3 * W,), False, f"{o}.anchor.value.bias", (2 * W, 3 * W)),
            *_lin(f"{a}.out_proj", W, W, f"{o}.anchor.out"),
        ]
        out += [Entry(f"{b}.cross_attn_anchor.{n}", s, True, None) for n, s in rope]
        out += _lin(f"{b}.cross_linear_audio", W, W, f"{o}.audio_linear")
        out += _lin(f"{b}.mlp.fc1", cfg.gpt.mlp, W, f"{o}.fc1") + _lin(
            f"{b}.mlp.fc2", W, cfg.gpt.mlp, f"{o}.fc2"
        )
    out += _ln("output_norm", W, "gpt.output_norm") + _lin("output_proj", D, W, "gpt.output_proj")
    h = "diffusion_head"
    out += _lin(f"{h}.noisy_proj", Wh, D, "head.noisy_proj") + _lin(f"{h}.gpt_proj", Wh, D, "head.gpt_proj")
    out += _lin(f"{h}.past_proj", Wh, D, None) + _lin(f"{h}.anchor_proj", Wh, D, None)
    for i in range(cfg.head.blocks):
        b, o = f"{h}.blocks.{i}", f"head.blocks.{i}"
        for m in ("mlp1", "mlp2"):
            out += _lin(f"{b}.{m}.fc1", cfg.head.mlp, Wh, f"{o}.{m}.fc1")
            out += _lin(f"{b}.{m}.fc2", Wh, cfg.head.mlp, f"{o}.{m}.fc2")
        out += _lin(f"{b}.adaLN_modulation1.1", 3 * Wh, Wh, f"{o}.mod1")
        out += _lin(f"{b}.adaLN_modulation2.1", 3 * Wh, Wh, f"{o}.mod2")
    out += _ln(f"{h}.output_norm", Wh, "head.output_norm") + _lin(
        f"{h}.output_proj", D, Wh, "head.output_proj"
    )
    return out


def _wn_new_name(k: str) -> str:
    """Old weight-norm naming of the positional conv -> the parametrization naming used here."""
    for new, old in zip(WN_NEW, WN_OLD, strict=True):
        if k.endswith("pos_conv_embed.conv." + old):
            return k[: -len(old)] + new
    return k


@dataclass
class ConversionReport:
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # group -> parameter count
    ignored_keys: int = 0
    weightnorm_naming: str = "parametrizations"
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"kept {self.kept:,} values"]
        out += [f"dropped {n:,} values: {g}" for g, n in self.dropped.items()]
        out.append(f"ignored {self.ignored_keys} training-only tensors")
        out.append(f"positional-conv weight norm naming: {self.weightnorm_naming}")
        return out + self.notes


def _dead_group(name: str) -> str:
    for pat, g in (
        (r"cross_attn_rope\.cross_attn", "blocks.*.cross_attn_rope (never called)"),
        (r"\.norm2\.", "blocks.*.norm2 (never called)"),
        (r"norm_anchor", "blocks.*.norm_anchor (query of a one-key attention)"),
        (r"cross_attn_anchor.*in_proj", "blocks.*.cross_attn_anchor q/k rows (one key: softmax = 1)"),
        (r"past_proj|anchor_proj", "diffusion_head.past_proj / anchor_proj (never called)"),
    ):
        if re.search(pat, name):
            return g
    return "other"


def convert_generator(ck: dict, cfg: OfficialConfig, report: ConversionReport) -> dict[str, torch.Tensor]:
    """Released generator checkpoint dict -> our tensors (EMA weights). Raises naming the first bad key."""
    sd = ck["state_dict"]
    layout = released_generator_layout(cfg)
    got: dict[str, torch.Tensor] = OrderedDict()
    naming = set()
    for k, v in sd.items():
        if not k.startswith("model."):
            raise OfficialCheckpointError(
                f"generator: unexpected key {k!r} (state_dict keys start with 'model.')"
            )
        kk = k[len("model.") :]
        n = _wn_new_name(kk)
        if n != kk:
            naming.add("weight_g/weight_v")
        elif "pos_conv_embed.conv.parametrizations" in kk:
            naming.add("parametrizations")
        if n in got:
            raise OfficialCheckpointError(f"generator: {k!r} given under both weight-norm namings")
        got[n] = v
    if len(naming) > 1:
        raise OfficialCheckpointError("generator: the positional-conv weight norm mixes both namings")
    report.weightnorm_naming = naming.pop() if naming else "none"
    names = {e.name for e in layout}
    for e in layout:
        if e.name not in got:
            raise OfficialCheckpointError(f"generator: missing tensor 'model.{e.name}'")
        if tuple(got[e.name].shape) != e.shape:
            raise OfficialCheckpointError(
                f"generator: tensor 'model.{e.name}' has shape {tuple(got[e.name].shape)}, the released "
                f"architecture needs {e.shape}"
            )
    extra = [k for k in got if k not in names]
    if extra:
        raise OfficialCheckpointError(f"generator: unexpected tensor 'model.{extra[0]}'")
    ema = ck.get("ema_state")
    if not isinstance(ema, dict) or not isinstance(ema.get("shadow_params"), (list, tuple)):
        raise OfficialCheckpointError(
            "generator: no ema_state.shadow_params list (the EMA weights are the inference weights)"
        )
    shadow = list(ema["shadow_params"])
    params = [e for e in layout if not e.buffer]
    if len(shadow) != len(params):
        raise OfficialCheckpointError(
            f"generator: ema_state.shadow_params has {len(shadow)} entries, the architecture has "
            f"{len(params)} parameters"
        )
    for i, (e, t) in enumerate(zip(params, shadow, strict=True)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != e.shape:
            raise OfficialCheckpointError(
                f"generator: ema_state.shadow_params[{i}] has shape {tuple(getattr(t, 'shape', ()))}, "
                f"parameter 'model.{e.name}' needs {e.shape}"
            )
    _check_tables(got, cfg)
    out: dict[str, torch.Tensor] = {}
    for e, t in zip(params, shadow, strict=True):
        if e.ours is None:
            g = _dead_group(e.name)
            report.dropped[g] = report.dropped.get(g, 0) + t.numel()
            continue
        if e.rows is not None:
            a, b = e.rows
            kept = t[a:b]
            g = _dead_group(e.name)
            report.dropped[g] = report.dropped.get(g, 0) + t.numel() - kept.numel()
            t = kept
        out[e.ours] = t.detach().to(torch.float32).clone()
        report.kept += t.numel()
    return out


def _check_tables(got: dict[str, torch.Tensor], cfg: OfficialConfig) -> None:
    cos, sin = rotation_tables(cfg.gpt.width, cfg.gpt.max_positions)
    pe = sinusoid_table(cfg.gpt.width, cfg.gpt.max_positions)[None]
    for k, v in got.items():
        ref = (
            cos
            if k.endswith("cos_angles")
            else sin
            if k.endswith("sin_angles")
            else pe
            if k.endswith(".pe.pe")
            else None
        )
        if ref is not None and not torch.allclose(v.float(), ref, atol=1e-5):
            raise OfficialCheckpointError(f"generator: buffer 'model.{k}' differs from the released table")


# ----------------------------------------------------------------------------------- autoencoder
def _spectral(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """weight_orig / (u . W v) with the stored u, v (the released eval forward; no power iteration)."""
    sigma = torch.dot(u, torch.mv(w.reshape(w.shape[0], -1), v))
    return w / sigma


def convert_autoencoder(ck: dict, cfg: OfficialConfig, report: ConversionReport) -> dict[str, torch.Tensor]:
    sd = {k: v for k, v in ck["state_dict"].items() if k.startswith(AE_PREFIXES)}
    report.ignored_keys += len(ck["state_dict"]) - len(sd)
    ours = {k[len("ae.") :]: s for k, s in _expected(cfg, True).items() if k.startswith("ae.")}
    # the released names of each of our tensors
    released: dict[str, tuple[int, ...]] = {}
    for k, s in ours.items():
        m = re.match(r"(face_generator\.(?:G_middle_\d|up_\d)\.conv_[01s])\.weight$", k)
        if m:
            w = s[0], int(torch.tensor(s[1:]).prod())
            released[f"{m.group(1)}.weight_orig"] = s
            released[f"{m.group(1)}.weight_u"] = (w[0],)
            released[f"{m.group(1)}.weight_v"] = (w[1],)
        else:
            released[k] = s
    kernels = {}
    for i in range(1, len(cfg.autoencoder.motion_channels)):
        for part in ("conv2", "skip"):
            kernels[f"motion_encoder.convs.{i}.{part}.0.kernel"] = (4, 4)
    V = cfg.autoencoder.warp_channels[0]
    dead = {"face_generator.warp_layer.weight": (V, V, 1, 1)}
    for k, s in {**released, **kernels, **dead}.items():
        if k not in sd:
            raise OfficialCheckpointError(f"autoencoder: missing tensor {k!r}")
        if tuple(sd[k].shape) != s:
            raise OfficialCheckpointError(
                f"autoencoder: tensor {k!r} has shape {tuple(sd[k].shape)}, the released architecture "
                f"needs {s}"
            )
    extra = [k for k in sd if k not in released and k not in kernels and k not in dead]
    if extra:
        raise OfficialCheckpointError(f"autoencoder: unexpected tensor {extra[0]!r}")
    for k in kernels:
        if not torch.allclose(sd[k].float(), blur_kernel(), atol=1e-7):
            raise OfficialCheckpointError(f"autoencoder: blur kernel {k!r} is not [1,3,3,1]^2/64")
    out: dict[str, torch.Tensor] = {}
    for k in ours:
        m = re.match(r"(face_generator\.(?:G_middle_\d|up_\d)\.conv_[01s])\.weight$", k)
        if m:
            p = m.group(1)
            t = _spectral(
                sd[f"{p}.weight_orig"].float(), sd[f"{p}.weight_u"].float(), sd[f"{p}.weight_v"].float()
            )
        else:
            t = sd[k]
        out[f"ae.{k}"] = (
            t.detach().clone() if t.dtype == torch.int64 else t.detach().to(torch.float32).clone()
        )
        report.kept += t.numel()
    report.dropped["face_generator.warp_layer (never called)"] = V * V
    report.notes.append("spectral norm folded into conv_0/conv_1/conv_s weights with the stored u, v")
    return out


# ----------------------------------------------------------------------------------- both
def _sha8(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:8]


def convert(
    generator: str | Path, autoencoder: str | Path | None, out: str | Path, cfg: OfficialConfig | None = None
) -> ConversionReport:
    """Both released files (autoencoder optional: latents-only) -> one safetensors file at ``out``."""
    cfg = cfg or OfficialConfig()
    report = ConversionReport()
    tensors = convert_generator(load_lightning(generator), cfg, report)
    render = autoencoder is not None
    if render:
        tensors.update(convert_autoencoder(load_lightning(autoencoder), cfg, report))
    extra = {
        "source_generator": f"{Path(generator).name}@{_sha8(Path(generator))}",
        "conversion": json.dumps(report.lines()),
    }
    if render:
        extra["source_autoencoder"] = f"{Path(autoencoder).name}@{_sha8(Path(autoencoder))}"
    save_official(tensors, cfg, out, render=render, extra=extra)
    return report
