"""`mpv-srunet doctor`: what runs on this machine, and how fast.

Two parts:

* **checks** (cheap, never cached): CUDA through torch, TensorRT, ONNX Runtime,
  torch.compile, the mpv binary and its version, the installed mpv script and the
  Python it runs, the GLSL shader;
* **measurements** (cached per machine): ms per frame of the filter at 540p, 720p
  and 1080p input for every backend that runs here and every playback preset, and
  the frame rates (24/30/60) each sustains in real time. The path timed is the one
  the frame server takes (the GPU frame path where the backend has it, else the float
  path), so a player can decide from it: the frame server's ``policy=auto`` and
  ``model=auto`` read this cache (:func:`estimate_ms`, :func:`choose_preset`) and
  fall back to timing two frames themselves when it has nothing for the video.

The cache lives in the user cache dir (``<cache>/doctor/<key>.json``); the key is a
hash of what changes the numbers: CPU model, GPU name, torch / ONNX Runtime /
TensorRT versions, this package's version and the default weights' checksum.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import __version__

log = logging.getLogger(__name__)

#: name -> input size (width, height)
SIZES: dict[str, tuple[int, int]] = {"540p": (960, 540), "720p": (1280, 720), "1080p": (1920, 1080)}
REALTIME_FPS = (24, 30, 60)
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


# --------------------------------------------------------------------------- checks


def _run(cmd: list[str], timeout: float = 30) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, str(e)
    return p.returncode, (p.stdout or p.stderr).strip()


def _check_mpv() -> Check:
    exe = shutil.which("mpv")
    if exe is None:
        return Check("mpv", False, "mpv not found on PATH (Debian/Ubuntu: apt install mpv)")
    rc, out = _run([exe, "--version"])
    first = out.splitlines()[0] if out else ""
    if rc != 0 or not first.startswith("mpv"):
        return Check("mpv", False, f"{exe} --version failed ({first or rc})")
    return Check("mpv", True, f"{first.split(' Copyright')[0]} ({exe})")


def _installed_python(config_dir: Path) -> str | None:
    conf = config_dir / "script-opts" / "srunet.conf"
    try:
        for line in conf.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key.strip() == "python" and value.strip():
                return value.strip()
    except OSError:
        pass
    return None


def _check_script() -> list[Check]:
    from .mpv.install import SCRIPT_MARKER, mpv_config_dir

    cfg = mpv_config_dir()
    target = cfg / "scripts" / "srunet"
    main = target / "main.lua"
    try:
        ours = main.read_text(errors="replace").startswith(SCRIPT_MARKER)
    except OSError:
        return [Check("mpv script", False, f"not installed in {target} (mpv-srunet mpv-script --install)")]
    if not ours:
        return [Check("mpv script", False, f"{target} is not mpv-srunet's script")]
    how = f"link to {os.readlink(target)}" if target.is_symlink() else "copy"
    checks = [Check("mpv script", True, f"{target} ({how})")]
    python = _installed_python(cfg)
    if python is None:
        checks.append(Check("script Python", True, "none set: the script looks next to its package, then python3"))
        return checks
    rc, out = _run([python, "-c", "import mpv_srunet, sys; print(mpv_srunet.__version__, sys.version.split()[0])"], 60)
    if rc != 0:
        last = out.splitlines()[-1] if out else f"exit status {rc}"
        checks.append(Check("script Python", False, f"{python} cannot import mpv_srunet ({last})"))
    else:
        checks.append(Check("script Python", True, f"{python}: mpv_srunet {out.split()[0]}, Python {out.split()[-1]}"))
    return checks


def _check_shader() -> Check:
    from .mpv.install import mpv_config_dir
    from .errors import WeightsError
    from .glsl import shipped_shader_path

    try:
        shipped = shipped_shader_path()
    except WeightsError as e:
        return Check("GLSL shader", False, str(e))
    installed = mpv_config_dir() / "shaders" / "srunet.glsl"
    where = f"installed at {installed}" if installed.is_file() else \
        "not installed (mpv-srunet mpv-script --install --with-shader)"
    return Check("GLSL shader", installed.is_file(), f"{shipped.name} ships; {where}")


def run_checks() -> list[Check]:
    """Everything that decides what can run here, each with the reason when it cannot."""
    import torch

    from .backends import available_backends
    from .backends.compile import compile_unavailable_reason
    from .gpu.cuda import cuda_unavailable_reason

    checks = [Check("torch", True, f"{torch.__version__} ({'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU build'})")]
    cuda_reason = cuda_unavailable_reason()
    checks.append(Check("CUDA", cuda_reason is None, cuda_reason or torch.cuda.get_device_name(0)))
    avail = available_backends()
    checks.append(Check("TensorRT", avail.get("tensorrt") == "ok", _detail(avail.get("tensorrt"), "tensorrt")))
    checks.append(Check("ONNX Runtime", avail.get("onnxruntime") == "ok", _detail(avail.get("onnxruntime"), "onnxruntime")))
    device = "cuda" if cuda_reason is None else "cpu"
    reason = compile_unavailable_reason(device)
    checks.append(Check("torch.compile", reason is None, reason or f"Inductor for {device}"
                        + (" (torch-cuda compiles in the background)" if device == "cuda" else " (torch-cpu --compile)")))
    checks.append(_check_mpv())
    checks.extend(_check_script())
    checks.append(_check_shader())
    return checks


def _detail(status: str | None, module: str) -> str:
    if status != "ok":
        return status or "not registered"
    try:
        return f"{module} {__import__(module).__version__}"
    except (ImportError, AttributeError):
        return "ok"


# --------------------------------------------------------------------------- cache


def machine_key() -> dict[str, str]:
    """What changes the measurements: the cache is valid only for the same values."""
    import torch

    from .bench import machine_info
    from .weights import default_weights_path, file_sha256

    info = machine_info()
    try:
        weights = file_sha256(default_weights_path())[:16]
    except OSError:
        weights = "none"
    return {"cpu": str(info.get("cpu")), "gpu": str(info.get("gpu", "none")), "torch": torch.__version__,
            "onnxruntime": str(info.get("onnxruntime", "none")), "tensorrt": str(info.get("tensorrt", "none")),
            "mpv_srunet": __version__, "weights": weights}


def cache_path(key: dict[str, str] | None = None) -> Path:
    from platformdirs import user_cache_dir

    key = key or machine_key()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(user_cache_dir("mpv-srunet", appauthor=False)) / "doctor" / f"{digest}.json"


def load_cached(key: dict[str, str] | None = None) -> dict[str, Any] | None:
    """This machine's cached measurements, or None (none yet, another machine/version, unreadable)."""
    key = key or machine_key()
    path = cache_path(key)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("format") != CACHE_FORMAT or data.get("key") != key or not isinstance(data.get("rows"), list):
        return None
    return data


