"""Execution backends for the per-frame steps: ``torch`` (CPU or CUDA), ``onnxruntime`` (CPU) and
``auto`` (the default: on CPU onnxruntime for audio/generator/head and torch for rendering; torch on CUDA).

All expose the same methods over torch tensors and run the same step graphs (``runtime.steps``), so a
session behaves identically up to float rounding. TensorRT is a later issue.
"""

from __future__ import annotations

import numpy as np
import torch

from dystream_ros.config import BACKENDS
from dystream_ros.model.dystream import DyStreamModel
from dystream_ros.model.flow_head import euler_integrate, euler_times
from dystream_ros.runtime import steps

__all__ = ["BACKENDS", "Backend", "HybridBackend", "OnnxRuntimeBackend", "TorchBackend", "make_backend"]



class Backend:
    """Common interface; subclasses implement the steps. Tensors in and out live on ``self.device``."""

    name = "abstract"
    device = torch.device("cpu")

    def encode_reference(self, image: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(1, 3, S, S) -> appearance (1, A, s, s) or None when not rendering, m0 (1, D)."""
        raise NotImplementedError

    def encode_audio(self, windows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generator_step(self, prev, audio, anchor, drop, k_cache, v_cache, pos):
        raise NotImplementedError

    def head_condition(self, cond: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head_time(self, t: torch.Tensor) -> torch.Tensor:
        """(N,) times -> (N, M) time modulation."""
        raise NotImplementedError

    def time_modulation(self, steps: int) -> torch.Tensor:
        """(steps, M) modulation of the fixed Euler grid t = i / steps, computed once per step count."""
        cache = self.__dict__.setdefault("_time_cache", {})
        if steps not in cache:
            cache[steps] = self.head_time(euler_times(steps, self.device))
        return cache[steps]

    def head_step(self, x, time_mod, dt, cond_mod, coef) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latent, m0, appearance, reference) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, noise: torch.Tensor, cond: torch.Tensor, coef: torch.Tensor, steps: int,
               head: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Guided Euler sampling from noise (1, D) with conditions (Q, Wh) -> latent (1, D).

        ``head = (coef_head (Q,), basis (K, D) orthonormal rows)``: the branch weights ``coef_head`` along
        the basis directions and ``coef`` elsewhere. A guided step is affine in the weights, so this is
        exact: the step with ``coef`` plus the projection on the basis of the difference the step with
        ``coef_head`` makes (two head evaluations per Euler step)."""
        cond_mod = self.head_condition(cond)
        if head is None:
            return euler_integrate(lambda x, tm, dt: self.head_step(x, tm, dt, cond_mod, coef), noise,
                                   self.time_modulation(steps))
        coef_head, basis = head

        def step(x, tm, dt):
            xa = self.head_step(x, tm, dt, cond_mod, coef)
            diff = self.head_step(x, tm, dt, cond_mod, coef_head) - xa
            return xa + (diff @ basis.T) @ basis

        return euler_integrate(step, noise, self.time_modulation(steps))


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: DyStreamModel, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.render = model.render
        self._audio = steps.AudioStep(model)
        self._gen = steps.GeneratorStep(model)
        self._cond = steps.HeadCondition(model)
        self._time = steps.HeadTime(model)
        self._head = steps.HeadStep(model)
        self._motion = steps.MotionStep(model)
        if self.render:
            self._decode = steps.DecodeStep(model)
            # oneDNN convolutions with few channels are several times faster in NHWC on CPU. The motion
            # encoder stays NCHW so m0 (and hence the latents) do not depend on whether we render.
            self._fmt = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
            model.autoencoder.appearance.to(memory_format=self._fmt)
            model.autoencoder.decoder.to(memory_format=self._fmt)

    @torch.inference_mode()
    def encode_reference(self, image):
        m0 = self._motion(image)
        if self.render:
            return self.model.autoencoder.appearance(image.to(memory_format=self._fmt)), m0
        return None, m0

    @torch.inference_mode()
    def encode_audio(self, windows):
        return self._audio(windows)

    @torch.inference_mode()
    def generator_step(self, prev, audio, anchor, drop, k_cache, v_cache, pos):
        return self._gen(prev, audio, anchor, drop, k_cache, v_cache, pos)

    @torch.inference_mode()
    def head_condition(self, cond):
        return self._cond(cond)

    @torch.inference_mode()
    def head_time(self, t):
        return self._time(t)

    @torch.inference_mode()
    def head_step(self, x, time_mod, dt, cond_mod, coef):
        return self._head(x, time_mod, dt, cond_mod, coef)

    @torch.inference_mode()
    def decode(self, latent, m0, appearance, reference):
        return self._decode(latent, m0, appearance, reference)


class OnnxRuntimeBackend(Backend):
    """Runs the exported step graphs (``onnx_export.cached_export``) with onnxruntime on CPU.

    ``steps`` limits which steps are exported (the hybrid backend only needs the non-render ones).
    """

    name = "onnxruntime"

    def __init__(
        self,
        model: DyStreamModel,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        steps: tuple[str, ...] | None = None,
        spinning: bool = True,
    ) -> None:
        import onnxruntime as ort

        from dystream_ros.runtime.onnx_export import cached_export

        if torch.device(device).type != "cpu":
            raise NotImplementedError(
                "the onnxruntime backend runs on CPU only; use backend='torch' for CUDA"
            )
        self.render = model.render
        paths = cached_export(model, steps)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spinning:  # leave the cores to torch between calls (hybrid backend)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._s = {
            n: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
            for n, p in paths.items()
        }

    def _run(self, name: str, *args: torch.Tensor) -> list[torch.Tensor]:
        sess = self._s[name]
        feeds = {
            i.name: np.ascontiguousarray(a.detach().cpu().numpy())
            for i, a in zip(sess.get_inputs(), args, strict=True)
        }
        return [torch.from_numpy(o) for o in sess.run(None, feeds)]

    def encode_reference(self, image):
        if self.render:
            app, m0 = self._run("reference", image)
            return app, m0
        return None, self._run("motion", image)[0]

    def encode_audio(self, windows):
        return self._run("audio", windows)[0]

    def generator_step(self, prev, audio, anchor, drop, k_cache, v_cache, pos):
        cond, k, v = self._run("generator_step", prev, audio, anchor, drop, k_cache, v_cache, pos)
        return cond, k, v

    def head_condition(self, cond):
        return self._run("head_condition", cond)[0]

    def head_time(self, t):
        return self._run("head_time", t)[0]

    def head_step(self, x, time_mod, dt, cond_mod, coef):
        return self._run("head_step", x, time_mod, dt, cond_mod, coef)[0]

    def decode(self, latent, m0, appearance, reference):
        return self._run("decoder", latent, m0, appearance, reference)[0]


