"""mpv's own scalers as eval candidates: what mpv users watch today, rendered by the real mpv.

mpv opens the very H.265 stream every other candidate starts from (so it decodes the
same planes, with libavcodec) and renders it with its GPU renderer to the reference
size: ``--vf=gpu=w=W:h=H`` (the ``--vo=gpu`` renderer and its options: ``--scale``,
``--profile=gpu-hq``, ``--glsl-shaders``), written losslessly as FFV1 ``bgr0`` RGB and
read back with PyAV. Built-in settings need no file; user shaders (FSRCNNX, ArtCNN, RAVU,
...) are given by path and run on top of ``--profile=gpu-hq``, as their users run them.

Headless machines get a private Xvfb (``-displayfd``) and a private HOME per render,
so the user's mpv config is never read (``--no-config`` too). Mesa llvmpipe under load
now and then renders a black or sheared frame with exit status 0: every rendered frame
is checked against the CPU bicubic of the same decoded frame (PSNR-Y above
:data:`MIN_PSNR_Y`, no row off by more than :data:`MAX_ROW_LEVELS` and 6x the median row),
and a render that fails is run again, :data:`ATTEMPTS` times in all, before the candidate
fails. Most of those failures come from float intermediate textures (see
:data:`SOFTWARE_BUILTIN_ARGS`), which the built-in scalers avoid under Xvfb.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import BackendUnavailable, UsageError
from ..metrics.grid import bicubic_to
from ..metrics.image import psnr, rgb_to_y

#: built-in mpv settings offered by ``eval run --mpv``: name -> mpv options (mpv 0.35 defaults: bilinear)
BUILTIN: dict[str, tuple[str, ...]] = {
    "default": (),
    "lanczos": ("--scale=lanczos", "--cscale=lanczos"),
    "gpu-hq": ("--profile=gpu-hq",),
}
SHADER_BASE = ("--profile=gpu-hq",)  # user shaders run on top of this
#: mpv 0.35's ``--vf=gpu`` on Mesa (llvmpipe and softpipe alike, ``LP_NUM_THREADS=0`` too) renders a
#: whole run black, exit status 0, whenever its intermediate textures are float (the default
#: ``rgba16f``; ``rgba32f`` the same) and the machine is loaded: 9 of 20 lanczos runs, 4 of 10
#: gpu-hq runs with 6 busy processes on 2 cores; with 16-bit unorm textures 0 of 30. Bilinear
#: (``default``) has no intermediate pass and never did. So under Xvfb the built-in scalers render
#: with ``rgba16`` (it only clips lanczos ringing between passes: 56-58 dB PSNR-Y against the float
#: render of the same frames, a few pixels off by up to 18 levels). User shaders keep float
#: textures (FSRCNNX stores signed features in them) and rely on the frame check and retries.
SOFTWARE_BUILTIN_ARGS = ("--fbo-format=rgba16",)
ATTEMPTS = 6
MIN_PSNR_Y = 25.0  # any real 2x rendering is within ~33-45 dB of bicubic; black/sheared frames far below
MAX_ROW_LEVELS = 6.0  # mean |Y - bicubic Y| of any one row, in 8-bit levels (and 6x the median row)
TIMEOUT_S = 1800.0  # one render of one stream (llvmpipe runs big shaders at seconds per 1080p frame)


class MpvRenderError(BackendUnavailable):
    """mpv could not render a candidate (no mpv, no display, or invalid output every time)."""

    prefix = "srunet.eval.mpv"


def builtin_args(name: str) -> tuple[str, ...]:
    if name not in BUILTIN:
        raise UsageError(f"--mpv {name!r}: expected one of {', '.join(BUILTIN)}")
    return (*BUILTIN[name], *SOFTWARE_BUILTIN_ARGS) if software_rendering() and BUILTIN[name] else BUILTIN[name]


def software_rendering() -> bool:
    """Whether renders go to a private Xvfb (Mesa's software OpenGL), as :func:`private_display` does."""
    return shutil.which("Xvfb") is not None


def shader_args(spec: str) -> tuple[str, tuple[str, ...], Path]:
    """``NAME=PATH`` (or just PATH: the name is its stem) -> (name, mpv options, path)."""
    name, sep, path = spec.partition("=")
    p = Path(path if sep else name)
    name = name if sep else p.stem
    if not name or not p.is_file():
        raise UsageError(f"--mpv-shader {spec!r}: expected NAME=PATH to an mpv user shader (.glsl/.hook) file")
    return name, (*SHADER_BASE, f"--glsl-shaders={p.resolve()}"), p


def check_tools() -> str:
    """Path of mpv; raises one clear line when mpv or a display (Xvfb or $DISPLAY) is missing."""
    mpv = shutil.which("mpv")
    if mpv is None:
        raise MpvRenderError("mpv candidates need mpv on PATH (Debian: apt install mpv)")
    if shutil.which("Xvfb") is None and not os.environ.get("DISPLAY"):
        raise MpvRenderError("mpv candidates need an X display: install Xvfb (Debian: apt install xvfb) or set DISPLAY")
    return mpv


def render_stream(mpv_args: Sequence[str], video: Path, decoded: Sequence[np.ndarray], size: tuple[int, int],
                  label: str) -> list[np.ndarray]:
    """Every frame of ``video`` through mpv with ``mpv_args`` at ``size`` (W, H), as uint8 RGB.

    ``decoded``: the frames of ``video`` as eval decodes them; their bicubic upscale is the
    check each rendered frame must pass. Raises :class:`MpvRenderError` after :data:`ATTEMPTS`.
    """
    mpv = check_tools()
    refs = [rgb_to_y(bicubic_to(f, size)) for f in decoded]
    problems = []
    for attempt in range(1, ATTEMPTS + 1):
        with tempfile.TemporaryDirectory(prefix="srunet-mpv-") as tmp:
            work, out = Path(tmp), Path(tmp) / "out.mkv"
            try:
                with private_display(work) as env:
                    cmd = [mpv, "--no-config", "--msg-level=all=error", "--no-audio", "--no-sub", "--demuxer=lavf",
                           f"--vf=gpu=w={size[0]}:h={size[1]}", *mpv_args, f"--o={out}", "--ovc=ffv1",
                           "--ovcopts=pixel_format=bgr0", str(video)]
                    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                                       stdin=subprocess.DEVNULL)
                if r.returncode != 0 or not out.is_file():
                    raise _Invalid(f"mpv exit {r.returncode}: {_last_line(r.stderr or r.stdout)}")
                frames = _read_rgb(out)
                why = _frames_problem(frames, refs, size)
                if why is None:
                    return frames
                raise _Invalid(why)
            except (_Invalid, subprocess.TimeoutExpired) as e:
                problems.append(f"attempt {attempt}: {e}")
    raise MpvRenderError(f"{label}: mpv rendering failed {ATTEMPTS} times ({'; '.join(problems)})")