def _save(data: dict[str, Any], path: Path) -> None:
    from .fsutil import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


# --------------------------------------------------------------------------- measurements


@dataclass(frozen=True)
class MeasureSettings:
    sizes: tuple[str, ...] = tuple(SIZES)
    presets: tuple[str, ...] = ("default", "lite")
    backends: tuple[str, ...] | None = None  # None: every backend that runs here
    warmup: int = 1
    frames: int = 2
    compile_wait_s: float = 900.0  # torch-cuda: time the compiled path once its compile is done


def parse_size(name: str) -> tuple[int, int]:
    from .errors import UsageError

    if name in SIZES:
        return SIZES[name]
    w, sep, h = name.lower().partition("x")
    if sep and w.isdigit() and h.isdigit() and int(w) >= 8 and int(h) >= 8:
        return int(w), int(h)
    raise UsageError(f"size {name!r}: expected one of {', '.join(SIZES)} or WxH (e.g. 640x360)")


def _preset_model(preset: str) -> tuple[Any, str]:
    """The preset's model and where its weights come from. A preset without shipped weights is
    timed with untrained weights (speed does not depend on their values; it is never used to upscale)."""
    import torch

    from .errors import WeightsError
    from .model import create_model
    from .weights import load_model, preset_weights_path

    try:
        model, info = load_model(preset_weights_path(preset), deploy=True)
        return model, f"shipped ({info.sha256[:12]})"
    except WeightsError:
        torch.manual_seed(0)
        return create_model(preset, deploy=True).eval(), "none shipped: speed only"


