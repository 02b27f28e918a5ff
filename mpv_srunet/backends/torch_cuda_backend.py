"""torch-CUDA backend: the fused model in FP16 (or fp32) on any GPU torch can see.

The second GPU path, for machines without TensorRT. Same plumbing as the
TensorRT backend (:class:`mpv_srunet.gpu.cuda.CudaPipeline`: pinned host buffers,
a dedicated inference stream, uploads overlapping inference), channels-last
tensors (what cuDNN's tensor-core kernels want) and optional CUDA graphs.

Besides the float protocol it has a frame path, :meth:`TorchCUDABackend.infer_yuv420`:
8- or 10-bit 4:2:0 planes in, the upscaled frame's 8-bit 4:2:0 planes out, with both colour
conversions on the GPU (:class:`mpv_srunet.gpu.frames.YUV420FrameGraph`). It moves
1.5 bytes per pixel across PCIe instead of 12 (float RGB), and leaves the CPU only
the decode: the float path's CPU-side conversions cost several times the model
itself on a fast GPU (docs/tensorrt.md has the numbers).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import BackendError
from ..model import SRUNet, reparameterize_model
from ..colour import Colour

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
    from ..gpu.cuda import cuda_unavailable_reason

    return cuda_unavailable_reason() or "ok"


class TorchCUDABackend:
    """Backend protocol: float32 NCHW [-1, 1] in and out, model in FP16 on the GPU."""

    def __init__(self, model: SRUNet, opts: TorchCUDAOptions) -> None:
        import torch

        from ..gpu.cuda import CudaPipeline, require_cuda

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
        self._opts, self._device = opts, device
        self._scale = m.cfg.total_scale
        self.name = f"torch-cuda ({opts.precision})"
        self._pipeline = CudaPipeline(self._compute(self._forward), device)
        self._yuv_pipelines: dict[tuple[Colour, int], Any] = {}

    def _compute(self, fn):
        from ..gpu.cuda import GraphReplay

        return GraphReplay(fn) if self._opts.cuda_graphs else (lambda ins, stream: fn(ins))

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

    def infer_yuv420(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, colour: Colour) -> np.ndarray:
        """Planes (H, W), (H/2, W/2) of a frame with ``colour``'s matrix and range, 8-bit
        (uint8) or 10-bit (uint16 code values) -> the upscaled frame's 8-bit yuv420p planes,
        same matrix and range, as one (2H*3/2, 2W) uint8 array (PyAV's ``to_ndarray``
        layout, what a y4m frame holds)."""
        from ..gpu.frames import pad_yuv420, unpack_yuv420

        if self._pipeline is None:
            raise BackendError("torch-cuda: backend is closed")
        h, w = y.shape
        bits = 10 if y.dtype == np.uint16 else 8
        dtype = np.int16 if bits == 10 else np.uint8  # 10-bit code values fit int16, which torch handles fully
        planes = pad_yuv420(*(np.asarray(p).astype(dtype, copy=False) for p in (y, u, v)), SRUNet.multiple_of)
        pipeline = self._yuv_pipelines.get((colour, bits)) or self._yuv_pipeline(colour, bits)
        flat = pipeline.run(planes)
        hp, wp = planes[0].shape[2:]

        def up(n: int) -> int:
            return round(n * self._scale)

        return unpack_yuv420(flat, (up(hp), up(wp)), (up(h), up(w)))

    def _yuv_pipeline(self, colour: Colour, bits: int):
        import torch

        from ..gpu.cuda import CudaPipeline
        from ..gpu.frames import YUV420FrameGraph

        graph = YUV420FrameGraph(self._model, colour, self._opts.precision, bits).to(self._device)
        graph.model.to(memory_format=torch.channels_last)

        def forward(inputs):
            with torch.inference_mode():
                return graph(*inputs)

        self._yuv_pipelines[(colour, bits)] = pipeline = CudaPipeline(self._compute(forward), self._device)
        return pipeline

    def close(self) -> None:
        for p in [self._pipeline, *self._yuv_pipelines.values()]:
            if p is not None:
                p.close()
        self._pipeline, self._yuv_pipelines = None, {}
        self._model = None


def create(model: SRUNet, **options: Any) -> TorchCUDABackend:
    """Registry factory: ``create_backend("torch-cuda", model, precision="fp16")``."""
    try:
        opts = replace(TorchCUDAOptions(), **options)
    except TypeError as e:
        raise BackendError(f"torch-cuda: {e}; valid options: {', '.join(TorchCUDAOptions.__dataclass_fields__)}") from None
    return TorchCUDABackend(model, opts)
