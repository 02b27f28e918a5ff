"""Latency benchmark: every backend side by side with the authors' way of running SR-UNet.

For each *case* (a backend and its precision) two measurements, after warm-up:

* ``model``: ``backend.infer`` on one padded float32 NCHW frame -- the network
  alone (for GPU backends including the host<->device copies).
* ``e2e``: decode one frame of a real H.265 clip -> :class:`~mpv_srunet.filter.Upscaler`
  (colour conversion, padding, model, conversion back to the clip's pixel
  format) -> hand-off (copying the output planes into one buffer, what the mpv
  frame server writes). Timed per frame, decode included.

The ``authors-style`` reference runs SR-UNet as the authors' code does: plain
eager PyTorch fp32, the *train form* (unfused 3x3 + 1x1 + identity per block),
NCHW, input zero-padded to a multiple of 16 -- measured in the same run, on the
same input, so the reported speed-ups are honest.

Reported per case and mode: p50/p95/p99/mean ms per frame, fps (1000/p50) and
achieved GFLOP/s (``2 * macs_per_pixel(cfg) * padded pixels / p50``; the
authors' entry counts the unfused MACs it actually executes). Percentiles of a
handful of frames are coarse: p99 of 5 frames is about the maximum.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import BackendUnavailable, UsageError

log = logging.getLogger(__name__)

SCHEMA = "mpv-srunet-bench/1"
AUTHORS = "authors-style"
CPU_CASES = [AUTHORS, "torch-cpu:fp32", "torch-cpu:bf16", "onnxruntime"]
#: torch-cuda:fp16 is its eager model; torch-cuda:fp16+compile the torch.compile'd one, timed once
#: its background compile is done (the warm-up waits for it)
GPU_CASES = [AUTHORS + ":cuda", "torch-cuda:fp16", "torch-cuda:fp16+compile", "tensorrt:fp16"]
COMPILE_SUFFIX = "+compile"
PHOTO_DIR = Path("/usr/share/backgrounds")
COMPILE_WAIT_S = 1800.0


@dataclass(frozen=True)
class Case:
    """``name[:variant]``: a backend and its precision, or the authors' reference (variant = device)."""

    spec: str

    @property
    def backend(self) -> str:
        return self.spec.split(":", 1)[0]

    @property
    def variant(self) -> str | None:
        parts = self.spec.split(":", 1)
        return parts[1] if len(parts) == 2 else None

    @property
    def is_authors(self) -> bool:
        return self.backend == AUTHORS

    @property
    def on_gpu(self) -> bool:
        return self.backend in ("tensorrt", "torch-cuda") or (self.is_authors and self.variant == "cuda")

    @property
    def compiled(self) -> bool:
        return (self.variant or "").endswith(COMPILE_SUFFIX)

    def options(self, threads: int | None) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        variant = (self.variant or "").removesuffix(COMPILE_SUFFIX)
        if variant and not self.is_authors:
            opts["precision"] = variant
        if self.backend == "torch-cuda":  # eager unless asked: a compile finishing mid-run would mix the two
            opts["compile"] = self.compiled
        if threads and self.backend in ("torch-cpu", "onnxruntime"):
            opts["threads"] = threads
        return opts


@dataclass
class BenchSettings:
    width: int = 960
    height: int = 540
    frames: int = 5
    warmup: int = 1
    threads: int | None = None
    modes: tuple[str, ...] = ("model", "e2e")
    video: Path | None = None  # e2e input; default: a generated H.265 clip of a real photo


@dataclass
class Timing:
    ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        a = np.asarray(self.ms, dtype=np.float64)
        return {
            "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()),
        }


def parse_cases(text: str | None) -> list[Case]:
    """``"torch-cpu:bf16,onnxruntime"`` -> cases; None -> every CPU case plus available GPU ones."""
    if not text:
        return [Case(s) for s in CPU_CASES + [g for g in GPU_CASES if gpu_case_reason(Case(g)) is None]]
    from .backends import BACKENDS

    cases = [Case(s.strip()) for s in text.split(",") if s.strip()]
    for c in cases:
        if not c.is_authors and c.backend not in BACKENDS:
            raise UsageError(f"--backend {c.spec}: unknown backend; choose from {AUTHORS}, {', '.join(BACKENDS)} "
                             "(optionally NAME:PRECISION, e.g. torch-cpu:bf16)")
    return cases


def gpu_case_reason(case: Case) -> str | None:
    """Why a case cannot run here (None: it can)."""
    if case.is_authors:
        if case.variant not in (None, "cpu", "cuda"):
            return f"{case.spec}: device must be cpu or cuda"
        from .gpu.cuda import cuda_unavailable_reason

        return cuda_unavailable_reason() if case.variant == "cuda" else None
    from .backends import available_backends

    status = available_backends().get(case.backend, "unknown backend")
    return None if status == "ok" else status