def _synthetic_frame(w: int, h: int) -> Any:
    """A yuv420p BT.709 limited-range frame with texture (what the frame path takes)."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    return frame


def time_filter(upscaler: Any, w: int, h: int, warmup: int, frames: int, compile_wait_s: float = 0.0) -> float:
    """Median ms per frame of the path the frame server takes for a frame of w x h."""
    import numpy as np

    frame = _synthetic_frame(w & ~1, h & ~1)
    use_frame = bool(getattr(upscaler, "has_frame_path", None) and upscaler.has_frame_path(frame))
    x = None if use_frame else np.zeros((1, 3, h, w), np.float32)

    def one() -> float:
        t0 = time.perf_counter()
        if use_frame:
            upscaler.upscale_yuv420(frame)
        else:
            upscaler.upscale_float(x)
        return (time.perf_counter() - t0) * 1000.0

    for _ in range(warmup):
        one()
    wait = getattr(getattr(upscaler, "_backend", None), "wait_compiled", None)
    if wait is not None:  # torch-cuda: time the compiled kernels once the background compile is done
        wait(compile_wait_s)
        one()
    return statistics.median(one() for _ in range(max(1, frames)))


def _usable_backends(settings: MeasureSettings) -> tuple[list[str], dict[str, str]]:
    from .backends import AUTO_ORDER, available_backends

    avail = available_backends()
    names = list(settings.backends) if settings.backends else [n for n in AUTO_ORDER if n in avail]
    return [n for n in names if avail.get(n) == "ok"], {n: s for n, s in avail.items() if s != "ok"}


def measure(settings: MeasureSettings, progress: Callable[[str], None] | None = None) -> tuple[list[dict], dict[str, str]]:
    """Rows {backend, runtime, preset, weights, size, width, height, ms, fps, realtime} and the
    backends skipped with their reason."""
    from .errors import SRUNetError
    from .filter import Upscaler

    backends, skipped = _usable_backends(settings)
    rows: list[dict] = []
    for preset in settings.presets:
        model, weights = _preset_model(preset)
        for name in backends:
            try:
                up = Upscaler(model=model, backend=name)
            except SRUNetError as e:
                skipped[name] = str(e)
                continue
            try:
                for size in settings.sizes:
                    w, h = parse_size(size)
                    if progress:
                        progress(f"{up.backend_name} {preset} {size}")
                    try:
                        ms = time_filter(up, w, h, settings.warmup, settings.frames, settings.compile_wait_s)
                    except (SRUNetError, RuntimeError, MemoryError) as e:  # e.g. out of GPU memory at 1080p
                        skipped[f"{name} {preset} {size}"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                        continue
                    rows.append({"backend": name, "runtime": up.backend_name, "preset": preset, "weights": weights,
                                 "size": size, "width": w, "height": h, "ms": round(ms, 2),
                                 "fps": round(1000.0 / ms, 2) if ms > 0 else None,
                                 "realtime": [f for f in REALTIME_FPS if ms <= 1000.0 / f]})
            finally:
                up.close()
    return rows, skipped


def run_doctor(settings: MeasureSettings, *, refresh: bool = False, quick: bool = False,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Checks (always fresh) + measurements (cached per machine; ``refresh`` re-measures)."""
    checks = [c.to_dict() for c in run_checks()]
    key = machine_key()
    path = cache_path(key)
    cached = None if refresh else load_cached(key)
    wanted = {(s, p) for s in settings.sizes for p in settings.presets}
    if cached is not None and wanted <= {(s, p) for s, p in map(tuple, cached.get("covers", []))}:
        return {"checks": checks, **cached, "cache": str(path), "from_cache": True}
    if quick:
        usable, _ = _usable_backends(settings)
        settings = MeasureSettings(sizes=settings.sizes, presets=settings.presets, backends=tuple(usable[:1]),
                                   warmup=1, frames=1, compile_wait_s=settings.compile_wait_s)
    t0 = time.monotonic()
    rows, skipped = measure(settings, progress)
    data = {"format": CACHE_FORMAT, "key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "quick": quick, "warmup": settings.warmup, "frames": settings.frames,
            "seconds": round(time.monotonic() - t0, 1), "covers": sorted([list(x) for x in wanted]),
            "rows": rows, "skipped": skipped}
    _save(data, path)
    return {"checks": checks, **data, "cache": str(path), "from_cache": False}


# --------------------------------------------------------------------------- decisions


def estimate_ms(report: dict[str, Any] | None, runtime: str, preset: str, width: int, height: int) -> float | None:
    """ms/frame for ``runtime`` (the backend's display name, e.g. ``torch-cpu (bf16)``, or its
    registry name) and ``preset`` at width x height, from the nearest measured size scaled by
    pixel count (convolutions cost per pixel); None when the report has no such row."""
    if not report:
        return None
    rows = [r for r in report.get("rows", []) if r.get("preset") == preset and runtime in (r.get("runtime"), r.get("backend"))]
    if not rows:
        return None
    px = width * height
    best = min(rows, key=lambda r: abs(r["width"] * r["height"] - px))
    return float(best["ms"]) * px / (best["width"] * best["height"])


def choose_preset(report: dict[str, Any] | None, runtime: str, width: int, height: int, fps: float,
                  presets: list[str], margin: float = 1.0) -> tuple[str | None, str]:
    """The best-quality preset of ``presets`` (best first) that keeps real time for this video,
    and why; (None, why) when the report cannot tell."""
    budget = 1000.0 / fps * margin
    known = []
    for p in presets:
        ms = estimate_ms(report, runtime, p, width, height)
        if ms is None:
            continue
        known.append(f"{p} {ms:.0f} ms")
        if ms <= budget:
            return p, f"{p}: {ms:.1f} ms/frame <= {budget:.1f} ms (doctor cache)"
    if not known:
        return None, f"no doctor measurement for {runtime}"
    return None, f"no preset keeps {fps:.3g} fps here ({', '.join(known)}; doctor cache)"


