"""``mpv-srunet play``: libmpv in-process (python-mpv), upscaled frames fed through stream callbacks.

The same virtual y4m layout as the Lua route (:mod:`mpv_srunet.mpv.y4m`), but
served by libmpv's stream-callback API under ``srunet://<media>/<variant>``, so no
socket and no second process. python-mpv's own ``register_stream_protocol`` copies
byte by byte (~24 MB/s, too slow past 720p); ours copies with ``ctypes.memmove``.

The behaviour mirrors ``srunet/main.lua``: an ``on_load`` hook registers each
playlist entry and points it at the upscaled stream, audio/chapters/subtitles come
from the original, keys toggle SR / compare / stats (``script-message srunet
toggle|compare|stats``, rebindable in input.conf), and failures or a too-slow
filter (policy ``auto``) play the original with an OSD line.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import SRUNetError
from .media import Media, UpscalerPool, open_media
from .render import Cancelled
from .source import is_url

log = logging.getLogger(__name__)

PROTOCOL = "srunet"
HOOK_EVENT_ID = 25  # MPV_EVENT_HOOK
DEFAULT_KEYS = {"Alt+u": "toggle", "Alt+c": "compare", "Alt+i": "stats"}


class _Y4MStream:
    """One opened ``srunet://`` stream: a read position over a media's virtual y4m file."""

    def __init__(self, media: Media, variant: str) -> None:
        self.media, self.variant = media, variant
        self.pos = 0
        self.cancelled = threading.Event()

    def read_into(self, buf: int, size: int) -> int:
        lay = self.media.layout
        total = lay.size
        if total is not None and self.pos >= total:
            return 0
        hlen = len(lay.header)
        if self.pos < hlen:
            data, start = lay.header, self.pos
        else:
            k, start = lay.locate(self.pos)
            data = self.media.store(self.variant).get(k, self.cancelled.is_set)
        n = min(size, len(data) - start)
        ctypes.memmove(buf, ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value + start, n)
        self.pos += n
        return n

    def seek(self, offset: int) -> int:
        total = self.media.layout.size
        if total is None or offset < 0 or offset > total:
            return -1
        self.pos = offset
        return offset


class StreamProtocol:
    """Registers ``srunet://`` with libmpv; keeps every ctypes callback alive while mpv may call it."""

    def __init__(self, player: Any, media: dict[str, Media]) -> None:
        import mpv

        self._mpv, self._media = mpv, media
        self._streams: dict[int, tuple[_Y4MStream, Any]] = {}
        self._retired: list[tuple[_Y4MStream, Any]] = []
        self._next = 1
        self._open_cb = mpv.StreamOpenFn(self._open)
        mpv._mpv_stream_cb_add_ro(player.handle, PROTOCOL.encode(), None, self._open_cb)

    def _retire(self, cookie: int) -> None:
        """Called from the close callback itself, so its ctypes objects must outlive this call:
        they are freed at the next open, never while libmpv may still be running them."""
        entry = self._streams.pop(cookie, None)
        if entry is not None:
            entry[0].cancelled.set()
            self._retired.append(entry)

    def _open(self, _userdata: Any, uri: bytes, info: Any) -> int:
        self._retired.clear()
        try:
            media_id, variant = uri.decode()[len(PROTOCOL) + 3:].split("/", 1)
            stream = _Y4MStream(self._media[media_id], variant)
        except (KeyError, ValueError):
            return -13  # MPV_ERROR_LOADING_FAILED
        mpv, cookie = self._mpv, self._next
        self._next += 1

        def read(_c: Any, buf: Any, size: int) -> int:
            try:
                return stream.read_into(ctypes.cast(buf, ctypes.c_void_p).value, size)
            except Cancelled:
                return -1
            except Exception as e:  # mpv treats -1 as an error and ends the file
                log.error("srunet stream read at %d: %s: %s", stream.pos, type(e).__name__, e)
                return -1

        cbs = (
            mpv.StreamReadFn(read),
            mpv.StreamSeekFn(lambda _c, off: stream.seek(off)),
            mpv.StreamSizeFn(lambda _c: stream.media.layout.size or -1),
            mpv.StreamCloseFn(lambda _c: self._retire(cookie)),
            mpv.StreamCancelFn(lambda _c: stream.cancelled.set()),
        )
        c = info.contents
        c.cookie = ctypes.c_void_p(cookie)
        c.read, c.seek, c.size, c.close, c.cancel = cbs
        if stream.media.layout.size is None:  # live: not seekable, unknown size
            c.seek, c.size = mpv.StreamSeekFn(), mpv.StreamSizeFn()
        self._streams[cookie] = (stream, cbs)
        return 0


