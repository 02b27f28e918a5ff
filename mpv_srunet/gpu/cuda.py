"""Host <-> GPU plumbing shared by the TensorRT and torch-CUDA backends.

Why three CUDA streams: a frame's upload (H2D), inference and download (D2H) are
ordered for that frame, but the upload of frame n+1 and the download of frame
n-1 can run while frame n is being inferred. With one stream the copy engines
would sit idle during inference. Device buffers are torch CUDA tensors (pycuda
is not needed); host staging buffers are pinned, which is what lets
``copy_(..., non_blocking=True)`` be truly asynchronous.

Nothing here runs without a CUDA GPU; it is written against torch's CUDA API
(``torch.cuda.Stream``, ``Event``, ``CUDAGraph``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..errors import BackendUnavailable

#: compute(device_inputs, stream) -> device output, enqueued on ``stream``.
ComputeFn = Callable[[list[torch.Tensor], torch.cuda.Stream], torch.Tensor]


def cuda_unavailable_reason() -> str | None:
    """None when torch can use a CUDA GPU, else a one-line reason."""
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support; install a CUDA build of torch"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible (torch.cuda.is_available() is False; check the NVIDIA driver)"
    return None


def require_cuda(what: str) -> torch.device:
    reason = cuda_unavailable_reason()
    if reason:
        raise BackendUnavailable(f"{what}: {reason}")
    return torch.device("cuda", torch.cuda.current_device())


@dataclass
class _Slot:
    """One in-flight frame: pinned host buffers, device inputs, and its events."""

    host_in: list[torch.Tensor] = field(default_factory=list)
    dev_in: list[torch.Tensor] = field(default_factory=list)
    host_out: torch.Tensor | None = None
    dev_out: torch.Tensor | None = None  # kept alive until the download finished
    uploaded: torch.cuda.Event | None = None
    computed: torch.cuda.Event | None = None
    done: torch.cuda.Event | None = None
    busy: bool = False  # launched and not yet collected


class CudaPipeline:
    """Runs ``compute`` on its own stream with async pinned transfers, one or many frames."""

    def __init__(self, compute: ComputeFn, device: torch.device, slots: int = 2) -> None:
        self._compute = compute
        self.device = device
        self.h2d = torch.cuda.Stream(device)
        self.stream = torch.cuda.Stream(device)  # inference
        self.d2h = torch.cuda.Stream(device)
        self._slots = [_Slot() for _ in range(max(1, slots))]
        for s in self._slots:
            s.uploaded, s.computed, s.done = (torch.cuda.Event() for _ in range(3))

    def _stage(self, slot: _Slot, arrays: Sequence[np.ndarray]) -> None:
        """Copy host arrays into the slot's pinned buffers and enqueue their upload."""
        if [(tuple(t.shape), t.dtype) for t in slot.host_in] != [(a.shape, _torch_dtype(a)) for a in arrays]:
            slot.host_in = [torch.empty(a.shape, dtype=_torch_dtype(a), pin_memory=True) for a in arrays]
            slot.dev_in = [torch.empty(a.shape, dtype=_torch_dtype(a), device=self.device) for a in arrays]
        for host, a in zip(slot.host_in, arrays):
            host.numpy()[...] = a
        with torch.cuda.stream(self.h2d):
            for dev, host in zip(slot.dev_in, slot.host_in):
                dev.copy_(host, non_blocking=True)
            slot.uploaded.record(self.h2d)

    def _launch(self, slot: _Slot, arrays: Sequence[np.ndarray]) -> None:
        if slot.busy:  # left in flight by an abandoned run_iter: its buffers are still in use
            slot.done.synchronize()
        slot.busy = True
        self._stage(slot, arrays)
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(slot.uploaded)
            out = self._compute(slot.dev_in, self.stream)
            slot.computed.record(self.stream)
        if slot.host_out is None or slot.host_out.shape != out.shape or slot.host_out.dtype != out.dtype:
            slot.host_out = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        with torch.cuda.stream(self.d2h):
            self.d2h.wait_event(slot.computed)
            slot.host_out.copy_(out, non_blocking=True)
            slot.done.record(self.d2h)
        slot.dev_out = out

    def _collect(self, slot: _Slot) -> np.ndarray:
        slot.done.synchronize()
        slot.dev_out, slot.busy = None, False
        return slot.host_out.numpy().copy()

    def run(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """One frame, synchronously: upload, compute, download."""
        slot = self._slots[0]
        self._launch(slot, arrays)
        return self._collect(slot)

    def run_iter(self, frames: Iterable[Sequence[np.ndarray]]) -> Iterator[np.ndarray]:
        """Many frames, in order; frame n+1 uploads while frame n computes."""
        prev: _Slot | None = None
        for i, arrays in enumerate(frames):
            slot = self._slots[i % len(self._slots)]
            self._launch(slot, arrays)
            if prev is not None:
                yield self._collect(prev)
            prev = slot
        if prev is not None:
            yield self._collect(prev)

    def close(self) -> None:
        torch.cuda.synchronize(self.device)
        self._slots = []


class GraphReplay:
    """Optional CUDA-graph wrapper: captures ``fn`` once per input shape, replays it.

    Launch overhead matters at a few ms per frame (dozens of kernels). Inputs are
    copied into static buffers and the static output is cloned on the same stream,
    so the pipeline's next frame cannot overwrite a result still being downloaded.
    """

    def __init__(self, fn: Callable[[list[torch.Tensor]], torch.Tensor], warmup: int = 2, *, one_shape: bool = False) -> None:
        self._fn = fn
        self._warmup = warmup
        # one_shape: ``fn`` runs on one TensorRT execution context, whose input shapes and
        # tensor addresses a capture bakes in; a capture at a new shape re-configures that
        # context and so invalidates the earlier graphs: keep only the latest one
        self._one_shape = one_shape
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}

    def _capture(self, inputs: list[torch.Tensor], stream: torch.cuda.Stream):
        static_in = [t.clone() for t in inputs]
        stream.synchronize()
        side = torch.cuda.Stream(inputs[0].device)
        side.wait_stream(stream)
        with torch.cuda.stream(side):
            for _ in range(self._warmup):  # lets cuDNN/TensorRT pick and set up kernels before capture
                self._fn(static_in)
        side.synchronize()
        graph = torch.cuda.CUDAGraph()
        # capture on the inputs' device (torch's default capture stream belongs to whichever
        # device was current when it was first made) and only fail on this thread's unsafe
        # calls: the filter's decode/encode threads keep running (trtexec does the same)
        with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
            static_out = self._fn(static_in)
        return graph, static_in, static_out

    def __call__(self, inputs: list[torch.Tensor], stream: torch.cuda.Stream) -> torch.Tensor:
        key = tuple((tuple(t.shape), t.dtype) for t in inputs)
        if key not in self._graphs:
            if self._one_shape:
                self._graphs.clear()
            self._graphs[key] = self._capture(inputs, stream)
        graph, static_in, static_out = self._graphs[key]
        for s, t in zip(static_in, inputs):
            s.copy_(t, non_blocking=True)
        graph.replay()
        return static_out.clone()


def _torch_dtype(a: np.ndarray) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=a.dtype)).dtype