def machine_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    from .trt.builder import import_tensorrt

    trt = import_tensorrt()
    if trt is not None:
        info["tensorrt"] = trt.__version__
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --------------------------------------------------------------------------- inputs


def _photo_frame(width: int, height: int):
    """A real photo (Debian wallpapers) decoded with PyAV and scaled to cover width x height, or None."""
    import av

    photos = sorted(PHOTO_DIR.glob("*.jpg")) if PHOTO_DIR.is_dir() else []
    if not photos:
        return None
    with av.open(str(photos[0])) as c:
        f = next(c.decode(video=0))
    s = max(width / f.width, height / f.height)
    return f.reformat(width=max(width, round(f.width * s)), height=max(height, round(f.height * s)), format="rgb24").to_ndarray()


def _source_rgb(width: int, height: int) -> np.ndarray:
    """The picture the clip pans over: a real photo where installed, else a textured gradient."""
    img = _photo_frame(width, height)
    if img is not None:
        return img
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    base = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 17.0) * np.cos(yy / 23.0)], -1) * 255
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def make_bench_clip(path: Path, width: int, height: int, frames: int, fps: int = 24) -> Path:
    """A real H.265 clip (libx265, CRF 23, BT.709 limited): a 2 px/frame pan, made with PyAV."""
    import av

    from .video import mux

    src = _source_rgb(width + 2 * frames + 2, height)
    x0, y0 = (src.shape[1] - width - 2 * frames) // 2, (src.shape[0] - height) // 2
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx265", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.colorspace, vs.codec_context.color_range = 1, 1
        vs.options = {"crf": "23", "preset": "ultrafast", "x265-params": "log-level=error"}
        for i in range(frames):
            rgb = np.ascontiguousarray(src[y0:y0 + height, x0 + 2 * i: x0 + 2 * i + width])
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="itu709", dst_color_range="MPEG")
            f.pts, f.time_base = i, Fraction(1, fps)
            mux(out, vs.encode(f))
        mux(out, vs.encode())
    return path


def hand_off(frame: Any) -> int:
    """What the frame server does with a result: copy its planes into one buffer."""
    return len(b"".join(bytes(p) for p in frame.planes))


# --------------------------------------------------------------------------- runners


