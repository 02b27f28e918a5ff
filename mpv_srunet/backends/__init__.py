"""Runtimes behind one small interface.

A backend takes a float32 NCHW batch in [-1, 1] whose height and width are multiples
of 8 (the filter pads) and returns the upscaled float32 NCHW batch. Each runtime is
one module; the registry maps a name to a lazy factory, so that importing this
package never imports torch-CUDA, onnxruntime or TensorRT.

``auto`` tries :data:`AUTO_ORDER` and takes the first backend that can run here.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

import numpy as np

from ..errors import BackendError, BackendUnavailable

if TYPE_CHECKING:
    from ..model import SRUNet

log = logging.getLogger(__name__)


@runtime_checkable
class Backend(Protocol):
    """What the frame filter needs from a runtime."""

    name: str

    def infer(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW in [-1, 1] (H, W multiples of 8) -> float32 NCHW, scaled."""
        ...

    def close(self) -> None:
        """Free the runtime's resources (idempotent)."""
        ...

    # Optional, where a runtime can do the whole frame on its device (torch-cuda):
    # ``infer_yuv420(y, u, v, colour: Colour) -> (2H*3/2, 2W) uint8 yuv420p planes``;
    # Upscaler.upscale_yuv420 uses it when present (see mpv_srunet/gpu/frames.py).
    # Optional, where a runtime can swap weights in place (torch-cpu, torch-cuda):
    # ``load_weights(model) -> bool`` copies a same-config model's weights into the live
    # runtime (True) or declines (False); Upscaler.set_strength builds a new backend then.


@dataclass(frozen=True)
class BackendSpec:
    """A registry entry: where the factory lives and a one-line description."""

    module: str  # dotted module path, imported lazily
    factory: str  # attribute of that module: factory(model, **options) -> Backend
    description: str


#: name -> spec. The TensorRT / torch-CUDA entries are registered here too.
BACKENDS: dict[str, BackendSpec] = {
    "torch-cpu": BackendSpec("mpv_srunet.backends.torch_backend", "create_cpu", "PyTorch on the CPU (fp32, or bf16)"),
    "onnxruntime": BackendSpec(
        "mpv_srunet.backends.onnxruntime_backend", "create", "ONNX Runtime (CPU EP; CUDA/TensorRT EPs with onnxruntime-gpu)"
    ),
    "tensorrt": BackendSpec("mpv_srunet.backends.tensorrt_backend", "create", "TensorRT FP16 engine (cached; NVIDIA GPU)"),
    "torch-cuda": BackendSpec("mpv_srunet.backends.torch_cuda_backend", "create", "PyTorch on a CUDA GPU (fp16)"),
}

#: `auto` tries these in order; GPU runtimes first.
AUTO_ORDER: list[str] = ["tensorrt", "torch-cuda", "torch-cpu", "onnxruntime"]


def _factory(name: str) -> Callable[..., Backend]:
    try:
        spec = BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}") from None
    try:
        module = importlib.import_module(spec.module)
    except ImportError as e:
        raise BackendUnavailable(f"{name}: cannot import {spec.module} ({e})") from None
    return getattr(module, spec.factory)


def create_backend(name: str, model: "SRUNet", **options: Any) -> Backend:
    """Create backend ``name`` (or the first that works, for ``auto``) for a deploy-form model."""
    if name != "auto":
        return _factory(name)(model, **options)
    reasons = []
    for cand in AUTO_ORDER:
        if cand not in BACKENDS:
            continue
        try:
            backend = _factory(cand)(model, **options)
        except (BackendError, TypeError) as e:
            # unavailable here, or options meant for another runtime (e.g. precision="bf16" for torch-cpu)
            reasons.append(f"{cand}: {e}")
            log.debug("auto: skipping %s: %s", cand, e)
            continue
        log.info("auto: using backend %s", backend.name)
        return backend
    raise BackendUnavailable("no backend can run here: " + "; ".join(reasons))


def available_backends() -> dict[str, str]:
    """name -> "ok" or the reason it cannot run, without building a model."""
    out = {}
    for name, spec in BACKENDS.items():
        try:
            module = importlib.import_module(spec.module)
            check = getattr(module, "availability", None)
            out[name] = check(name) if check else "ok"
        except ImportError as e:
            out[name] = f"cannot import ({e})"
    return out
