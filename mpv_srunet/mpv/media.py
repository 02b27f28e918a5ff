"""Registered media: one source, its upscaler, its y4m layout and one frame store per variant.

Shared by the HTTP frame server (Lua route) and the libmpv stream callbacks
(``mpv-srunet play``). Only media registered here can be served: a URL names a
registered id and a variant, never a path.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..colour import Colour, frame_colour
from ..errors import SRUNetError
from .render import VARIANTS, Cancelled, FrameRenderer, FrameStore, RenderStats
from .source import EndOfStream, FrameSource, SourceInfo, is_url, probe
from .y4m import Y4MLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpscalerKey:
    weights: str  # resolved path, "" for the default
    backend: str


class UpscalerPool:
    """One Upscaler per (weights, backend): reloading a model per file would cost seconds."""

    def __init__(self, strength: float | None = None) -> None:
        self._pool: dict[UpscalerKey, Any] = {}
        self._lock = threading.Lock()
        self.infer_lock = threading.Lock()
        #: detail strength for weights with two endpoints (None: each file's default)
        self.strength = strength

    def get(self, weights: str | None, backend: str) -> Any:
        from ..filter import Upscaler
        from ..weights import has_endpoints

        key = UpscalerKey(str(Path(weights).resolve()) if weights else "", backend)
        with self._lock:
            if key not in self._pool:
                # one-endpoint files (sidecars, the user's own) ignore the strength
                strength = self.strength if self.strength is not None and has_endpoints(weights or None) else None
                self._pool[key] = Upscaler(weights or None, backend=backend, strength=strength)
            return self._pool[key]

    def set_strength(self, strength: float) -> int:
        """Re-blend every pooled upscaler with two endpoints at ``strength``, between frames;
        returns how many changed (0: the weights in use have a single endpoint)."""
        from ..weights import check_strength

        s = check_strength(strength)
        with self._lock:
            self.strength = s
            ups = [u for u in self._pool.values() if u.strength is not None]
        for up in ups:
            up.set_strength(s)
        return len(ups)


def choose_weights(source: str, weights: str | None, use_sidecar: bool) -> str | None:
    """Per-video sidecar weights win (fine-tuned for that video), then ``weights``, then the default."""
    from ..weights import sidecar_weights_for

    if use_sidecar and not is_url(source):
        side = sidecar_weights_for(source)
        if side is not None:
            return str(side)
    return weights or None


def _first_frame(info: SourceInfo) -> Any:
    src = FrameSource(info)
    try:
        return src.frame_at(0) if info.seekable else src._live_next()
    finally:
        src.close()


class Media:
    """One registered source. Thread-safe: readers call :meth:`record`; stores render."""

    def __init__(self, media_id: str, info: SourceInfo, upscaler: Any, infer_lock: threading.Lock,
                 colour: Colour | None = None) -> None:
        self.id, self.info, self.upscaler = media_id, info, upscaler
        #: the first decoded frame (None when ``colour`` was given): colour and speed probe
        self.probe_frame = None if colour else _first_frame(info)
        self.colour = colour or frame_colour(self.probe_frame)
        ow = int(round(info.width * upscaler.scale)) & ~1
        oh = int(round(info.height * upscaler.scale)) & ~1
        self.layout = Y4MLayout(ow, oh, info.fps, info.frames, full_range=self.colour.full, sar=info.sar)
        self.stats = RenderStats()
        self._infer_lock = infer_lock
        self._stores: dict[str, tuple[FrameStore, FrameSource]] = {}
        self._lock = threading.Lock()
        self._closed_stores: list[FrameStore] = []  # joined by close(wait=...)
        self._closed = False  # no store (render thread) may start after close(): it would go unjoined
        self.generation: dict[str, int] = {v: 0 for v in VARIANTS}
        #: why the source could not be read (cut/stalled connection, a seek that cannot land): the
        #: script then plays the original at the current position
        self.source_error: str | None = None
        self.tracks: Any = None  # streams.ResolvedSource of an EDL source (its temporary files go at close)
        self.speed_source = "probe"  # where open_media's ms_per_frame came from: "doctor" (its cache) or "probe"

    def store(self, variant: str) -> FrameStore:
        if variant not in VARIANTS:
            raise KeyError(variant)
        with self._lock:
            if self._closed:  # a read that raced close(): its new render thread would outlive the join
                raise Cancelled(f"media {self.id} is closed")
            if variant not in self._stores:
                src = FrameSource(self.info)
                r = FrameRenderer(src, self.upscaler, self.layout, self.colour, variant, self.stats, self._infer_lock)
                self._stores[variant] = (FrameStore(r.render, self.info.frames, on_close=src.close), src)
            return self._stores[variant][0]

    def close(self, wait: float = 0.0) -> bool:
        """Stop rendering; each decoder closes on its render thread once the current frame is done.
        ``wait``: seconds to wait for those threads to finish; False if one is still rendering."""
        with self._lock:
            self._closed = True
            for store, _src in self._stores.values():
                store.close()
                self._closed_stores.append(store)
            self._stores.clear()
            if self.tracks is not None:
                self.tracks.close()
            stores = list(self._closed_stores)
        deadline = time.monotonic() + wait
        return all([store.join(max(0.0, deadline - time.monotonic())) for store in stores])

    def chunks(self, variant: str, offset: int, end: int | None, cancelled: Any) -> Iterator[memoryview]:
        """The bytes [offset, end) of the variant's y4m file, frame by frame."""
        header = self.layout.header
        pos = offset
        if pos < len(header):
            yield memoryview(header)[pos:end]
            pos = len(header)
        store = self.store(variant)
        while end is None or pos < end:
            k, intra = self.layout.locate(pos)
            if self.layout.frames is not None and k >= self.layout.frames:
                return
            try:
                rec = store.get(k, cancelled)
            except EndOfStream:
                return
            except SRUNetError as e:
                self.source_error = str(e)
                raise
            stop = len(rec) if end is None else min(len(rec), intra + end - pos)
            yield memoryview(rec)[intra:stop]
            pos += stop - intra

    def describe(self) -> dict[str, Any]:
        """What the Lua script and the OSD need (JSON-able)."""
        info, lay, up = self.info, self.layout, self.upscaler
        wi = getattr(up, "weights_info", None)
        return {
            "media": self.id, "width": info.width, "height": info.height,
            "out_width": lay.width, "out_height": lay.height,
            "fps": float(info.fps), "frames": info.frames, "seekable": info.seekable,
            "colormatrix": self.colour.mpv_matrix,
            "colorlevels": "full" if lay.full_range else "limited",
            "backend": up.backend_name, "model": wi.name if wi else "?",
            "weights": str(wi.path) if wi else "", "frame_bytes": lay.record_bytes,
            "strength": getattr(up, "strength", None),
            "has_audio": info.has_audio, "has_subs": info.has_subs,
            "speed_source": self.speed_source,
            # an EDL's other tracks (mpv URLs): played beside the upscaled video instead of the source
            "audio_files": self.tracks.audio if self.tracks else None,
            "sub_files": self.tracks.subs if self.tracks else None,
        }

    def stats_dict(self) -> dict[str, Any]:
        s = self.stats
        return {"media": self.id, "frames": s.frames, "model_ms": round(s.model_ms, 2),
                "total_ms": round(s.total_ms, 2), "error": s.error, "fallback": s.fallback,
                "source_error": self.source_error,
                "idle_s": round(time.monotonic() - s.updated, 2)}


