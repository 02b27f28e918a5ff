"""VMAF (Netflix, model vmaf_v0.6.1) through libvmaf in the ``imageio-ffmpeg`` static ffmpeg.

Debian's ffmpeg is built without libvmaf; the static build inside the
``imageio-ffmpeg`` wheel has it, so we run that binary as a subprocess.

Range pitfall: feeding ``-pix_fmt gray`` (or any format libvmaf does not take)
makes ffmpeg insert a scaler that may expand limited-range luma to full range,
silently changing every score. We therefore write the 8-bit Y planes ourselves as
raw ``yuv420p`` (chroma set to 128; VMAF reads luma only), a format libvmaf accepts
as is, so no conversion can happen. Input 0 is the distorted video, input 1 the
reference, as libvmaf expects.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from . import MetricUnavailable

MODEL = "vmaf_v0.6.1"
SETTING = f"libvmaf {MODEL} (imageio-ffmpeg static ffmpeg), 8-bit BT.709 limited-range Y planes fed as raw yuv420p"
INSTALL_HINT = "pip install imageio-ffmpeg"


@dataclass(frozen=True)
class VmafResult:
    per_frame: list[float]
    mean: float


def ffmpeg_with_vmaf() -> str:
    """Path of an ffmpeg that has the libvmaf filter, or :class:`MetricUnavailable` saying why."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise MetricUnavailable(f"VMAF needs the imageio-ffmpeg wheel's static ffmpeg (libvmaf); {INSTALL_HINT}") from None
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        raise MetricUnavailable(f"imageio-ffmpeg has no ffmpeg binary for this platform ({e})") from None
    return _check_libvmaf(exe)


def _check_libvmaf(exe: str) -> str:
    try:
        res = subprocess.run([exe, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MetricUnavailable(f"cannot run {exe}: {e}") from None
    if " libvmaf " not in res.stdout:
        raise MetricUnavailable(f"{exe} was built without libvmaf (no 'libvmaf' filter)")
    return exe


def vmaf_available() -> tuple[bool, str]:
    """(True, ffmpeg path) or (False, reason) - for marking the VMAF column unavailable."""
    try:
        return True, ffmpeg_with_vmaf()
    except MetricUnavailable as e:
        return False, str(e)


def _write_y_as_yuv420p(path: Path, planes: Sequence[np.ndarray]) -> None:
    h, w = planes[0].shape
    chroma = np.full((h // 2) * (w // 2) * 2, 128, dtype=np.uint8).tobytes()
    with open(path, "wb") as f:
        for y in planes:
            if y.shape != (h, w) or y.dtype != np.uint8:
                raise ValueError(f"Y planes must all be uint8 {w}x{h}, got {y.dtype} {y.shape[::-1]}")
            f.write(np.ascontiguousarray(y).tobytes())
            f.write(chroma)


def vmaf_y(
    ref_y: Sequence[np.ndarray], dist_y: Sequence[np.ndarray], *, fps: float = 24.0, threads: int = 1,
    ffmpeg: str | None = None,
) -> VmafResult:
    """VMAF between two sequences of uint8 HxW luma planes (even W and H)."""
    if len(ref_y) != len(dist_y) or not ref_y:
        raise ValueError(f"VMAF needs equal, non-zero frame counts; got {len(ref_y)} and {len(dist_y)}")
    h, w = ref_y[0].shape
    if h % 2 or w % 2:
        raise ValueError(f"VMAF input must have even dimensions, got {w}x{h}")
    exe = ffmpeg or ffmpeg_with_vmaf()
    with tempfile.TemporaryDirectory(prefix="srunet-vmaf-") as tmp:
        d = Path(tmp)
        _write_y_as_yuv420p(d / "dist.yuv", dist_y)
        _write_y_as_yuv420p(d / "ref.yuv", ref_y)
        raw = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{w}x{h}", "-r", f"{fps:g}"]
        cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", *raw, "-i", "dist.yuv", *raw, "-i", "ref.yuv",
               "-lavfi", f"[0:v][1:v]libvmaf=model=version={MODEL}:log_fmt=json:log_path=vmaf.json:n_threads={threads}",
               "-f", "null", "-"]
        return _run_and_parse(cmd, d, len(ref_y))


def _run_and_parse(cmd: list[str], cwd: Path, n: int) -> VmafResult:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "AV_LOG_FORCE_NOCOLOR": "1"})
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise MetricUnavailable(f"libvmaf failed (exit {res.returncode}): {tail}")
    log = json.loads((cwd / "vmaf.json").read_text())
    per_frame = [float(f["metrics"]["vmaf"]) for f in log["frames"]]
    if len(per_frame) != n:
        raise MetricUnavailable(f"libvmaf scored {len(per_frame)} frames, expected {n}")
    return VmafResult(per_frame, float(log["pooled_metrics"]["vmaf"]["mean"]))


def vmaf_files(dist: str | os.PathLike[str], ref: str | os.PathLike[str], *, threads: int = 1) -> float:
    """libvmaf's own pooled score on two video files decoded by ffmpeg itself (for checks)."""
    exe = ffmpeg_with_vmaf()
    with tempfile.TemporaryDirectory(prefix="srunet-vmaf-") as tmp:
        cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(Path(dist).resolve()),
               "-i", str(Path(ref).resolve()), "-lavfi",
               f"[0:v][1:v]libvmaf=model=version={MODEL}:log_fmt=json:log_path=vmaf.json:n_threads={threads}",
               "-f", "null", "-"]
        res = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if res.returncode != 0:
            raise MetricUnavailable(f"libvmaf failed: {(res.stderr.strip().splitlines() or ['?'])[-1][:200]}")
        return float(json.loads((Path(tmp) / "vmaf.json").read_text())["pooled_metrics"]["vmaf"]["mean"])
