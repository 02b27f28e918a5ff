"""Decoding the original video for the frame server: probing and frame-exact random access.

The virtual y4m file is constant-frame-rate, so output frame ``k`` shows the source
frame on screen at ``k / fps`` (the last one whose timestamp is <= that time, half a
frame of tolerance): variable-frame-rate sources are duplicated/dropped to the
average rate, as mpv's own ``--vf=fps`` would. Seeking decodes from the keyframe
before the target, like mpv's exact seeks.

The number of frames comes from the video's own last packets, not the container's
duration (an HLS playlist's or the audio's can run past the video). Some demuxers
do not land on a keyframe before the target: FFmpeg's HLS demuxer skips forward to
the next keyframe *after* it, or to nothing at all near the end of a segment. A
seek is therefore checked, retried from earlier and earlier points, and as a last
resort the source is reopened and decoded forward from its start.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator

from ..errors import MediaError
from ..decoder import PtsRepair, configure_decoder

log = logging.getLogger(__name__)

#: Network sources give up after this long without data (microseconds, FFmpeg's unit).
RW_TIMEOUT_US = "15000000"
#: PyAV's own limit on one blocking read (seconds), shorter than ``RW_TIMEOUT_US``: a stalled HLS
#: segment then fails the read (an error we report) instead of being skipped by the demuxer (a gap).
READ_TIMEOUT_S = 10.0
#: A jump between two frames of a network source longer than this (seconds) is lost data, not video.
MAX_GAP_S = 1.0
#: A forward jump of fewer frames than this is decoded through instead of seeking.
SEEK_THRESHOLD_FRAMES = 48
#: How far before the end the frame count is read from the video's packets (seconds, retried further back).
TAIL_SCAN_S = (4.0, 16.0, 64.0)


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
    #: FFmpeg options to open ``url`` with (a generated playlist's protocol whitelist, yt-dlp's headers)
    options: dict[str, str] = field(default_factory=dict)
    #: sample (pixel) aspect ratio: 8:9 / 32:27 for 720x480 DVD, 4:3 for 1440x1080 HDV; 1 when square/unknown
    sar: Fraction = Fraction(1)

    @property
    def seekable(self) -> bool:
        return self.frames is not None


def open_container(url: str, options: dict[str, str] | None = None) -> Any:
    """Open a file or URL with PyAV; MediaError with FFmpeg's reason on failure."""
    import av

    opts = {"rw_timeout": RW_TIMEOUT_US} if is_url(url) or options else {}
    try:
        return av.open(url, options={**opts, **(options or {})}, timeout=READ_TIMEOUT_S)
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


def probe(url: str, options: dict[str, str] | None = None) -> SourceInfo:
    """Probe the first video stream of ``url`` (no decoding beyond FFmpeg's own probe)."""
    with open_container(url, options) as c:
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
                counted = _count_frames(c, v, fps, start, dur)
                frames = counted or max(1, int(round(dur * float(fps))))
        return SourceInfo(
            url=url, width=v.codec_context.width, height=v.codec_context.height, fps=fps, frames=frames,
            start_time=start, has_audio=bool(c.streams.audio), has_subs=bool(c.streams.subtitles),
            options=dict(options or {}), sar=sample_aspect_ratio(v),
        )


def sample_aspect_ratio(stream: Any) -> Fraction:
    """The stream's sample aspect ratio (container, else codec), 1 when absent or nonsensical."""
    for sar in (getattr(stream, "sample_aspect_ratio", None), getattr(stream.codec_context, "sample_aspect_ratio", None)):
        if sar and sar.numerator > 0 and sar.denominator > 0 and 0.1 <= float(sar) <= 10:
            return Fraction(sar.numerator, sar.denominator)
    return Fraction(1)


def _count_frames(container: Any, stream: Any, fps: Fraction, start: float, duration: float) -> int | None:
    """Frames up to the end of the video's last packet (demuxed, not decoded), or None if unreadable."""
    tb = stream.time_base
    if not tb:
        return None
    for back in TAIL_SCAN_S:
        end = None
        try:
            container.seek(max(0, int((start + max(0.0, duration - back)) / tb)), stream=stream, backward=True)
            for pkt in container.demux(stream):
                if pkt.pts is not None:
                    e = float(pkt.pts * tb) + (float(pkt.duration * tb) if pkt.duration else 1 / float(fps))
                    end = e if end is None else max(end, e)
        except Exception as e:  # a demuxer that cannot seek there: try further back, else the duration
            log.debug("frame count from %.1f s before the end: %s", back, e)
        if end is not None:
            return max(1, int(round((end - start) * float(fps))))
        if back >= duration:
            break
    return None


