"""Source frame -> upscaled y4m frame record, and a small render-ahead cache.

Three views of one source (the y4m "variants"):

* ``sr``: every frame through SR-UNet;
* ``compare``: left half bicubic, right half SR-UNet (split screen, as the
  authors' player showed), with a thin divider;
* ``bicubic``: what ``sr`` falls back to when the backend fails mid-stream, so
  mpv keeps getting frames while the Lua script switches to the original video.

Colour: the source frame goes to RGB with the source's own matrix and range
(:func:`mpv_srunet.colour.frame_colour`), and the upscaled RGB comes back to YUV
with the *same* pair, which mpv is told explicitly (it would otherwise guess
BT.709 for the larger frame).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..colour import Colour, float_to_yuv420, frame_to_float
from .source import EndOfStream, FrameSource
from .y4m import FRAME_TAG, Y4MLayout

log = logging.getLogger(__name__)

VARIANTS = ("sr", "compare")


@dataclass
class RenderStats:
    """Counters the OSD shows; written by the render thread, read by the server."""

    frames: int = 0
    model_ms: float = 0.0  # exponential moving average of the filter alone
    total_ms: float = 0.0  # EMA of decode + filter + conversion
    error: str | None = None
    fallback: bool = False  # True once the backend failed and frames are bicubic
    updated: float = field(default_factory=time.monotonic)

    def add(self, model_s: float, total_s: float) -> None:
        a = 0.2 if self.frames else 1.0
        self.model_ms += a * (model_s * 1000 - self.model_ms)
        self.total_ms += a * (total_s * 1000 - self.total_ms)
        self.frames += 1
        self.updated = time.monotonic()


def bicubic_yuv420(frame: Any, colour: Colour, size: tuple[int, int]) -> np.ndarray:
    """Source frame -> bicubic-resized yuv420p planes (swscale, same matrix and range)."""
    w, h = size
    out = frame.reformat(
        width=w, height=h, format="yuv420p", interpolation="BICUBIC",
        src_colorspace=colour.sws_matrix, dst_colorspace=colour.sws_matrix,
        src_color_range=colour.sws_range, dst_color_range=colour.sws_range,
    )
    return out.to_ndarray()


def split_compare(left: np.ndarray, right: np.ndarray, size: tuple[int, int], limited: bool) -> np.ndarray:
    """Left half of ``left``, right half of ``right`` (yuv420p planes as returned by to_ndarray)."""
    w, h = size
    out = right.copy()
    half, chalf = (w // 2) & ~1, w // 4
    out[:h, :half] = left[:h, :half]  # Y
    ch = h // 2
    for r0 in (h, h + ch // 2):  # U and V are stored as two half-height blocks of rows
        rows = slice(r0, r0 + ch // 2)
        for c0 in (0, w // 2):  # each chroma row of w/2 samples is split over two lines of w
            out[rows, c0:c0 + chalf] = left[rows, c0:c0 + chalf]
    out[:h, max(0, half - 1):half + 1] = 235 if limited else 255  # divider
    return out


class FrameRenderer:
    """Renders y4m frame records of one variant from one source (single-threaded use)."""

    def __init__(self, source: FrameSource, upscaler: Any, layout: Y4MLayout, colour: Colour,
                 variant: str, stats: RenderStats, infer_lock: threading.Lock) -> None:
        self.source, self.upscaler, self.layout, self.colour = source, upscaler, layout, colour
        self.variant, self.stats, self._infer_lock = variant, stats, infer_lock

    @property
    def _size(self) -> tuple[int, int]:
        return self.layout.width, self.layout.height

    def _sr(self, frame: Any) -> np.ndarray | None:
        """SR planes, or None when the backend failed (recorded in stats, logged once)."""
        if self.stats.fallback:
            return None
        # the GPU frame path (torch-cuda): planes in, planes out, no float RGB on the CPU
        has_frame_path = getattr(self.upscaler, "has_frame_path", None)
        use_frame = bool(has_frame_path and has_frame_path(frame, self.colour))
        x = None if use_frame else frame_to_float(frame, self.colour).transpose(2, 0, 1)[None]
        try:
            with self._infer_lock:
                t0 = time.perf_counter()
                if use_frame:
                    planes = self.upscaler.upscale_yuv420(frame, self.colour)
                else:
                    y = self.upscaler.upscale_float(np.ascontiguousarray(x))[0]
                self._model_s = time.perf_counter() - t0
        except Exception as e:  # backend crash: keep serving (bicubic), report to the script
            self.stats.error = f"{type(e).__name__}: {e}"
            self.stats.fallback = True
            log.error("SR-UNet backend failed, serving bicubic frames: %s", self.stats.error)
            return None
        return planes if use_frame else float_to_yuv420(y, self.colour, self._size)

    def render(self, index: int) -> bytes:
        t0 = time.perf_counter()
        self._model_s = 0.0
        frame = self.source.frame_at(index)
        sr = self._sr(frame)
        if sr is None:
            planes = bicubic_yuv420(frame, self.colour, self._size)
        elif self.variant == "compare":
            bic = bicubic_yuv420(frame, self.colour, self._size)
            planes = split_compare(bic, sr, self._size, not self.colour.full)
        else:
            planes = sr
        if planes.nbytes != self.layout.frame_bytes:
            raise RuntimeError(f"frame {index}: {planes.nbytes} bytes, layout expects {self.layout.frame_bytes}")
        # one copy into the record (tag + planes): `FRAME_TAG + planes.tobytes()` made two, 60-75 ms
        # per 4K frame on a 2-core CPU against 4 ms for this (docs/tensorrt.md, "4K through the frame server")
        record = b"".join((FRAME_TAG, np.ascontiguousarray(planes).reshape(-1).data))
        self.stats.add(self._model_s, time.perf_counter() - t0)
        return record


class Cancelled(Exception):
    """A reader gave up waiting (mpv cancelled the read or opened a new connection)."""


class FrameStore:
    """Frame records by index, rendered on one worker thread up to ``ahead`` frames past the reader.

    Rendering ahead overlaps the model with mpv's reading; keeping the last few
    records serves mpv's partial and repeated reads (it re-reads a frame's start
    after a seek in its cache) without rendering twice.
    """

    def __init__(self, render: Callable[[int], bytes], frames: int | None, ahead: int = 2, keep: int = 3,
                 on_close: Callable[[], None] = lambda: None) -> None:
        self._render, self._frames, self._ahead, self._keep = render, frames, ahead, keep
        self._on_close = on_close  # runs on the render thread (or here if it never started): never mid-render
        self._cond = threading.Condition()
        self._cache: OrderedDict[int, bytes | BaseException] = OrderedDict()
        self._want = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def close(self) -> None:
        """Stop rendering; the decoder is released once the frame being rendered (if any) is done."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            started = self._thread is not None
            self._cond.notify_all()
        if not started:
            self._on_close()

    def join(self, timeout: float) -> bool:
        """After :meth:`close`: wait for the render thread to leave the model; False if it is still running.
        (A process must not exit while a thread is inside a C++ runtime: its static destructors abort.)"""
        t = self._thread
        if t is not None:
            t.join(timeout)
        return t is None or not t.is_alive()

    def _target(self) -> int | None:
        last = self._want + self._ahead
        if self._frames is not None:
            last = min(last, self._frames - 1)
        for i in range(self._want, last + 1):
            if i not in self._cache:
                return i
        return None

    def _evict(self) -> None:
        for k in [k for k in self._cache if k < self._want - self._keep or k > self._want + self._ahead]:
            del self._cache[k]

    def _work(self) -> None:
        try:
            self._work_loop()
        finally:
            self._on_close()

    def _work_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (target := self._target()) is None:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                value: bytes | BaseException = self._render(target)
            except Exception as e:  # delivered to the reader, which closes its stream
                if not isinstance(e, EndOfStream):
                    log.error("frame %d: %s: %s", target, type(e).__name__, e)
                value = e
            with self._cond:
                self._cache[target] = value
                self._evict()
                self._cond.notify_all()

    def get(self, index: int, cancelled: Callable[[], bool] = lambda: False) -> bytes:
        """Record of frame ``index``; waits for the worker. Raises Cancelled or the render error."""
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._work, name="srunet-render", daemon=True)
                self._thread.start()
            self._want = index
            self._evict()
            self._cond.notify_all()
            while index not in self._cache:
                if self._closed or cancelled():
                    raise Cancelled(f"frame {index}")
                self._cond.wait(0.1)
            value = self._cache[index]
        if isinstance(value, BaseException):
            raise value
        return value
