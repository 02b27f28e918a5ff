"""Decoding the original video for the frame server: probing and frame-exact random access.

The virtual y4m file is constant-frame-rate, so output frame ``k`` shows the source
frame on screen at ``k / fps`` (the last one whose timestamp is <= that time, half a
frame of tolerance): variable-frame-rate sources are duplicated/dropped to the
average rate, as mpv's own ``--vf=fps`` would. Seeking decodes from the keyframe
before the target, like mpv's exact seeks.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterator

from ..errors import MediaError

log = logging.getLogger(__name__)

#: Network sources give up after this long without data (microseconds, FFmpeg's unit).
RW_TIMEOUT_US = "15000000"
#: A forward jump of fewer frames than this is decoded through instead of seeking.
SEEK_THRESHOLD_FRAMES = 48


def is_url(s: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", s) is not None


class EndOfStream(Exception):
    """A live source has no more frames: the served stream ends there."""


@dataclass(frozen=True)
class SourceInfo:
    """What the frame server needs to know about a source before serving it."""

    url: str
    width: int
    height: int
    fps: Fraction
    frames: int | None  # None: live / unknown length (served unbounded, not seekable)
    start_time: float  # seconds of the first video frame
    has_audio: bool
    has_subs: bool

    @property
    def seekable(self) -> bool:
        return self.frames is not None


def open_container(url: str) -> Any:
    """Open a file or URL with PyAV; MediaError with FFmpeg's reason on failure."""
    import av

    opts = {"rw_timeout": RW_TIMEOUT_US} if is_url(url) else {}
    try:
        return av.open(url, options=opts, timeout=float(RW_TIMEOUT_US) / 1e6)
    except Exception as e:  # av.error.* and OSError: one line for the user
        raise MediaError(f"{url}: cannot open ({e}); expected a video file or URL FFmpeg can read") from e


def _duration_seconds(container: Any, stream: Any) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:  # Matroska writes a per-track "HH:MM:SS.nnnnnnnnn" tag
        m = re.match(r"^(\d+):(\d+):(\d+(?:\.\d+)?)$", tag.strip())
        if m:
            return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    if container.duration:
        return container.duration / 1e6
    return None


def _frame_rate(stream: Any) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) <= 1000:
            return Fraction(rate.numerator, rate.denominator).limit_denominator(1001000)
    raise MediaError(f"video stream has no usable frame rate (average {stream.average_rate}); cannot map frames to time")


def http_seekable(url: str, timeout: float = 10.0) -> bool:
    """Whether an http(s) server honours byte ranges (what FFmpeg needs to seek); live feeds do not."""
    import urllib.request

    req = urllib.request.Request(url, headers={"Range": "bytes=0-0", "User-Agent": "mpv-srunet"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status == 206 and "/" in (r.headers.get("Content-Range") or "") \
                and not r.headers["Content-Range"].endswith("/*")
    except OSError as e:
        log.debug("%s: range probe failed (%s): serving it live", url, e)
        return False


def probe(url: str) -> SourceInfo:
    """Probe the first video stream of ``url`` (no decoding beyond FFmpeg's own probe)."""
    with open_container(url) as c:
        if not c.streams.video:
            raise MediaError(f"{url}: no video stream; expected a video")
        v = c.streams.video[0]
        fps = _frame_rate(v)
        start = float(v.start_time * v.time_base) if v.start_time is not None and v.time_base else 0.0
        frames: int | None = None
        if url.startswith(("http://", "https://")) and not http_seekable(url):
            frames = None  # served as a live stream: mpv plays it through, no seeking
        elif v.frames and v.frames > 0:
            frames = int(v.frames)
        else:
            dur = _duration_seconds(c, v)
            if dur is not None and dur > 0:
                frames = max(1, int(round(dur * float(fps))))
        return SourceInfo(
            url=url, width=v.codec_context.width, height=v.codec_context.height, fps=fps, frames=frames,
            start_time=start, has_audio=bool(c.streams.audio), has_subs=bool(c.streams.subtitles),
        )


class FrameSource:
    """Random access to source frames by output frame index (see module docstring)."""

    def __init__(self, info: SourceInfo) -> None:
        self.info = info
        self._container = open_container(info.url)
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._it: Iterator[Any] | None = None
        self._cur: Any = None  # frame shown at the last index served
        self._peek: Any = None  # next decoded frame (not yet shown)
        self._next_index: int | None = None
        self._eof = False

    def close(self) -> None:
        self._container.close()

    def _time(self, frame: Any) -> float:
        return (float(frame.time) if frame.time is not None else 0.0) - self.info.start_time

    def _pull(self) -> Any:
        if self._it is None:
            self._it = self._container.decode(self._stream)
        try:
            frame = next(self._it)
        except StopIteration:
            self._eof = True
            return None
        except Exception as e:  # I/O or data error (a live stream's end is often one): drain the decoder
            if self._eof:
                return None
            log.warning("%s: %s: %s; ending at the frames decoded so far", self.info.url, type(e).__name__, e)
            self._eof = True
            try:
                rest = list(self._stream.codec_context.decode(None))
            except Exception:  # the decoder may be unusable too
                rest = []
            self._it = iter(rest)
            return next(self._it, None)
        return frame

    def _seek(self, t: float) -> None:
        target = int((t + self.info.start_time) / float(self._stream.time_base))
        self._container.seek(max(0, target), stream=self._stream, backward=True, any_frame=False)
        self._it, self._cur, self._eof = None, None, False
        self._peek = self._pull()
        log.debug("seek to %.3f s: first frame at %s", t, None if self._peek is None else self._time(self._peek))

    def frame_at(self, index: int) -> Any:
        """The source frame shown at output frame ``index`` (the last frame again past the end)."""
        if not self.info.seekable:
            return self._live_next()
        fps = float(self.info.fps)
        if self._it is None and self._peek is None:  # fresh: decode from the start
            self._peek = self._pull()
        last = -1 if self._next_index is None else self._next_index
        need_seek = index < last - 1 or index - max(last, 0) > SEEK_THRESHOLD_FRAMES
        if need_seek:
            self._seek(index / fps)
        t = index / fps + 0.5 / fps
        while self._peek is not None and (self._cur is None or self._time(self._peek) <= t):
            self._cur, self._peek = self._peek, self._pull()
        if self._cur is None:
            raise MediaError(f"{self.info.url}: no video frame could be decoded at frame {index}")
        self._next_index = index + 1
        return self._cur

    def _live_next(self) -> Any:
        frame = self._pull()
        if frame is None:
            if self._cur is None:
                raise MediaError(f"{self.info.url}: the stream ended before its first video frame")
            raise EndOfStream(self.info.url)
        self._cur = frame
        return frame

    @property
    def ended(self) -> bool:
        """True once a live source has no more frames."""
        return self._eof