class FrameSource:
    """Random access to source frames by output frame index (see module docstring)."""

    def __init__(self, info: SourceInfo) -> None:
        self.info = info
        self._open()
        self._it: Iterator[Any] | None = None
        self._cur: Any = None  # frame shown at the last index served
        self._peek: Any = None  # next decoded frame (not yet shown)
        self._next_index: int | None = None
        self._eof = False
        self._error: Exception | None = None  # why decoding stopped early (I/O, data), None at a clean end

    def _open(self) -> None:
        self._container = open_container(self.info.url, self.info.options)
        self._stream = self._container.streams.video[0]
        configure_decoder(self._stream)  # damaged frames kept, as `upscale` does

    def close(self) -> None:
        self._container.close()

    def _time(self, frame: Any) -> float:
        # the stream's time base: frames drained from the codec context carry the codec's instead
        t = float(frame.pts * self._stream.time_base) if frame.pts is not None else 0.0
        return t - self.info.start_time

    def _decoded(self) -> Iterator[Any]:
        """Decode packet by packet: a damaged packet is skipped, the decoder resynchronises at the
        next one (as players do); a demuxing error (I/O, a cut stream) still ends the source."""
        import av

        repair = PtsRepair(self.info.fps)  # damaged timestamps would freeze the frame index
        for packet in self._container.demux(self._stream):
            try:
                for frame in packet.decode():
                    frame.pts = repair(frame.pts, self._stream.time_base)
                    yield frame
            except av.error.InvalidDataError as e:
                log.debug("%s: damaged packet at %s skipped: %s", self.info.url, packet.pts, e)

    def _pull(self) -> Any:
        if self._it is None:
            self._it = self._decoded()
        try:
            frame = next(self._it)
        except StopIteration:
            self._eof = True
            return None
        except Exception as e:  # I/O or data error (a live stream's end is often one): drain the decoder
            if self._eof:
                return None
            log.warning("%s: %s: %s; ending at the frames decoded so far", self.info.url, type(e).__name__, e)
            self._eof, self._error = True, e
            try:
                rest = list(self._stream.codec_context.decode(None))
            except Exception:  # the decoder may be unusable too
                rest = []
            self._it = iter(rest)
            return next(self._it, None)
        return frame

    def _seek_to(self, t: float) -> float | None:
        """One demuxer seek to ``t``; the time of the first frame decoded after it, or None."""
        self._it, self._cur, self._peek, self._eof, self._error = None, None, None, False, None
        target = int((t + self.info.start_time) / float(self._stream.time_base))
        try:
            self._container.seek(max(0, target), stream=self._stream, backward=True, any_frame=False)
        except Exception as e:  # e.g. EPERM past the end of an HLS playlist
            log.debug("seek to %.3f s failed: %s", t, e)
            return None
        self._peek = self._pull()
        return None if self._peek is None else self._time(self._peek)

    def _seek(self, t: float) -> None:
        """Make the next decoded frame one at or before ``t`` (see the module docstring)."""
        tol = 0.5 / float(self.info.fps)
        back = 0.0
        while True:
            landed = self._seek_to(max(0.0, t - back))
            log.debug("seek to %.3f s: first frame at %s", t - back, landed)
            if landed is not None and landed <= t + tol:
                return
            if self._error is not None:  # a cut or stalled connection: retrying would only wait again
                raise MediaError(f"{self.info.url}: reading failed at {t:.2f} s ({self._error})")
            if t - back <= 0:
                break
            back = 1.0 if back == 0 else 2 * back
        log.info("%s: no seek lands before %.3f s; decoding from the start", self.info.url, t)
        self._container.close()
        self._open()
        self._it, self._cur, self._eof, self._error = None, None, False, None
        self._peek = self._pull()

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
        if self._peek is not None and self._cur is not None and self._time(self._peek) - self._time(self._cur) > \
                MAX_GAP_S and (is_url(self.info.url) or self.info.options):
            # FFmpeg's HLS/DASH demuxers skip a segment they cannot fetch: a frozen frame, then a jump
            raise MediaError(f"{self.info.url}: {self._time(self._peek) - self._time(self._cur):.1f} s of video "
                             f"missing after {self._time(self._cur):.2f} s (a segment could not be read)")
        if self._cur is None:
            raise MediaError(f"{self.info.url}: no video frame could be decoded at frame {index}")
        if self._peek is None and self._time(self._cur) < t - 1.5 / fps and (
                self._error is not None or index < self.info.frames - max(2, round(fps / 2))):
            # the source broke off before this frame (a cut or stalled connection; FFmpeg's HLS demuxer
            # skips segments it cannot open and ends "cleanly"): never serve a frozen last frame for the
            # rest of a VOD; the script plays the original instead
            why = self._error or "the stream ended early"
            raise MediaError(f"{self.info.url}: reading failed before frame {index} ({why})")
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