def cached_report_quietly() -> dict[str, Any] | None:
    """:func:`load_cached`, logging instead of raising (for the frame server's start)."""
    try:
        return load_cached()
    except Exception as e:  # a broken cache never stops playback: the probe decides instead
        log.warning("doctor cache unreadable (%s); timing frames instead", e)
        return None


# --------------------------------------------------------------------------- output


def format_report(report: dict[str, Any]) -> str:
    lines = ["Checks:"]
    for c in report["checks"]:
        lines.append(f"  {'ok ' if c['ok'] else 'NO '} {c['name']:<14} {c['detail']}")
    src = f"cached {report.get('created', '?')}, {report['cache']}; --refresh re-measures" if report.get("from_cache") \
        else f"measured now in {report.get('seconds', 0):.0f} s ({report.get('warmup')} warm-up + {report.get('frames')} frames); saved to {report['cache']}"
    lines += ["", f"ms per frame of the filter, input size -> 2x ({src}):"]
    head = f"  {'backend':<28} {'preset':<8} {'weights':<24} " + " ".join(f"{s:>18}" for s in _sizes(report))
    lines.append(head)
    by = {}
    for r in report["rows"]:
        by.setdefault((r["runtime"], r["preset"], r["weights"]), {})[r["size"]] = r
    for (runtime, preset, weights), cells in by.items():
        parts = []
        for s in _sizes(report):
            r = cells.get(s)
            rt = "/".join(str(f) for f in r["realtime"]) if r and r["realtime"] else "-"
            parts.append(f"{r['ms']:>9.1f} ({rt:>6})" if r else f"{'n/a':>18}")
        lines.append(f"  {runtime:<28} {preset:<8} {weights[:24]:<24} " + " ".join(parts))
    if not report["rows"]:
        lines.append("  (nothing could be measured)")
    lines.append("  (in brackets: the frame rates of 24/30/60 it keeps in real time; '-': none)")
    for what, why in (report.get("skipped") or {}).items():
        lines.append(f"  skipped {what}: {why}")
    return "\n".join(lines)


def _sizes(report: dict[str, Any]) -> list[str]:
    seen = dict.fromkeys(r["size"] for r in report["rows"])
    return list(seen) or list(SIZES)



def preset_of(cfg: Any) -> str | None:
    """The playback preset whose network ``cfg`` is (speed depends on the config only), or None."""
    from .model import PLAYBACK_PRESETS, get_cfg

    return next((p for p in PLAYBACK_PRESETS if get_cfg(p) == cfg), None)


def _runtime_for(report: dict[str, Any] | None, backend: str) -> str:
    """The registry name whose rows stand for ``backend`` (``auto``: the first of AUTO_ORDER measured)."""
    from .backends import AUTO_ORDER

    if backend != "auto" or not report:
        return backend
    measured = {r.get("backend") for r in report.get("rows", [])}
    return next((n for n in AUTO_ORDER if n in measured), backend)


def pick_model(model: str, backend: str, width: int, height: int, fps: float, margin: float = 1.0) -> tuple[str, str]:
    """``model`` (default, lite, auto) -> the preset to play with and why. ``auto``: the best preset
    with shipped weights that keeps real time for this size and frame rate by the doctor cache;
    ``default`` when the cache cannot tell or none keeps up (policy then decides)."""
    from .errors import WeightsError
    from .model import PLAYBACK_PRESETS
    from .weights import preset_weights_path

    if model != "auto":
        return model, "asked for"
    shipped = []
    for p in PLAYBACK_PRESETS:
        try:
            preset_weights_path(p)
            shipped.append(p)
        except WeightsError:
            continue
    report = cached_report_quietly()
    preset, why = choose_preset(report, _runtime_for(report, backend), width, height, fps, shipped, margin)
    unshipped = [p for p in PLAYBACK_PRESETS if p not in shipped]
    note = f"; {', '.join(unshipped)}: no shipped weights" if unshipped else ""
    return preset or "default", f"auto: {why}{note}"


def cached_ms(upscaler: Any, width: int, height: int) -> float | None:
    """ms/frame for this upscaler's backend and network at width x height from the doctor cache, or None."""
    preset = preset_of(upscaler.cfg)
    if preset is None:
        return None
    return estimate_ms(cached_report_quietly(), upscaler.backend_name, preset, width, height)
