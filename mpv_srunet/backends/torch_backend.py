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
                 compile: bool = False) -> None:
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
        if compile:
            # Inductor with frozen weights fuses ReLU into oneDNN convs and drops the concat copies:
            # ~1.4x faster here, but the first frame of each size pays a compile of a minute or more.
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            self._model = torch.compile(self._model, dynamic=False)
            self.name = f"torch-cpu ({precision}, compiled)"

    def infer(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            y = self._model(t)
        return y.float().contiguous().numpy()

    def close(self) -> None:
        self._model = None  # type: ignore[assignment]


def create_cpu(model: SRUNet, **options: Any) -> TorchCPUBackend:
    return TorchCPUBackend(model, **options)