class HybridBackend(Backend):
    """CPU default: onnxruntime for the matmul-bound steps (audio, generator, head), torch for rendering.

    On CPUs where MKL's small matrix-vector products are slow (e.g. AMD EPYC) onnxruntime's MLAS runs the
    transformer and MLP steps several times faster, while torch/oneDNN (NHWC) runs the small convolutions
    and ``grid_sample`` of the decoder faster than onnxruntime.
    """

    name = "onnxruntime+torch"
    ORT_STEPS = ("audio", "generator_step", "head_condition", "head_time", "head_step")

    def __init__(self, model: DyStreamModel, device: str | torch.device = "cpu") -> None:
        self.render = model.render
        self._torch = TorchBackend(model, device)
        # One non-spinning onnxruntime thread: these matrix-vector products gain little from a second thread
        # and must not compete with torch's render threads (or the ROS executor) for the cores.
        self._ort = OnnxRuntimeBackend(model, device, threads=1, steps=self.ORT_STEPS, spinning=False)
        self.encode_reference = self._torch.encode_reference
        self.decode = self._torch.decode
        self.encode_audio = self._ort.encode_audio
        self.generator_step = self._ort.generator_step
        self.head_condition = self._ort.head_condition
        self.head_time = self._ort.head_time
        self.head_step = self._ort.head_step


def make_backend(name: str, model: DyStreamModel, device: str | torch.device = "cpu") -> Backend:
    """``auto`` (CPU: onnxruntime + torch render; CUDA: torch) | ``torch`` | ``onnxruntime``."""
    if name == "auto":
        if torch.device(device).type == "cpu":
            return HybridBackend(model, device)
        return TorchBackend(model, device)
    if name == "torch":
        return TorchBackend(model, device)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(model, device)
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
