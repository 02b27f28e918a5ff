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
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import SRUNetError, UsageError
from ..signals import EXIT_SIGNALS, Signalled, exit_signals
from .media import Media, UpscalerPool, open_media
from .render import Cancelled
from .source import is_url

log = logging.getLogger(__name__)

PROTOCOL = "srunet"
HOOK_EVENT_ID = 25  # MPV_EVENT_HOOK
DEFAULT_KEYS = {"Alt+u": "toggle", "Alt+c": "compare", "Alt+i": "stats",
                "Alt+=": "strength-up", "Alt+-": "strength-down"}


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
    strength: float | None = None  # detail strength 0..1 of two-endpoint weights (None: the weights' default)
    model: str = "auto"  # preset without weights: default, lite, auto (doctor.pick_model)


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
        try:
            self.player = mpv.MPV(config=opts.config, input_default_bindings=True, input_vo_keyboard=True,
                                  osc=True, **kw)
        except (AttributeError, ValueError, TypeError) as e:  # python-mpv: (message, code, (handle, name, value))
            what = e.args[2][1:] if len(e.args) > 2 and isinstance(e.args[2], tuple) else ()
            opt = "=".join(x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in what)
            raise UsageError(f"mpv option {opt or '?'}: {e.args[0] if e.args else e}") from None
        # an installed srunet Lua script would upscale a second time through its own server
        self._try(self.player.command, "change-list", "script-opts", "append", "srunet-enabled=no")
        self.pool = UpscalerPool(opts.strength if opts.strength is not None else self._script_strength())
        self._strength_lock = threading.Lock()  # one re-blend at a time; the latest value wins
        self.media: dict[str, Media] = {}
        self.protocol = StreamProtocol(self.player, self.media)
        self.active: dict[str, Any] | None = None
        self.show_stats = False
        self._resume: float | None = None
        self._bypass = False
        self._n = 0
        self._slow = 0
        self._started = threading.Event()
        self._workers: list[threading.Thread] = []  # on_load preparations, strength swaps (inside the model)
        self._ended: list[Media] = []  # media of ended files, until their render threads are done
        self._hook_add, self._hook_continue = _hook_api(mpv)
        self.player.register_event_callback(self._on_event)
        self._hook_add(self.player._event_handle, 1, b"on_load", 50)
        # a page URL FFmpeg cannot open: mpv's ytdl_hook (priority 10) resolves it, then we upscale that
        self._hook_add(self.player._event_handle, 2, b"on_load_fail", 50)
        self._bypassed = False  # the current entry plays the original (a fallback reload)
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
            hook_id, failed_before = event.data.id, event.data.name == "on_load_fail"
            threading.Thread(target=self._on_load, args=(hook_id, failed_before), daemon=True).start()
        elif eid == 7 and self.active:  # MPV_EVENT_END_FILE
            media = self.media.pop(self.active["media"], None)
            self.active = None
            self._try(self.player.command, "vf", "remove", "@srunet-colour")
            if media is not None:
                media.close()  # close() still waits for its render threads: keep the unfinished ones
                self._ended = [m for m in self._ended if not m.close()] + [media]

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
        elif action in ("strength-up", "strength-down"):
            self.step_strength(0.1 if action == "strength-up" else -0.1)

    def _script_strength(self) -> float | None:
        """The Lua script's ``strength`` option (``--script-opts=srunet-strength=V``, else
        ``~~/script-opts/srunet.conf`` when the user's config is loaded), so both routes agree."""
        from ..weights import check_strength

        value = (self._try(getattr, self.player, "script_opts") or {}).get("srunet-strength")
        if value is None and self.opts.config:
            conf = self._try(self.player.expand_path, "~~/script-opts/srunet.conf")
            try:
                lines = open(conf).read().splitlines() if conf else []
            except OSError:
                lines = []
            for line in lines:
                key, sep, val = line.strip().partition("=")
                if sep and key.strip() == "strength":
                    value = val.strip()
        if value in (None, ""):
            return None
        try:
            return check_strength(value)
        except SRUNetError as e:
            log.warning("script-opts srunet-strength: %s; using the weights' default", e)
            return None

    def step_strength(self, delta: float) -> None:
        """Detail strength +-``delta``, live: re-blended and swapped between two frames (no reload)."""
        media = self.media.get(self.active["media"]) if self.active else None
        if media is not None and media.upscaler.strength is None:
            self.osd("detail strength: n/a (these weights have one endpoint)", 3)
            return
        cur = self.pool.strength
        if cur is None:
            cur = media.upscaler.strength if media is not None else 0.9
        value = min(1.0, max(0.0, round(cur + delta, 2)))
        self.pool.strength = value  # what new media and the next step start from
        self.osd(f"detail strength {value:.2f} (0 fidelity, 1 perceptual)", 2)
        worker = threading.Thread(target=self._apply_strength, name="srunet-strength", daemon=True)
        self._workers = [t for t in self._workers if t.is_alive()] + [worker]  # it rebuilds backends
        worker.start()

    def _apply_strength(self) -> None:
        with self._strength_lock:
            try:
                self.pool.set_strength(self.pool.strength)
            except SRUNetError as e:
                self.osd(f"detail strength: {e}", 5)

    def osd(self, text: str, secs: float = 4, *, fallback: bool = False) -> None:
        """An OSD line; ``fallback`` (the original plays instead) also goes to the terminal, without -v."""
        if fallback:
            print(f"mpv-srunet: {text}", file=sys.stderr, flush=True)
        else:
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
    def _on_load(self, hook_id: int, failed_before: bool = False) -> None:
        """Prepare the entry on a worker; continue the hook when done, or at once if playback is aborted
        (mpv waits for the hook even when the user quits)."""
        done, abandoned = threading.Event(), threading.Event()

        def work() -> None:
            try:
                self._prepare_entry(abandoned, failed_before)
            except Exception as e:  # never leave mpv waiting on the hook
                log.debug("on_load failed", exc_info=True)
                self.osd(f"off for this file: {type(e).__name__}: {e}", 6, fallback=True)
            finally:
                done.set()

        worker = threading.Thread(target=work, name="srunet-register", daemon=True)
        self._workers = [t for t in self._workers if t.is_alive()] + [worker]
        worker.start()
        while not done.wait(0.1):
            if self._closed.is_set() or self._try(getattr, self.player, "playback_abort"):
                log.info("playback aborted while preparing the upscaled stream")
                abandoned.set()
                break
        if not self._closed.is_set():
            self._hook_continue(self.player._event_handle, hook_id)

    def _prepare_entry(self, abandoned: threading.Event, failed_before: bool = False) -> None:
        p = self.player
        if not failed_before:
            self._bypassed = False
            if self._resume is not None:
                self._local("start", str(self._resume))
                self._resume = None
            if self._bypass:
                self._bypass, self._bypassed = False, True
                return
        if self._bypassed:
            return
        source = p.stream_open_filename or ""
        # edl://: what mpv's ytdl_hook makes of separate video and audio (the video track is upscaled)
        if not self.enabled or not source or (
                is_url(source) and not source.startswith(("http://", "https://", "file://", "edl://"))):
            return
        if not is_url(source):
            source = os.path.abspath(source)
        self._n += 1
        media_id = str(self._n)
        try:
            media, ms = open_media(media_id, source, self.pool, weights=self.opts.weights,
                                   backend=self.opts.backend, use_sidecar=self.opts.sidecar, model=self.opts.model)
        except SRUNetError as e:
            if source.startswith(("http://", "https://")) and ": cannot open (" in str(e):
                log.info("%s", e)  # a web page, not a video: ytdl_hook resolves it (on_load_fail)
                return
            self.osd(f"off for this file: {e}", 6, fallback=True)
            return
        if abandoned.is_set():  # the user moved on while we were loading
            media.close()
            return
        why = self._skip_reason(media, ms)
        if why:
            self.osd(f"playing the original: {why}", 5, fallback=True)
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
        if d["audio_files"] is not None:  # an EDL: its other tracks
            self._local("audio-files", list(p.audio_files or []) + d["audio_files"])
            if d["sub_files"]:
                self._local("sub-files", list(p.sub_files or []) + d["sub_files"])
        elif media.info.has_audio:
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
                self.osd(f"playing the original: the SR-UNet backend failed ({s['error']})", 6, fallback=True)
                self.reload(True)
            elif s["source_error"]:  # cut/stalled connection, or a seek the source cannot do
                self.osd(f"playing the original: reading the source failed ({s['source_error']})", 6, fallback=True)
                self.reload(True)
            elif self.opts.policy == "auto" and not self.opts.mpv_options.get("o"):
                starving = bool(self._try(getattr, self.player, "paused_for_cache"))
                self._slow = self._slow + 1 if starving and s["total_ms"] > 1000 / float(media.info.fps) else 0
                if self._slow >= 4:
                    self._slow = 0
                    self.osd(f"playing the original: the filter is too slow ({s['total_ms']:.0f} ms/frame)", 6,
                             fallback=True)
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

    def close(self, wait: float = 30.0) -> bool:
        """Stop rendering, destroy the mpv core, then wait up to ``wait`` s for every thread that may be
        inside the model (a C++ runtime such as onnxruntime aborts the process, "terminate called
        without an active exception", when it exits with one still running). True when none is left."""
        self._closed.set()
        deadline = time.monotonic() + wait
        media = list(self.media.values()) + self._ended
        self.media.clear()
        # first: blocked stream reads give up at once (so mpv can quit), renders finish their frame
        clean = all([m.close(wait=max(0.0, deadline - time.monotonic())) for m in media])
        self._monitor_thread.join(5)
        try:
            self.player.terminate()
        except Exception as e:  # already shut down by the user (q)
            log.debug("terminate: %s", e)
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
            clean = clean and not t.is_alive()
        return clean


def play_until_done(opts: PlayOptions, sources: list[str]) -> int:
    """``mpv-srunet play``: play until the playlist ends or the user quits (0), or a signal arrives
    (128 + its number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP). Either way mpv is
    destroyed and every render thread is done before the process exits."""

    def on_signal(signum: int, _frame: Any) -> None:
        raise Signalled(signum)

    previous = {s: signal.signal(s, on_signal) for s in exit_signals()}
    code, player, clean = 0, None, True
    try:
        player = SRUNetPlayer(opts)
        player.play(sources)
    except Signalled as e:
        code = e.exit_code
    finally:
        # ignored from here: a signal must not cut the (bounded) clean-up short, even the first one
        # arriving after a normal quit (raise_on_exit_signals would let that one through)
        for s in EXIT_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        try:
            if player is not None:
                clean = player.close()
        except Signalled as e:  # arrived before the handlers were swapped
            code = code or e.exit_code
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
    if code:
        print(f"mpv-srunet: stopped by {signal.Signals(code - 128).name}", file=sys.stderr, flush=True)
    if not clean:  # a model call did not return in time: leave now, without C++ static destructors
        log.warning("a render thread is still busy; exiting without waiting for it")
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code

