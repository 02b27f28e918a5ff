"""PyTorch on the CPU: the fused model, channels-last, fp32 or bf16, optionally compiled.

bf16 (autocast) roughly doubles throughput on CPUs with AVX512-BF16/AMX; its
quality cost is measured in the README ("CPU precision"). ``precision="auto"``
picks bf16 only where the CPU has native bf16 dot products.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch

from ..errors import BackendError
from ..model import SRUNet, reparameterize_model

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 convolutions natively (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class TorchCPUBackend:
    """Fused SR-UNet in eager PyTorch on the CPU."""

    def __init__(self, model: SRUNet, *, precision: str = "auto", threads: int | None = None,
                 compile: bool | str = False) -> None:
        if precision not in PRECISIONS:
            raise BackendError(f"torch-cpu: unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if precision == "auto":
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
        if threads:
            torch.set_num_threads(int(threads))
        self.precision = precision
        self.name = f"torch-cpu ({precision})"
        m = model if model.deploy else reparameterize_model(model)
        self._model = copy.deepcopy(m).eval().float().to(memory_format=torch.channels_last)
        self._compiled = compile is True
        self._run: Any = None  # a BackgroundCompiler with compile="background"
        if compile == "background":
            # eager frames while Inductor compiles each new frame size on a thread (weights not frozen,
            # so load_weights still reaches it); the same code path as torch-cuda's compile option
            from .compile import BackgroundCompiler

            self._run = BackgroundCompiler(self._model, self._call, mode="default", name="torch-cpu")
            self.name = f"torch-cpu ({precision}, compiling in the background)"
        elif compile is True:
            # Inductor with frozen weights fuses ReLU into oneDNN convs and drops the concat copies:
            # ~1.4x faster here, but the first frame of each size pays a compile of a minute or more.
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            self._model = torch.compile(self._model, dynamic=False)
            self.name = f"torch-cpu ({precision}, compiled)"

    def infer(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).contiguous(memory_format=torch.channels_last)
        y = self._run(t) if self._run is not None else self._call(self._model, t)
        return y.float().contiguous().numpy()

    def _call(self, model: Any, t: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return model(t)

    def load_weights(self, model: SRUNet) -> bool:
        """Copy a same-config model's weights into the live module in place; False when compiled
        (Inductor froze the old weights into its graph: the caller builds a new backend)."""
        if self._compiled:
            return False
        sd = (model if model.deploy else reparameterize_model(model)).state_dict()
        with torch.no_grad():
            for k, v in self._model.state_dict().items():
                v.copy_(sd[k])
        return True

    def close(self) -> None:
        if self._run is not None:
            self._run.close()
        self._model = None  # type: ignore[assignment]


def create_cpu(model: SRUNet, **options: Any) -> TorchCPUBackend:
    return TorchCPUBackend(model, **options)
