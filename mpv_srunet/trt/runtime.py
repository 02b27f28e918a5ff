"""Running a serialized TensorRT engine (TensorRT 10/11 named-tensor API).

Device buffers are torch CUDA tensors; the engine is enqueued with
``IExecutionContext.execute_async_v3`` on the pipeline's dedicated inference
stream after ``set_input_shape`` / ``set_tensor_address`` for every I/O tensor.
Never runs without TensorRT and a CUDA GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..errors import BackendError
from .builder import import_tensorrt

log = logging.getLogger(__name__)


class TRTRunner:
    """One engine, one execution context, one :class:`~.cuda.CudaPipeline`."""

    def __init__(self, engine_path: Path, input_names: Sequence[str], *, cuda_graphs: bool = False) -> None:
        import torch

        from ..gpu.cuda import CudaPipeline, GraphReplay, require_cuda

        trt = import_tensorrt()
        self.device = require_cuda("tensorrt")
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise BackendError(
                f"srunet.trt: {Path(engine_path).name} cannot be deserialized by TensorRT {trt.__version__} "
                "(stale or corrupt); rebuild it with: mpv-srunet build-engine --force"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if sorted(set(names) - set(outputs)) != sorted(input_names) or len(outputs) != 1:
            raise BackendError(f"srunet.trt: engine I/O {names} does not match the expected inputs {list(input_names)}")
        self.input_names, self.output_name = list(input_names), outputs[0]
        def torch_dtype(name: str):
            return torch.from_numpy(np.empty(0, trt.nptype(self.engine.get_tensor_dtype(name)))).dtype

        self._out_dtype = torch_dtype(self.output_name)
        self._in_dtypes = {n: torch_dtype(n) for n in self.input_names}
        self._shapes: dict[str, tuple[int, ...]] = {}
        compute = self._execute
        if cuda_graphs:
            graphed = GraphReplay(lambda ins: self._execute(ins, torch.cuda.current_stream()), one_shape=True)
            compute = graphed
        self.pipeline = CudaPipeline(compute, self.device)

    def profile_range(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(min shape, max shape) that profile 0 accepts for input ``name``."""
        fixed = tuple(self.engine.get_tensor_shape(name))
        if -1 not in fixed:  # static engine: no optimization profile
            return fixed, fixed
        mn, _opt, mx = self.engine.get_tensor_profile_shape(name, 0)
        return tuple(mn), tuple(mx)

    def _execute(self, dev_in, stream):
        import torch

        for name, t in zip(self.input_names, dev_in):
            if t.dtype != self._in_dtypes[name]:  # TensorRT would read the bytes as its own type
                raise BackendError(f"srunet.trt: input {name} is {t.dtype}, the engine takes {self._in_dtypes[name]}")
            shape = tuple(t.shape)
            if self._shapes.get(name) != shape:
                if not self.context.set_input_shape(name, shape):
                    raise BackendError(f"srunet.trt: input {name} shape {shape} is outside the engine's profile")
                self._shapes[name] = shape
            self.context.set_tensor_address(name, t.data_ptr())
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self._out_dtype,
                          device=self.device)
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendError("srunet.trt: execute_async_v3 failed (see the TensorRT log above)")
        return out

    def run(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return self.pipeline.run(arrays)

    def run_iter(self, frames: Iterable[Sequence[np.ndarray]]) -> Iterator[np.ndarray]:
        return self.pipeline.run_iter(frames)

    def close(self) -> None:
        if getattr(self, "pipeline", None) is not None:
            self.pipeline.close()
            self.pipeline = None  # type: ignore[assignment]
        self.context = self.engine = None