def padded_hw(h: int, w: int, multiple: int) -> tuple[int, int]:
    return -(-h // multiple) * multiple, -(-w // multiple) * multiple


class AuthorsStyle:
    """SR-UNet run the way the authors' code runs it (reimplemented, not copied):
    train-form model, eager fp32 NCHW under ``torch.no_grad``, zero padding to a
    multiple of 16, crop after."""

    multiple_of = 16

    def __init__(self, train_model: Any, device: str = "cpu") -> None:
        self.model = train_model.float().eval().to(device)
        self.device = device
        self.name = f"authors-style (train form, fp32 eager, {device})"

    def infer(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW [-1, 1] of any size -> upscaled, cropped."""
        import torch
        import torch.nn.functional as F

        n, c, h, w = x.shape
        ph, pw = padded_hw(h, w, self.multiple_of)
        with torch.no_grad():
            t = F.pad(torch.from_numpy(x).to(self.device), (0, pw - w, 0, ph - h))  # zeros, as the authors pad
            y = self.model(t)
            s = self.model.cfg.total_scale
            return y[:, :, : round(h * s), : round(w * s)].cpu().numpy()

    def upscale_frame(self, frame: Any) -> Any:
        from .colour import float_to_frame, frame_colour, frame_to_float

        colour = frame_colour(frame)
        x = frame_to_float(frame, colour).transpose(2, 0, 1)[None]
        y = self.infer(np.ascontiguousarray(x))
        return float_to_frame(y[0].transpose(1, 2, 0), frame, colour)

    def close(self) -> None:
        self.model = None


def authors_train_model(model: Any, weights: Path | None) -> tuple[Any, str]:
    """The train-form twin of ``model``: from the weights file if it holds the train form,
    else a seeded random init of the same architecture (the same work per pixel)."""
    import torch

    from .model import SRUNet

    if weights is not None:
        from .weights import load_model, read_weights

        if read_weights(weights)[2] == "train":
            return load_model(weights, deploy=False)[0], "weights file (train form)"
    torch.manual_seed(0)
    return SRUNet(model.cfg, deploy=False).eval(), "random init, same architecture (fused weights cannot be unfused)"


# --------------------------------------------------------------------------- measuring


def _timed(fn: Callable[[], Any], n: int, warmup: int) -> Timing:
    for _ in range(warmup):
        fn()
    t = Timing()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        t.ms.append((time.perf_counter() - t0) * 1e3)
    return t


def _timed_e2e(clip: Path, process: Callable[[Any], Any], n: int, warmup: int) -> tuple[Timing, tuple[int, int]]:
    """decode -> process -> hand-off, one frame at a time, decode included in each frame's time.

    Returns the timing and the clip's frame size (height, width)."""
    import av

    t, size = Timing(), (0, 0)
    with av.open(str(clip)) as c:
        c.streams.video[0].thread_type = "AUTO"
        frames = c.decode(video=0)
        for i in range(warmup + n):
            t0 = time.perf_counter()
            try:
                frame = next(frames)
            except StopIteration:
                raise UsageError(f"{clip}: has only {i} frames; need warm-up + frames = {warmup + n}") from None
            hand_off(process(frame))
            if i >= warmup:
                t.ms.append((time.perf_counter() - t0) * 1e3)
            size = (frame.height, frame.width)
    return t, size


def _entry(case: Case, name: str, mode: str, timing: Timing, padded: tuple[int, int], macs_pp: float) -> dict[str, Any]:
    s = timing.summary()
    return {
        "case": case.spec, "backend_name": name, "mode": mode, "device": "gpu" if case.on_gpu else "cpu",
        "padded": list(padded), "frames": len(timing.ms), "ms": s, "fps": 1000.0 / s["p50"],
        "gflops": 2.0 * macs_pp * padded[0] * padded[1] / (s["p50"] * 1e-3) / 1e9,
        "samples_ms": timing.ms,
    }


def _open_case(case: Case, model: Any, train_model: Any, threads: int | None):
    """(object with infer/upscale_frame-like callables, display name, macs/pixel, pad multiple)."""
    from .model import SRUNet, macs_per_pixel

    if case.is_authors:
        runner = AuthorsStyle(train_model, "cuda" if case.variant == "cuda" else "cpu")
        return runner.infer, runner.upscale_frame, runner.close, runner.name, macs_per_pixel(model.cfg, deploy=False), 16
    from .filter import Upscaler

    up = Upscaler(model=model, backend=case.backend, **case.options(threads))
    wait = getattr(up._backend, "wait_compiled", None)
    if not case.compiled or wait is None:
        return up.upscale_float, up.upscale, up.close, up.backend_name, macs_per_pixel(model.cfg), SRUNet.multiple_of

    def then_wait(fn):  # the first (warm-up) call of a size starts its compile: wait for it there
        def call(*args):
            out = fn(*args)
            wait(COMPILE_WAIT_S)
            return out
        return call

    return then_wait(up.upscale_float), then_wait(up.upscale), up.close, up.backend_name, macs_per_pixel(model.cfg), \
        SRUNet.multiple_of


def run_case(case: Case, model: Any, train_model: Any, settings: BenchSettings, clip: Path | None) -> list[dict]:
    """Both measurements of one case; the input frame is the same for every case."""
    infer, upscale_frame, close, name, macs_pp, multiple = _open_case(case, model, train_model, settings.threads)
    try:
        out = []
        if "model" in settings.modes:
            ph, pw = padded_hw(settings.height, settings.width, multiple)
            x = np.random.default_rng(0).uniform(-1, 1, (1, 3, ph, pw)).astype(np.float32)
            t = _timed(lambda: infer(x), settings.frames, settings.warmup)
            out.append(_entry(case, name, "model", t, (ph, pw), macs_pp))
        if "e2e" in settings.modes and clip is not None:
            t, (h, w) = _timed_e2e(clip, upscale_frame, settings.frames, settings.warmup)
            out.append(_entry(case, name, "e2e", t, padded_hw(h, w, multiple), macs_pp))
        log.info("%s: %s", case.spec, ", ".join(f"{e['mode']} p50 {e['ms']['p50']:.1f} ms" for e in out))
        return out
    finally:
        close()


def add_speedups(results: list[dict]) -> None:
    """speedup_vs_authors = authors-style p50 / case p50, same mode; GPU cases against the
    GPU reference when it ran, else the CPU one."""
    ref = {(r["mode"], r["device"]): r["ms"]["p50"] for r in results if r["case"].startswith(AUTHORS)}
    for r in results:
        base = ref.get((r["mode"], r["device"])) or ref.get((r["mode"], "cpu"))
        r["speedup_vs_authors"] = base / r["ms"]["p50"] if base else None


# --------------------------------------------------------------------------- whole runs


def run_bench(
    model: Any, cases: list[Case], settings: BenchSettings, *, weights: Path | None = None,
    weights_sha256: str | None = None,
) -> dict[str, Any]:
    """Measure every case that can run here; the others are listed under ``skipped`` with a reason."""
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    runnable, skipped = [], []
    for c in cases:
        reason = gpu_case_reason(c)
        (skipped.append({"case": c.spec, "reason": reason}) if reason else runnable.append(c))
    if not runnable:
        raise BackendUnavailable("bench: none of the requested backends can run here: "
                                 + "; ".join(f"{s['case']}: {s['reason']}" for s in skipped))
    train_model, train_src = authors_train_model(model, weights) if any(c.is_authors for c in runnable) else (None, None)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="srunet-bench-") as tmp:
        clip = settings.video
        if "e2e" in settings.modes and clip is None:
            clip = make_bench_clip(Path(tmp) / "bench.mkv", settings.width, settings.height,
                                   settings.warmup + settings.frames)
        for c in runnable:
            results.extend(run_case(c, model, train_model, settings, clip))
    add_speedups(results)
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {
            "size": f"{settings.width}x{settings.height}", "frames": settings.frames, "warmup": settings.warmup,
            "threads": settings.threads, "modes": list(settings.modes),
            "video": str(settings.video) if settings.video else "generated H.265 clip (libx265 CRF 23, BT.709)",
            "model": model.cfg.to_dict(), "weights": str(weights) if weights else "random init",
            "weights_sha256": weights_sha256, "authors_style_weights": train_src,
        },
        "results": results,
        "skipped": skipped,
    }