@dataclass
class PlayOptions:
    """The same knobs as the Lua script's options."""

    weights: str | None = None
    backend: str = "auto"
    sidecar: bool = True
    policy: str = "auto"  # auto | wait
    realtime_margin: float = 1.0
    max_height: int = 0
    compare: bool = False
    enabled: bool = True
    readahead_secs: float = 1.0
    mpv_options: dict[str, str] = field(default_factory=dict)
    config: bool = True  # load the user's mpv.conf, input.conf and scripts
    mpv_log_level: str | None = None  # forward mpv's log to Python logging at this mpv level (e.g. "info")


def _forward_mpv_log(level: str, prefix: str, text: str) -> None:
    lvl = {"fatal": logging.ERROR, "error": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO}.get(level, logging.DEBUG)
    logging.getLogger("mpv." + prefix).log(lvl, "%s", text.rstrip())


def _hook_api(mpv: Any) -> tuple[Any, Any]:
    add, cont = mpv.backend.mpv_hook_add, mpv.backend.mpv_hook_continue
    add.argtypes, add.restype = [mpv.MpvHandle, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_int], ctypes.c_int
    cont.argtypes, cont.restype = [mpv.MpvHandle, ctypes.c_uint64], ctypes.c_int
    return add, cont


class SRUNetPlayer:
    """A python-mpv player whose playlist entries are upscaled on the fly."""

    def __init__(self, opts: PlayOptions) -> None:
        import mpv

        self.opts = opts
        self.enabled, self.compare = opts.enabled, opts.compare
        self._closed = threading.Event()
        kw: dict[str, Any] = {k.replace("-", "_"): v for k, v in opts.mpv_options.items()}
        if opts.mpv_log_level:
            kw.update(loglevel=opts.mpv_log_level, log_handler=_forward_mpv_log)
        self.player = mpv.MPV(config=opts.config, input_default_bindings=True, input_vo_keyboard=True,
                              osc=True, **kw)
        # an installed srunet Lua script would upscale a second time through its own server
        self._try(self.player.command, "change-list", "script-opts", "append", "srunet-enabled=no")
        self.pool = UpscalerPool()
        self.media: dict[str, Media] = {}
        self.protocol = StreamProtocol(self.player, self.media)
        self.active: dict[str, Any] | None = None
        self.show_stats = False
        self._resume: float | None = None
        self._bypass = False
        self._n = 0
        self._slow = 0
        self._started = threading.Event()
        self._hook_add, self._hook_continue = _hook_api(mpv)
        self.player.register_event_callback(self._on_event)
        self._hook_add(self.player._event_handle, 1, b"on_load", 50)
        self.player.register_message_handler("srunet", self._on_message)
        for key, action in DEFAULT_KEYS.items():
            self.player.register_key_binding(key, f"script-message srunet {action}", mode="default")
        self._monitor_thread = threading.Thread(target=self._monitor, name="srunet-monitor", daemon=True)
        self._monitor_thread.start()

    # ------------------------------------------------------------------ events
    def _on_event(self, event: Any) -> None:
        eid = event.event_id.value
        if eid == 6:  # MPV_EVENT_START_FILE
            self._started.set()
        if eid == HOOK_EVENT_ID:
            hook_id = event.data.id
            threading.Thread(target=self._on_load, args=(hook_id,), daemon=True).start()
        elif eid == 7 and self.active:  # MPV_EVENT_END_FILE
            media = self.media.pop(self.active["media"], None)
            self.active = None
            self._try(self.player.command, "vf", "remove", "@srunet-colour")
            if media is not None:
                media.close()

    def _on_message(self, *args: bytes) -> None:
        action = args[0].decode() if args else ""
        if action == "toggle":
            self.enabled = not self.enabled
            self.osd(f"{'on' if self.enabled else 'off'}", 2)
            self.reload(False)
        elif action == "compare":
            self.compare = not self.compare
            self.osd("compare: left bicubic | right SR-UNet" if self.compare else "compare off", 2)
            if self.active:
                self.reload(False)
        elif action == "stats":
            self.show_stats = not self.show_stats

    def osd(self, text: str, secs: float = 4) -> None:
        log.info("%s", text)
        self._try(self.player.command, "show-text", f"SR-UNet: {text}", int(secs * 1000))

    def _try(self, fn: Any, *args: Any) -> Any:
        if self._closed.is_set():  # the handle is (being) destroyed: calling into libmpv would crash
            return None
        try:
            return fn(*args)
        except Exception as e:  # the core may be shutting down
            log.debug("mpv command %s failed: %s", args[:2], e)
            return None

    def reload(self, bypass: bool) -> None:
        self._resume = self._try(getattr, self.player, "time_pos")
        self._bypass = bypass
        self._try(self.player.command, "playlist-play-index", "current")

    # ------------------------------------------------------------------ on_load
    def _on_load(self, hook_id: int) -> None:
        """Prepare the entry on a worker; continue the hook when done, or at once if playback is aborted
        (mpv waits for the hook even when the user quits)."""
        done, abandoned = threading.Event(), threading.Event()

        def work() -> None:
            try:
                self._prepare_entry(abandoned)
            except Exception as e:  # never leave mpv waiting on the hook
                log.exception("on_load failed")
                self.osd(f"off for this file: {e}", 6)
            finally:
                done.set()

        threading.Thread(target=work, name="srunet-register", daemon=True).start()
        while not done.wait(0.1):
            if self._try(getattr, self.player, "playback_abort"):
                log.info("playback aborted while preparing the upscaled stream")
                abandoned.set()
                break
        if not self._closed.is_set():
            self._hook_continue(self.player._event_handle, hook_id)

    def _prepare_entry(self, abandoned: threading.Event) -> None:
        p = self.player
        if self._resume is not None:
            self._local("start", str(self._resume))
            self._resume = None
        if self._bypass:
            self._bypass = False
            return
        source = p.stream_open_filename or ""
        if not self.enabled or not source or (is_url(source) and not source.startswith(("http://", "https://", "file://"))):
            return
        if not is_url(source):
            source = os.path.abspath(source)
        self._n += 1
        media_id = str(self._n)
        try:
            media, ms = open_media(media_id, source, self.pool, weights=self.opts.weights,
                                   backend=self.opts.backend, use_sidecar=self.opts.sidecar)
        except SRUNetError as e:
            self.osd(f"off for this file: {e}", 6)
            return
        if abandoned.is_set():  # the user moved on while we were loading
            media.close()
            return
        why = self._skip_reason(media, ms)
        if why:
            self.osd(f"playing the original: {why}", 5)
            media.close()
            return
        self.media[media_id] = media
        self._apply(media, source)
        self.active = {"media": media_id, "ms": ms, "source": source}

    def _local(self, name: str, value: Any) -> None:
        """Set a per-file option (reset by mpv when the file ends)."""
        self.player._set_property("file-local-options/" + name, value)

    def _skip_reason(self, media: Media, ms: float) -> str | None:
        info, o = media.info, self.opts
        if o.max_height and info.height > o.max_height:
            return f"video is {info.height} lines, max_height={o.max_height}"
        budget = 1000.0 / float(info.fps) * o.realtime_margin
        encoding = bool(self.opts.mpv_options.get("o"))
        if o.policy == "auto" and not encoding and ms > budget:
            return f"too slow here: {ms:.0f} ms/frame on {media.upscaler.backend_name}, the video needs {1000 / float(info.fps):.0f} (policy=auto)"
        return None

    def _apply(self, media: Media, source: str) -> None:
        p, d = self.player, media.describe()
        variant = "compare" if self.compare else "sr"
        self._local("force-media-title", p.media_title or os.path.basename(source))
        if media.info.has_audio:
            self._local("audio-files", list(p.audio_files or []) + [source])
        if not is_url(source):
            self._local("chapters-file", source)
            if media.info.has_subs:
                self._local("sub-files", list(p.sub_files or []) + [source])
        self._local("hr-seek", "yes")
        ahead = max(4, int(d["fps"] * self.opts.readahead_secs + 0.999))
        self._local("demuxer-max-bytes", str(d["frame_bytes"] * ahead))
        self._local("demuxer-max-back-bytes", str(d["frame_bytes"] * int(d["fps"] + 0.999)))
        if self.opts.policy == "wait":  # resume after a few frames, not mpv's default second
            self._local("cache-pause-wait", str(3 / d["fps"]))
        self._try(p.command, "vf", "pre",
                  f"@srunet-colour:format=colormatrix={d['colormatrix']}:colorlevels={d['colorlevels']}")
        p._set_property("stream-open-filename", f"{PROTOCOL}://{media.id}/{variant}")
        log.info("upscaling %dx%d -> %dx%d with %s", d["width"], d["height"], d["out_width"], d["out_height"], d["backend"])

    # ------------------------------------------------------------------ monitor
    def _monitor(self) -> None:
        """Backend failure -> original; policy auto -> original when mpv starves; stats OSD."""
        while not self._closed.wait(0.5):
            a = self.active
            media = self.media.get(a["media"]) if a else None
            if media is None:
                if self.show_stats:
                    self._try(self.player.command, "show-text", "SR-UNet: off (original video)", 1000)
                continue
            s = media.stats_dict()
            if self.show_stats:
                self._try(self.player.command, "show-text", self._stats_text(media, s), 1000)
            if s["fallback"]:
                self.osd(f"playing the original: the SR-UNet backend failed ({s['error']})", 6)
                self.reload(True)
            elif self.opts.policy == "auto" and not self.opts.mpv_options.get("o"):
                starving = bool(self._try(getattr, self.player, "paused_for_cache"))
                self._slow = self._slow + 1 if starving and s["total_ms"] > 1000 / float(media.info.fps) else 0
                if self._slow >= 4:
                    self._slow = 0
                    self.osd(f"playing the original: the filter is too slow ({s['total_ms']:.0f} ms/frame)", 6)
                    self.reload(True)

    def _stats_text(self, media: Media, s: dict[str, Any]) -> str:
        d, p = media.describe(), self.player
        late = self._try(getattr, p, "vo_delayed_frame_count") or 0
        drops = self._try(getattr, p, "frame_drop_count") or 0
        return (f"SR-UNet {d['backend']}\nmodel: {d['model']}\n"
                f"{d['width']}x{d['height']} -> {d['out_width']}x{d['out_height']} @ {d['fps']:.3f} fps\n"
                f"filter {s['model_ms']:.1f} ms/frame, total {s['total_ms']:.1f} ms/frame\n"
                f"late {late}  dropped {drops}  frames served {s['frames']}")

    # ------------------------------------------------------------------ run
    def play(self, sources: list[str]) -> None:
        """Play ``sources`` as a playlist; return when it ends (libmpv idles instead of quitting) or on quit."""
        for i, src in enumerate(sources):
            self.player.loadfile(src, "replace" if i == 0 else "append")
        while not self._started.wait(0.2):
            if self.player.core_shutdown:
                return
        while not self.player.core_shutdown:
            try:
                if self.player.idle_active:
                    return
            except Exception:  # shut down between the two checks
                return
            time.sleep(0.2)

    def close(self) -> None:
        self._closed.set()
        self._monitor_thread.join(5)
        try:
            self.player.terminate()
        except Exception as e:  # already shut down by the user (q)
            log.debug("terminate: %s", e)
        for m in list(self.media.values()):
            m.close()
