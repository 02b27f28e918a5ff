"""The upscalers being compared: bicubic, SR-UNet weights files and mpv's own scalers.

Bicubic is torch's ``interpolate(mode="bicubic", align_corners=False)``, the very
base SR-UNet adds its residual to, so "SR-UNet minus bicubic" isolates what the
network contributes. mpv candidates (built-in scalers, user shaders) are rendered by the
real mpv from the encoded stream, a whole stream at a time (:mod:`.mpv_scalers`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import UsageError, WeightsError
from ..metrics.grid import bicubic_to  # SR-UNet's own bicubic residual base

log = logging.getLogger(__name__)

BICUBIC = "bicubic"
NATIVE = "native"
MPV = "mpv"


@dataclass(frozen=True)
class Candidate:
    """One column of the comparison."""

    name: str  # label in tables, plots and crops
    weights: Path | None  # None: bicubic or native
    note: str = ""  # provenance shown in the report
    kind: str = "srunet"  # "bicubic", "srunet", "mpv" or "native" (the full-size stream, not upscaled)
    mpv_args: tuple[str, ...] = ()  # kind "mpv": the mpv options that pick the scaler

    @property
    def is_bicubic(self) -> bool:
        return self.kind == BICUBIC


def bicubic_candidate() -> Candidate:
    return Candidate(BICUBIC, None, "torch bicubic, align_corners=False", BICUBIC)


def native_candidate(height: int) -> Candidate:
    return Candidate(f"native-{height}p", None, f"the {height}p reference itself encoded at the same CRF (no upscaling)",
                     NATIVE)


def mpv_builtin_candidate(name: str) -> Candidate:
    """mpv's built-in scaling as configured by ``name`` (a key of ``mpv_scalers.BUILTIN``)."""
    from .mpv_scalers import builtin_args

    args = builtin_args(name)
    return Candidate(f"mpv-{name}", None, f"mpv {' '.join(args) or '(defaults: bilinear)'}", MPV, args)


def mpv_shader_candidate(spec: str) -> Candidate:
    """A user shader for mpv from ``NAME=PATH`` (run on top of ``--profile=gpu-hq``)."""
    from .mpv_scalers import shader_args

    name, args, path = shader_args(spec)
    return Candidate(f"mpv-{name}", None, f"mpv {' '.join(args[:-1])} + shader {path.name}", MPV, args)


def weights_candidate(path: str | Path, name: str | None = None, note: str = "",
                      scales: tuple[float, ...] = (2.0,)) -> Candidate:
    """A candidate from a weights file (ours or an authors' .pth); checks it exists and its scale."""
    from ..weights import read_weights

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: no such weights file (from --weights / --authors)")
    _, cfg, _, _ = read_weights(p)
    if not any(abs(cfg.total_scale - s) < 1e-6 for s in scales):
        want = " or ".join(f"{s:g}x" for s in scales)
        raise UsageError(f"{p}: upscales by {cfg.total_scale:g}x; this experiment compares {want} models")
    return Candidate(name or p.stem, p, note or f"{p.name}")


def unique_names(cands: Sequence[Candidate]) -> list[Candidate]:
    """Disambiguate equal labels (two files both named 'model.safetensors')."""
    seen: dict[str, int] = {}
    out = []
    for c in cands:
        n = seen.get(c.name, 0)
        seen[c.name] = n + 1
        out.append(c if n == 0 else replace(c, name=f"{c.name}#{n + 1}"))
    return out


class Upscalers:
    """Builds each weights file's :class:`~mpv_srunet.Upscaler` once and reuses it."""

    def __init__(self, backend: str = "auto", **backend_options: Any) -> None:
        self.backend, self.options = backend, backend_options
        self._cache: dict[Path, Any] = {}

    def get(self, cand: Candidate) -> Any:
        from ..filter import Upscaler

        assert cand.weights is not None
        if cand.weights not in self._cache:
            self._cache[cand.weights] = Upscaler(cand.weights, backend=self.backend, **self.options)
            log.info("%s: backend %s", cand.name, self._cache[cand.weights].backend_name)
        return self._cache[cand.weights]

    def close(self) -> None:
        for up in self._cache.values():
            up.close()
        self._cache.clear()


def bicubic_x2(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> uint8 2Hx2Wx3 with the same bicubic as SR-UNet's residual base."""
    return bicubic_to(rgb, (rgb.shape[1] * 2, rgb.shape[0] * 2))


def upscale_one(cand: Candidate, rgb: np.ndarray, ups: Upscalers, size: tuple[int, int] | None = None) -> np.ndarray:
    """One decoded frame through one candidate, to ``size`` (W, H; default 2x).

    A 2x network aimed at a smaller target (the paper's 720p -> 1440p -> 1080p) is
    followed by an antialiased PIL bicubic downscale, as the authors' 1.5x model does.
    """
    from PIL import Image

    size = size or (rgb.shape[1] * 2, rgb.shape[0] * 2)
    if cand.kind == NATIVE:
        return rgb
    if cand.is_bicubic:
        return bicubic_to(rgb, size)
    out = ups.get(cand).upscale(rgb)
    if (out.shape[1], out.shape[0]) != size:
        out = np.asarray(Image.fromarray(out).resize(size, Image.BICUBIC))
    return out
