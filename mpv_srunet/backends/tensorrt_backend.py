"""TensorRT backend: a cached FP16 engine run with torch CUDA buffers on a dedicated stream.

``create(model, **options)`` finds (or builds, once, under a lock) the engine for
the model's float ``rgb`` graph and the requested shape profile in the engine
cache (see :mod:`mpv_srunet.trt.cache`), then runs frames through a three-stream
pipeline (upload of frame n+1 overlaps inference of frame n). ``TensorRTFrameEngine``
is the faster path for players: uint8 RGB or raw YUV 4:2:0 planes in, uint8 RGB
out, colour conversion on the GPU.

Needs TensorRT >= 10 and a CUDA GPU; elsewhere creation raises
:class:`BackendUnavailable` with a one-line reason (``auto`` then moves on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import BackendError
from ..model import SRUNet
from ..trt.cache import ShapeProfile, default_engine_dir, make_profile, read_key, stale_reasons
from ..colour import Colour
from ..trt.graph import GraphSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorRTOptions:
    """Options of the TensorRT backend (all keyword arguments of :func:`create`).

    Tuning: keep ``opt_size`` at the size you watch most (TensorRT picks kernels
    for it); a narrow min..max range builds faster and can run a little faster.
    ``cuda_graphs`` saves the per-kernel launch cost (worth it below ~5 ms/frame).
    """

    precision: str = "fp16"  # fp16 (FP16 graph) | fp32
    min_size: str = "640x360"  # smallest frame (WxH) the engine accepts
    opt_size: str = "960x540"  # the size TensorRT tunes for
    max_size: str = "1920x1080"  # largest frame
    max_batch: int = 1
    static_size: str | None = None  # one fixed size instead of a range
    engine: str | None = None  # an explicit engine file (its sidecar must match this machine)
    cache_dir: str | None = None  # default: $MPV_SRUNET_ENGINE_DIR or the user cache dir
    workspace_mb: int = 2048
    opt_level: int | None = None  # TensorRT builder optimization level (0-5; default 3)
    cuda_graphs: bool = False

    def profile(self, multiple: int) -> ShapeProfile:
        if self.static_size:
            return make_profile(self.static_size, self.static_size, self.static_size, multiple)
        return make_profile(self.min_size, self.opt_size, self.max_size, multiple, self.max_batch)


def availability(name: str = "tensorrt") -> str:
    """"ok" or why TensorRT cannot run here (no model needed)."""
    from ..trt.builder import probe_machine, unavailable_reason

    return unavailable_reason(probe_machine()) or "ok"


def _engine_for(model: SRUNet, spec: GraphSpec, opts: TensorRTOptions) -> Path:
    from ..trt.builder import ensure_engine, require_tensorrt

    machine = require_tensorrt("tensorrt")
    if opts.engine:
        path = Path(opts.engine)
        reasons = stale_reasons(read_key(path), machine) if path.exists() else ["file not found"]
        if reasons:
            raise BackendError(f"srunet.trt: engine {path} cannot run here: {'; '.join(reasons)}; "
                               "rebuild it with mpv-srunet build-engine")
        return path
    cache_dir = Path(opts.cache_dir) if opts.cache_dir else default_engine_dir()
    return ensure_engine(model, spec, opts.profile(spec.multiple_of), cache_dir, workspace_mb=opts.workspace_mb,
                         opt_level=opts.opt_level, machine=machine)


class TensorRTBackend:
    """The Backend protocol on a TensorRT engine of the float ``rgb`` graph."""

    def __init__(self, model: SRUNet, opts: TensorRTOptions) -> None:
        from ..trt.runtime import TRTRunner

        spec = GraphSpec("rgb", opts.precision)
        self.name = f"tensorrt ({opts.precision})"
        self.engine_path = _engine_for(model, spec, opts)
        self._runner = TRTRunner(self.engine_path, spec.input_names, cuda_graphs=opts.cuda_graphs)
        (_, _, self._min_h, self._min_w), (self._max_b, _, self._max_h, self._max_w) = self._runner.profile_range("input")

    def _check(self, x: np.ndarray) -> None:
        n, c, h, w = x.shape
        if not (self._min_h <= h <= self._max_h and self._min_w <= w <= self._max_w):
            raise BackendError(
                f"srunet.trt: frame {w}x{h} is outside this engine's profile "
                f"{self._min_w}x{self._min_h}..{self._max_w}x{self._max_h}; rebuild with a wider --min/--max"
            )

    def infer(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW [-1, 1] -> float32 NCHW; batches larger than the profile run in chunks."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._check(x)
        chunks = [x[i:i + self._max_b] for i in range(0, x.shape[0], self._max_b)]
        return np.concatenate(list(self._runner.run_iter([c] for c in chunks)), axis=0)

    def infer_iter(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Pipelined: the upload of frame n+1 overlaps inference of frame n."""
        def checked():
            for f in frames:
                f = np.ascontiguousarray(f, dtype=np.float32)
                self._check(f)
                yield [f]

        return self._runner.run_iter(checked())

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None


class TensorRTFrameEngine:
    """uint8 RGB or YUV 4:2:0 planes in, uint8 RGB (HxWx3) out; conversions inside the engine.

    ``input_format``: ``rgb24``, ``yuv420p`` (8-bit planes) or ``yuv420p10``
    (10-bit code values, passed as uint16 planes). Frames of any even size inside
    the profile are edge-padded to a multiple of 8 and the output is cropped.
    """

    def __init__(self, model: SRUNet, input_format: str = "yuv420p", colour: Colour | None = None,
                 **options: Any) -> None:
        from ..trt.runtime import TRTRunner

        opts = TensorRTOptions(**options)
        self.spec = GraphSpec(input_format, opts.precision, colour or Colour())
        self.scale = model.cfg.total_scale
        self.engine_path = _engine_for(model, self.spec, opts)
        self._runner = TRTRunner(self.engine_path, self.spec.input_names, cuda_graphs=opts.cuda_graphs)

    def _crop(self, out: np.ndarray, h: int, w: int) -> np.ndarray:
        return out[0, : int(round(h * self.scale)), : int(round(w * self.scale))]

    def upscale_rgb24(self, rgb: np.ndarray) -> np.ndarray:
        if self.spec.input_format != "rgb24":
            raise BackendError(f"srunet.trt: this engine takes {self.spec.input_format}, not rgb24")
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise BackendError(f"srunet.trt: rgb24 engines take uint8 HxWx3 frames, got {rgb.dtype} {rgb.shape}")
        h, w, _ = rgb.shape
        m = self.spec.multiple_of
        x = np.pad(rgb, ((0, -h % m), (0, -w % m), (0, 0)), mode="edge")[None]
        return self._crop(self._runner.run([x]), h, w)

    def upscale_yuv420(self, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        from ..gpu.frames import pad_yuv420

        if not self.spec.is_yuv:
            raise BackendError(f"srunet.trt: this engine takes {self.spec.input_format}, not YUV planes")
        dtype = np.float16 if self.spec.bit_depth == 10 else np.uint8
        planes = [p.astype(dtype, copy=False) for p in pad_yuv420(y, u, v, self.spec.multiple_of)]
        return self._crop(self._runner.run(planes), *y.shape)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None


def create(model: SRUNet, **options: Any) -> TensorRTBackend:
    """Registry factory: ``create_backend("tensorrt", model, precision="fp16", ...)``."""
    try:
        opts = replace(TensorRTOptions(), **options)
    except TypeError as e:
        raise BackendError(f"srunet.trt: {e}; valid options: {', '.join(TensorRTOptions.__dataclass_fields__)}") from None
    return TensorRTBackend(model, opts)