class _Invalid(Exception):
    pass


def _frames_problem(frames: list[np.ndarray], refs: list[np.ndarray], size: tuple[int, int]) -> str | None:
    if len(frames) != len(refs):
        return f"{len(frames)} frames rendered, {len(refs)} expected"
    for i, (f, ref) in enumerate(zip(frames, refs)):
        if (f.shape[1], f.shape[0]) != size:
            return f"frame {i} is {f.shape[1]}x{f.shape[0]}, expected {size[0]}x{size[1]}"
        y = rgb_to_y(f)
        p = psnr(y, ref)
        if p < MIN_PSNR_Y:
            return f"frame {i}: PSNR-Y {p:.1f} dB against bicubic (< {MIN_PSNR_Y:g}: black or garbled)"
        rows = np.abs(y.astype(np.float32) - ref).mean(axis=1)
        if rows.max() > max(MAX_ROW_LEVELS, 6 * float(np.median(rows))):
            return f"frame {i}: row {int(rows.argmax())} off by {rows.max():.1f} levels (sheared or torn)"
    return None


def _read_rgb(path: Path) -> list[np.ndarray]:
    import av

    try:
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    except (av.error.FFmpegError, OSError) as e:
        raise _Invalid(f"unreadable output: {e}") from None


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][-300:] if lines else "no message"


class XvfbError(_Invalid):
    """The private Xvfb did not start (a failed attempt: the caller may try again)."""


@contextlib.contextmanager
def private_display(work: Path, screen: str = "640x480x24", timeout: float = 60.0) -> Iterator[dict[str, str]]:
    """Environment for one mpv run: a private HOME/XDG dirs and a private Xvfb (or $DISPLAY without Xvfb).

    Xvfb picks a free display itself (``-displayfd``), so concurrent runs never share or race for
    one; :class:`XvfbError` when it does not start. The tests' mpv renders use this too."""
    home = work / "home"
    dirs = {"HOME": home, "XDG_CONFIG_HOME": home / ".config", "XDG_CACHE_HOME": home / ".cache",
            "XDG_DATA_HOME": home / ".local" / "share", "XDG_RUNTIME_DIR": work / "runtime"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    dirs["XDG_RUNTIME_DIR"].chmod(0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "MPV_HOME")}
    env.update({k: str(v) for k, v in dirs.items()})
    xvfb = shutil.which("Xvfb")
    if not software_rendering() or xvfb is None:
        yield env
        return
    r, w = os.pipe()
    with open(work / "xvfb.log", "wb") as log:
        proc = subprocess.Popen([xvfb, "-displayfd", str(w), "-screen", "0", screen, "-nolisten", "tcp",
                                 "-noreset"], pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    os.close(w)
    try:
        yield {**env, "DISPLAY": _read_display(r, proc, timeout)}
    finally:
        os.close(r)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _read_display(fd: int, proc: subprocess.Popen, timeout: float) -> str:
    deadline, buf = time.monotonic() + timeout, b""
    while not buf.endswith(b"\n"):
        if select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 64)
            if not chunk:
                raise XvfbError(f"Xvfb exited before announcing a display (status {proc.poll()})")
            buf += chunk
        elif proc.poll() is not None or time.monotonic() > deadline:
            raise XvfbError(f"Xvfb did not start in {timeout:.0f} s (status {proc.poll()})")
    return ":" + buf.decode().strip()
