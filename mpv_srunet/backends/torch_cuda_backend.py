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

``compile=True`` (the default; ``auto`` therefore tries it right after TensorRT) runs
both the float model and the frame-path graph through ``torch.compile`` (Inductor,
``max-autotune-no-cudagraphs``), compiled per frame size on a background thread while
frames keep coming from the eager model (:mod:`mpv_srunet.backends.compile`): no stall
at start or at a new size; a failed compile (no Triton, out of memory) stays eager. It
lives here, not in a module of its own, because it is the same runtime: same device,
tensors, pipeline and weights swap, only the kernels differ.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import BackendError
from ..model import SRUNet, reparameterize_model
from ..colour import Colour

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")


@dataclass(frozen=True)
class TorchCUDAOptions:
    """Options of the torch-CUDA backend. ``cudnn_benchmark`` lets cuDNN time its
    algorithms per input shape (first frame of each size is slower)."""

    precision: str = "fp16"
    device: int | None = None  # CUDA device index; default: the current one
    cuda_graphs: bool = False
    cudnn_benchmark: bool = True
    #: torch.compile (Inductor) per frame size in the background, eager until ready (mpv_srunet/backends/compile.py)
    compile: bool = True
    compile_mode: str = "max-autotune-no-cudagraphs"


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
        self._compilers: list[Any] = []
        self._compile_off: str | None = None  # why torch.compile cannot run here ("" when it can)
        self._run = self._compiler(self._model, "torch-cuda")
        if self._run is not None:
            self.name = f"torch-cuda ({opts.precision}, compiled)"
        self._pipeline = CudaPipeline(self._compute(self._forward, self._run), device)
        self._yuv_pipelines: dict[tuple[Colour, int], Any] = {}
        self._yuv_models: list[Any] = []  # the frame-path graphs' own model copies (load_weights updates them)

    def load_weights(self, model: SRUNet) -> bool:
        """Copy a same-config model's weights into the live modules in place (CUDA graphs stay valid)."""
        import torch

        sd = (model if model.deploy else reparameterize_model(model)).state_dict()
        with torch.no_grad():
            for m in [self._model, *self._yuv_models]:
                for k, v in m.state_dict().items():
                    v.copy_(sd[k])
        torch.cuda.synchronize(self._device)
        return True

    def _compiler(self, module, name: str):
        """A BackgroundCompiler for ``module`` (opts.compile), or None when off or unavailable here."""
        from .compile import MODES, BackgroundCompiler, compile_unavailable_reason

        if not self._opts.compile:
            return None
        if self._opts.compile_mode not in MODES:
            raise BackendError(f"torch-cuda: unknown compile_mode {self._opts.compile_mode!r}; choose one of {', '.join(MODES)}")
        if self._compile_off is None:  # checked once per backend
            self._compile_off = compile_unavailable_reason("cuda") or ""
            if self._compile_off:
                log.warning("torch-cuda: torch.compile unavailable (%s); eager only", self._compile_off)
        if self._compile_off:
            return None
        c = BackgroundCompiler(module, _call_inference, mode=self._opts.compile_mode, name=name, on_cuda_stream=True)
        self._compilers.append(c)
        return c

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Wait until no background compile is running (benchmarks, doctor); False on timeout."""
        return all(c.wait(timeout) for c in self._compilers)

    def _compute(self, fn, compiler=None):
        from ..gpu.cuda import GraphReplay

        if not self._opts.cuda_graphs:
            return lambda ins, stream: fn(ins)
        replay = GraphReplay(fn)
        if compiler is None:
            return replay

        def compute(ins, stream):
            # capture a frame size only once its path is settled (compiled, or compiling failed):
            # a graph captured on the eager path would keep replaying eager kernels
            return replay(ins, stream) if compiler.settled(*ins) else fn(ins)

        return compute

    def _forward(self, inputs):
        import torch

        x = inputs[0].to(self._dtype).contiguous(memory_format=torch.channels_last)
        y = self._run(x) if self._run is not None else _call_inference(self._model, x)
        return y.float().contiguous()

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
        self._yuv_models.append(graph.model)
        run = self._compiler(graph, f"torch-cuda frame path ({bits}-bit)")

        def forward(inputs):
            return run(*inputs) if run is not None else _call_inference(graph, *inputs)

        self._yuv_pipelines[(colour, bits)] = pipeline = CudaPipeline(self._compute(forward, run), self._device)
        return pipeline

    def close(self) -> None:
        for c in self._compilers:
            c.close()
        for p in [self._pipeline, *self._yuv_pipelines.values()]:
            if p is not None:
                p.close()
        self._pipeline, self._yuv_pipelines = None, {}
        self._model = None


def _call_inference(module, *inputs):
    """Every call of the model, eager or compiled, in the same context (Dynamo guards on it)."""
    import torch

    with torch.inference_mode():
        return module(*inputs)


def create(model: SRUNet, **options: Any) -> TorchCUDABackend:
    """Registry factory: ``create_backend("torch-cuda", model, precision="fp16")``."""
    try:
        opts = replace(TorchCUDAOptions(), **options)
    except TypeError as e:
        raise BackendError(f"torch-cuda: {e}; valid options: {', '.join(TorchCUDAOptions.__dataclass_fields__)}") from None
    return TorchCUDABackend(model, opts)