def format_table(report: dict[str, Any]) -> str:
    """Human-readable table of a bench report."""
    st = report["settings"]
    lines = [f"mpv-srunet bench  {st['size']}  {st['frames']} frames (+{st['warmup']} warm-up)  "
             f"model F={st['model']['n_filters']}  {report['machine'].get('cpu', '')}",
             f"{'case':<22}{'mode':<7}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'fps':>8}{'GFLOP/s':>9}{'vs authors':>12}"]
    for r in report["results"]:
        sp = r.get("speedup_vs_authors")
        lines.append(f"{r['case']:<22}{r['mode']:<7}{r['ms']['p50']:>10.1f}{r['ms']['p95']:>10.1f}"
                     f"{r['ms']['p99']:>10.1f}{r['fps']:>8.2f}{r['gflops']:>9.1f}{(f'{sp:.2f}x' if sp else '-'):>12}")
    for s in report.get("skipped", []):
        lines.append(f"{s['case']:<22}skipped: {s['reason']}")
    return "\n".join(lines)


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    try:
        d = json.loads(Path(path).read_text())
    except OSError as e:
        raise UsageError(f"--compare {path}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise UsageError(f"--compare {path}: not JSON ({e})") from None
    if not isinstance(d, dict) or d.get("schema") != SCHEMA or not isinstance(d.get("results"), list):
        raise UsageError(f"--compare {path}: not an mpv-srunet bench report (expected schema {SCHEMA!r})")
    return d


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for every (case, mode, size) present in both: p50 of each and the speed ratio a/b
    (> 1: b is faster)."""
    def index(r):
        return {(e["case"], e["mode"], r["settings"]["size"]): e for e in r["results"]}

    ia, ib = index(a), index(b)
    rows = []
    for key in [k for k in ia if k in ib]:
        pa, pb = ia[key]["ms"]["p50"], ib[key]["ms"]["p50"]
        rows.append({"case": key[0], "mode": key[1], "size": key[2], "a_p50_ms": pa, "b_p50_ms": pb,
                     "speed_ratio": pa / pb})
    only = sorted(set(ia) ^ set(ib))
    rows.extend({"case": k[0], "mode": k[1], "size": k[2], "only_in": "a" if k in ia else "b"} for k in only)
    return rows


def format_comparison(rows: list[dict[str, Any]], a_name: str, b_name: str) -> str:
    lines = [f"a = {a_name}\nb = {b_name}",
             f"{'case':<22}{'mode':<7}{'size':<11}{'a p50 ms':>10}{'b p50 ms':>10}{'a/b':>8}"]
    for r in rows:
        if "only_in" in r:
            lines.append(f"{r['case']:<22}{r['mode']:<7}{r['size']:<11}  only in {r['only_in']}")
        else:
            lines.append(f"{r['case']:<22}{r['mode']:<7}{r['size']:<11}{r['a_p50_ms']:>10.1f}{r['b_p50_ms']:>10.1f}"
                         f"{r['speed_ratio']:>7.2f}x")
    return "\n".join(lines)
