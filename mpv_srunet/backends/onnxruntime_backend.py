"""ONNX Runtime on an ONNX export of the fused model.

Providers: TensorRT and CUDA EPs first when onnxruntime-gpu offers them, then CPU.
The export is cached per model checksum in the user cache dir (platformdirs), so
a second start skips the export.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable
from ..model import SRUNet
from ..onnx_export import INPUT_NAME, export_onnx

log = logging.getLogger(__name__)

_PREFERRED = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def availability(_name: str = "onnxruntime") -> str:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"onnxruntime not installed ({e})"
    return "ok"


def model_digest(model: SRUNet) -> str:
    """Checksum of config + fused weights: the cache key of the exported graph."""
    h = hashlib.sha256(repr(model.cfg).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_onnx(model: SRUNet, cache_dir: Path | None = None) -> Path:
    from platformdirs import user_cache_dir

    d = cache_dir or Path(user_cache_dir("mpv-srunet")) / "onnx"
    path = d / f"srunet-{model_digest(model)}-fp32.onnx"
    if not path.exists():
        log.info("exporting ONNX to %s", path)
        export_onnx(model, path)
    return path


class OnnxRuntimeBackend:
    def __init__(self, model: SRUNet, *, providers: list[str] | None = None, threads: int | None = None,
                 cache_dir: str | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable(f"onnxruntime: not installed ({e})") from None
        path = cached_onnx(model, Path(cache_dir) if cache_dir else None)
        have = ort.get_available_providers()
        chosen = [p for p in (providers or _PREFERRED) if p in have] or ["CPUExecutionProvider"]
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = int(threads)
        self._session = ort.InferenceSession(str(path), sess_options=so, providers=chosen)
        ep = self._session.get_providers()[0].replace("ExecutionProvider", "")
        self.name = f"onnxruntime ({ep})"

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def close(self) -> None:
        self._session = None


def create(model: SRUNet, **options: Any) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(model, **options)
