"""torch-CUDA backend: the fused model in FP16 (or fp32) on any GPU torch can see.

The second GPU path, for machines without TensorRT. Same plumbing as the
TensorRT backend (:class:`mpv_srunet.trt.cuda.CudaPipeline`: pinned host buffers,
a dedicated inference stream, uploads overlapping inference), channels-last
tensors (what cuDNN's tensor-core kernels want) and optional CUDA graphs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import BackendError
from ..model import SRUNet, reparameterize_model

PRECISIONS = ("fp16", "fp32")


@dataclass(frozen=True)
class TorchCUDAOptions:
    """Options of the torch-CUDA backend. ``cudnn_benchmark`` lets cuDNN time its
    algorithms per input shape (first frame of each size is slower)."""

    precision: str = "fp16"
    device: int | None = None  # CUDA device index; default: the current one
    cuda_graphs: bool = False
    cudnn_benchmark: bool = True


def availability(name: str = "torch-cuda") -> str:
    from ..trt.cuda import cuda_unavailable_reason

    return cuda_unavailable_reason() or "ok"


class TorchCUDABackend:
    """Backend protocol: float32 NCHW [-1, 1] in and out, model in FP16 on the GPU."""

    def __init__(self, model: SRUNet, opts: TorchCUDAOptions) -> None:
        import torch

        from ..trt.cuda import CudaPipeline, GraphReplay, require_cuda

        if opts.precision not in PRECISIONS:
            raise BackendError(f"torch-cuda: unknown precision {opts.precision!r}; choose one of {', '.join(PRECISIONS)}")
        device = require_cuda("torch-cuda")
        if opts.device is not None:
            if not 0 <= opts.device < torch.cuda.device_count():
                raise BackendError(f"torch-cuda: no CUDA device {opts.device} (this machine has {torch.cuda.device_count()})")
            device = torch.device("cuda", opts.device)
            torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = opts.cudnn_benchmark
        m = model if model.deploy else reparameterize_model(model)
        dtype = torch.float16 if opts.precision == "fp16" else torch.float32
        self._model = copy.deepcopy(m).eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)
        self._dtype = dtype
        self.name = f"torch-cuda ({opts.precision})"
        compute = GraphReplay(self._forward) if opts.cuda_graphs else (lambda ins, stream: self._forward(ins))
        self._pipeline = CudaPipeline(compute, device)

    def _forward(self, inputs):
        import torch

        x = inputs[0].to(self._dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self._model(x).float().contiguous()

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self._pipeline.run([np.ascontiguousarray(x, dtype=np.float32)])

    def infer_iter(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Pipelined: the upload of frame n+1 overlaps inference of frame n."""
        return self._pipeline.run_iter([np.ascontiguousarray(f, dtype=np.float32)] for f in frames)

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        self._model = None


def create(model: SRUNet, **options: Any) -> TorchCUDABackend:
    """Registry factory: ``create_backend("torch-cuda", model, precision="fp16")``."""
    try:
        opts = replace(TorchCUDAOptions(), **options)
    except TypeError as e:
        raise BackendError(f"torch-cuda: {e}; valid options: {', '.join(TorchCUDAOptions.__dataclass_fields__)}") from None
    return TorchCUDABackend(model, opts)