def measure_ms_per_frame(upscaler: Any, info: SourceInfo, infer_lock: threading.Lock, runs: int = 2,
                         frame: Any = None, colour: Colour | None = None) -> float:
    """Filter time for one frame of this size (the last of ``runs``: the first one warms up).

    With a decoded ``frame`` the path the renderer will take is timed: the GPU frame
    path where it applies (:meth:`~mpv_srunet.filter.Upscaler.upscale_yuv420`), else
    the float path with its conversions."""
    import numpy as np

    has_frame_path = getattr(upscaler, "has_frame_path", None)
    use_frame = frame is not None and bool(has_frame_path and has_frame_path(frame, colour))
    x = None if use_frame else np.zeros((1, 3, info.height, info.width), np.float32)
    dt = 0.0
    for _ in range(runs):
        with infer_lock:
            t0 = time.perf_counter()
            if use_frame:
                upscaler.upscale_yuv420(frame, colour)
            else:
                upscaler.upscale_float(x)
            dt = time.perf_counter() - t0
    return dt * 1000.0


def _dash_manifest(source: str, workdir: str | None) -> Any:
    """A DASH manifest URL: PyAV's FFmpeg has no DASH demuxer, so yt-dlp's MPD parser lists the
    video's fragments (played from a generated playlist); mpv plays the manifest's audio itself."""
    from urllib.parse import urlsplit

    from ..streams import resolve_page

    if not (source.startswith(("http://", "https://")) and urlsplit(source).path.lower().endswith(".mpd")):
        return None
    tracks = resolve_page(source, workdir=workdir)
    tracks.audio = [source]
    return tracks


def open_media(media_id: str, source: str, pool: UpscalerPool, *, weights: str | None = None,
               backend: str = "auto", use_sidecar: bool = True, workdir: str | None = None,
               model: str = "default") -> tuple[Media, float]:
    """Probe, load the upscaler (cached) and warm it up: the registration step. SRUNetError on bad input.

    An ``edl://`` source (mpv's ytdl_hook: separate video and audio) upscales its video track;
    :meth:`Media.describe` lists the other tracks for mpv to play beside it; the playlists made for
    it go under ``workdir`` (the frame server's control folder, removed when the server exits)."""
    from ..streams import EDL_PREFIX, resolve_edl

    if not is_url(source) and not os.path.isfile(source):
        raise SRUNetError(f"{source}: no such file; expected a video file or URL")
    tracks = resolve_edl(source, workdir) if source.startswith(EDL_PREFIX) else _dash_manifest(source, workdir)
    try:
        info = probe(tracks.video.url, tracks.video.options) if tracks else probe(source)
        chosen = choose_weights(source, weights, use_sidecar)
        if chosen is None and model != "default":  # a model preset (doctor.pick_model: `auto` by its cache)
            from ..doctor import pick_model
            from ..weights import preset_weights_path

            preset, why = pick_model(model, backend, info.width, info.height, float(info.fps))
            log.info("model preset %s (%s)", preset, why)
            chosen = str(preset_weights_path(preset))
        up = pool.get(chosen, backend)
        media = Media(media_id, info, up, pool.infer_lock)
    except BaseException:
        if tracks:
            tracks.close()
        raise
    media.tracks = tracks
    from ..doctor import cached_ms

    ms = cached_ms(up, info.width, info.height)  # `mpv-srunet doctor` measured this machine: no probe needed
    media.speed_source = "doctor" if ms is not None else "probe"
    if ms is None:
        ms = measure_ms_per_frame(up, info, pool.infer_lock, frame=media.probe_frame, colour=media.colour)
    log.info("registered %s: %dx%d @ %.3f fps, %s frames, %.1f ms/frame on %s",
             source, info.width, info.height, float(info.fps), info.frames, ms, up.backend_name)
    return media, ms
