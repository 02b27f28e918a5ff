"""`mpv-srunet upscale`: decode -> SR-UNet -> encode, with audio/subtitles copied.

Three stages overlap: a reader thread demuxes and decodes (PyAV releases the GIL)
and converts frames to float RGB; the calling thread runs the model; a writer
thread converts back, encodes and muxes, and also muxes the copied audio and
subtitle packets (FFmpeg's interleaver orders them by timestamp). So the wall time
approaches that of the slowest stage, the model. With a backend that has the GPU
frame path (torch-cuda) and 8-bit yuv420p in and out, frames skip both float
conversions: decoded planes go to the GPU and its output planes to the encoder.

Nothing appears at OUTPUT until everything succeeded: we write to a temporary
file (or folder, for image sequences) beside it and rename at the end; Ctrl-C or
an error removes the temporary.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .colour import Colour, float_to_format, frame_colour, frame_to_float
from .decoder import PtsRepair, configure_decoder
from .errors import MediaError, UsageError
from .filter import Upscaler, out_size
from .progress import finish as finish_progress
from .progress import progress_bar

log = logging.getLogger(__name__)

IMAGE_EXTS = {".png": "png", ".jpg": "mjpeg", ".jpeg": "mjpeg", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff"}
VIDEO_CODECS = {"libx265": "yuv420p", "libx264": "yuv420p", "ffv1": "yuv420p", "rawvideo": "yuv420p"}
_END = object()
#: How long a pipeline thread waits on a queue before it checks whether the run was aborted.
POLL_S = 0.1


@dataclass
class UpscaleOptions:
    codec: str = "libx265"
    crf: int = 18
    preset: str = "medium"
    pix_fmt: str | None = None  # default: follow the input's bit depth
    batch_size: int = 1
    queue_size: int = 4
    progress: bool = True
    ytdl_format: str | None = None  # web pages / DASH manifests (yt-dlp): None = mpv's default


@dataclass
class UpscaleReport:
    """What a run did; ``lost_frames`` counts packets that decoded to nothing (corrupt input),
    ``damaged_frames`` frames the decoder flagged corrupt (kept, as a player shows them)."""

    frames: int = 0
    video_packets: int = 0
    bad_packets: int = 0
    damaged_frames: int = 0
    stopped_early: str | None = None  # why demuxing ended before the end of the input
    copied_streams: list[str] = field(default_factory=list)
    in_size: tuple[int, int] = (0, 0)
    out_size: tuple[int, int] = (0, 0)
    seconds: float = 0.0

    @property
    def lost_frames(self) -> int:
        return max(0, self.video_packets - self.frames)


# --------------------------------------------------------------------------- input


def _is_url(s: str) -> bool:
    return "://" in s


def open_input(src: str, options: dict[str, str] | None = None) -> Any:
    """Open INPUT with PyAV, mapping every failure to one clear line (``options``: FFmpeg's, e.g. headers)."""
    import av

    if not _is_url(src):
        p = Path(src)
        if not p.exists():
            raise MediaError(f"{src}: no such file")
        if p.is_dir():
            raise MediaError(f"{src}: is a directory, expected a video or image file")
        if p.stat().st_size == 0:
            raise MediaError(f"{src}: empty file (0 bytes)")
    try:
        c = av.open(src, "r", options=options, timeout=(15.0, 30.0) if _is_url(src) or options else None)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise MediaError(f"{src}: cannot open as video or image ({_ffmpeg_msg(e)})") from None
    if not c.streams.video:
        c.close()
        raise MediaError(f"{src}: has no video stream")
    if c.streams.video[0].codec_context is None:
        c.close()
        raise MediaError(f"{src}: no decoder for its video stream (an unknown codec, or a damaged header)")
    return c


def _ffmpeg_msg(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e).splitlines()[0][:160]


def _decode_frames(container: Any, report: UpscaleReport, on_packet: Callable[[Any], None]) -> Iterator[Any]:
    """Demux; yield decoded video frames; pass other streams' packets to ``on_packet``.
    Corrupt packets are counted and skipped (FFmpeg resynchronises at the next one)."""
    import av

    vstream = container.streams.video[0]
    configure_decoder(vstream)
    copied = {s.index for s in container.streams if s.type in ("audio", "subtitle")}
    try:
        for packet in container.demux():
            if packet.stream.index in copied:
                if packet.size:
                    on_packet(packet)
                continue
            if packet.stream.index != vstream.index:
                continue
            report.video_packets += 1 if packet.size else 0
            try:
                yield from _count_damaged(packet.decode(), report)
            except av.error.InvalidDataError:
                report.bad_packets += 1
    except av.error.FFmpegError as e:  # truncated file or broken connection: keep what we decoded
        report.bad_packets += 1
        report.stopped_early = _ffmpeg_msg(e)  # reported by _run: kept (a file) or the run fails (a URL)
    try:  # demux() already ends with a flush packet when the file is whole; this covers early stops
        for f in _count_damaged(vstream.codec_context.decode(None), report):
            if f.time_base is None:  # drained frames carry none; their pts are in the packets' time base
                f.time_base = vstream.time_base
            yield f
    except av.error.EOFError:
        pass
    except av.error.FFmpegError:
        report.bad_packets += 1


def _count_damaged(frames: list, report: UpscaleReport) -> list:
    report.damaged_frames += sum(1 for f in frames if f.is_corrupt)
    return frames


# --------------------------------------------------------------------------- output


def output_kind(dst: str) -> str:
    """'sequence', 'image', 'y4m' or 'video' from OUTPUT's name."""
    ext = Path(dst).suffix.lower()
    if "%" in Path(dst).name:
        if ext not in IMAGE_EXTS:
            raise UsageError(f"{dst}: an image sequence needs an image extension ({', '.join(IMAGE_EXTS)})")
        return "sequence"
    if ext in IMAGE_EXTS:
        return "image"
    if ext == ".y4m":
        return "y4m"
    if ext in (".mkv", ".mp4", ".mov", ".webm", ".nut", ".avi", ".ts"):
        return "video"
    raise UsageError(f"{dst}: unknown output type {ext or '(none)'!r}; use .mkv/.mp4, .y4m, .png or name%04d.png")


def check_paths(src: str, dst: str) -> None:
    if not _is_url(src) and Path(dst).resolve() == Path(src).resolve():
        raise UsageError(f"{dst}: output is the same file as the input")
    parent = Path(dst).resolve().parent
    if "%" in Path(dst).name:  # an image sequence's missing folder is created when it is complete
        parent = _existing_ancestor(parent)
    if not parent.is_dir():
        raise UsageError(f"{dst}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{dst}: folder {parent} is not writable")


def _existing_ancestor(folder: Path) -> Path:
    """``folder`` or its closest existing ancestor."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


# Longest decode delay (pts - dts) we accept from an encoder; anything beyond is not a delay.
MAX_DECODE_DELAY_S = 60.0


def mux(container: Any, packets: Any) -> int:
    """Mux encoder packets, repairing libx265's decode timestamps on very short clips; returns bytes.

    x265 sets its B-frame delay time only once it has received more frames than that
    delay (2 with the default presets), so every packet of a clip of 2 frames carries a
    dts built from uninitialised memory: the muxer then fails at random ("Invalid
    argument" when that dts lands after the pts) or writes nonsense. Such clips cannot
    reorder frames, so a packet whose dts lies after its pts, or further than
    ``MAX_DECODE_DELAY_S`` before it, gets dts = pts.
    """
    total = 0
    for p in packets:
        if p.dts is not None and p.pts is not None and p.time_base:
            if p.dts > p.pts or (p.pts - p.dts) * p.time_base > MAX_DECODE_DELAY_S:
                p.dts = p.pts
        total += p.size
        container.mux(p)
    return total


def output_format(dst: str, kind: str, opts: UpscaleOptions, vin: Any) -> tuple[str, str]:
    """(encoder, pixel format) of the output."""
    if kind in ("sequence", "image"):
        codec = IMAGE_EXTS[Path(dst).suffix.lower()]
        return codec, "yuvj420p" if codec == "mjpeg" else "rgb24"
    if kind == "y4m":
        return "rawvideo", opts.pix_fmt or _follow_depth("yuv420p", vin)
    return opts.codec, opts.pix_fmt or _follow_depth(VIDEO_CODECS.get(opts.codec, "yuv420p"), vin)


class _Writer:
    """Owns the output container: encodes upscaled frames and muxes copied packets."""

    def __init__(self, dst_tmp: str, kind: str, opts: UpscaleOptions, vin: Any, src_container: Any,
                 size: tuple[int, int], colour: Colour) -> None:
        import av

        copy = kind == "video"
        try:
            self._open(dst_tmp, kind, opts, vin, src_container, size, colour, copy)
            self.container.start_encoding()  # the header now: a stream it cannot take is dropped here
        except av.error.FFmpegError as e:
            self.abandon()
            if not (copy and self.copied):
                raise MediaError(f"cannot write the output's header ({_ffmpeg_msg(e)})") from None
            log.warning("cannot write the copied streams (%s); dropping them: %s",
                        ", ".join(f"#{i}" for i in self.copied), _ffmpeg_msg(e))
            self._open(dst_tmp, kind, opts, vin, src_container, size, colour, False)
            try:
                self.container.start_encoding()
            except av.error.FFmpegError as e2:
                self.abandon()
                raise MediaError(f"cannot write the output's header ({_ffmpeg_msg(e2)})") from None

    def abandon(self) -> None:
        try:
            self.container.close()
        except Exception as e:  # noqa: BLE001 - a container whose header failed; its file is a temporary
            log.debug("closing the abandoned output: %s", e)

    def _open(self, dst_tmp: str, kind: str, opts: UpscaleOptions, vin: Any, src_container: Any,
              size: tuple[int, int], colour: Colour, copy: bool) -> None:
        import av

        self.kind, self.colour = kind, colour
        w, h = size
        fmt = {"sequence": "image2", "image": "image2", "y4m": "yuv4mpegpipe"}.get(kind)
        # image2 with update=1 rewrites one file per frame: a multi-frame input to one image is
        # then refused cleanly after decoding (see _run) instead of failing inside the muxer.
        self.container = av.open(dst_tmp, "w", format=fmt, options={"update": "1"} if kind == "image" else None)
        codec, pix_fmt = output_format(dst_tmp, kind, opts, vin)
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        self._pts = PtsRepair(rate)
        try:
            self.vs = self.container.add_stream(codec, rate=rate)
        except (av.error.FFmpegError, ValueError) as e:
            raise UsageError(f"unknown or unusable codec {codec!r} ({_ffmpeg_msg(e)})") from None
        self.vs.width, self.vs.height, self.vs.pix_fmt = w, h, pix_fmt
        if kind == "video" and vin.time_base:
            self.vs.codec_context.time_base = vin.time_base
        cc = self.vs.codec_context
        if kind in ("video", "y4m"):  # anamorphic sources (720x480 8:9, 1440x1080 4:3) keep their shape
            from .mpv.source import sample_aspect_ratio

            cc.sample_aspect_ratio = sample_aspect_ratio(vin)
        if pix_fmt.startswith("yuv") and not pix_fmt.startswith("yuvj"):
            cc.colorspace, cc.color_range = colour.avcol_spc, colour.avcol_range
        if codec == "libx265":
            self.vs.options = {"crf": str(opts.crf), "preset": opts.preset, "x265-params": "log-level=error"}
        elif codec == "libx264":
            self.vs.options = {"crf": str(opts.crf), "preset": opts.preset}
        self.copied: dict[int, Any] = {}
        self.dropped_packets = 0
        if copy:
            for s in src_container.streams:
                if s.type == "audio" and not (s.codec_context.sample_rate and s.codec_context.channels):
                    # e.g. a cut MPEG-TS whose audio never got a packet: FFmpeg knows no sample rate
                    log.warning("dropping audio stream #%d: no sample rate or channels known "
                                "(no packet of it could be read)", s.index)
                elif s.type in ("audio", "subtitle"):
                    try:
                        self.copied[s.index] = self.container.add_stream_from_template(s)
                    except (av.error.FFmpegError, ValueError) as e:
                        log.warning("cannot copy %s stream #%d into this container: %s", s.type, s.index, _ffmpeg_msg(e))
        self.pix_fmt = pix_fmt

    def write_frame(self, y: np.ndarray, pts: int | None, time_base: Any) -> None:
        """Quantise one CHW float frame in [-1, 1] to the output format, convert, encode."""
        f = float_to_format(y.transpose(1, 2, 0), self.pix_fmt, self.colour)
        self._stamp(f, pts, time_base)
        mux(self.container, self.vs.encode(f))

    def write_planes(self, planes: np.ndarray, pts: int | None, time_base: Any) -> None:
        """Encode one (H*3/2, W) yuv420p frame from the GPU frame path (already in the source's
        matrix and range: nothing left to convert)."""
        import av

        f = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        f.colorspace, f.color_range = self.colour.avcol_spc, self.colour.avcol_range
        self._stamp(f, pts, time_base)
        mux(self.container, self.vs.encode(f))

    def _stamp(self, f: Any, pts: int | None, time_base: Any) -> None:
        """The source's timestamps, repaired where damage made them impossible (see PtsRepair):
        the muxer refuses timestamps that do not increase."""
        if self.kind == "video" and time_base and (pts := self._pts(pts, time_base)) is not None:
            f.pts, f.time_base = pts, time_base

    def write_packet(self, packet: Any) -> None:
        import av

        ostream = self.copied.get(packet.stream.index)
        if ostream is None:
            return
        packet.stream = ostream
        try:
            self.container.mux(packet)
        except av.error.ArgumentError as e:  # EINVAL: a damaged timestamp (before the previous one)
            self.dropped_packets += 1
            log.debug("copied packet of stream #%d (dts %s) dropped: %s", packet.stream.index, packet.dts, e)

    def close(self) -> None:
        mux(self.container, self.vs.encode())
        self.container.close()
        if self.dropped_packets:
            log.warning("%d damaged audio/subtitle packet(s) dropped (timestamps out of order)", self.dropped_packets)


def _follow_depth(base: str, vin: Any) -> str:
    """Default output pixel format: gray stays gray, > 8-bit input gets 10-bit output."""
    fmt = vin.codec_context.format
    if fmt is None or base != "yuv420p":
        return base
    high = any(c.bits > 8 for c in fmt.components)
    if fmt.name.startswith("gray"):
        return "gray10le" if high else "gray"
    return "yuv420p10le" if high else base


# --------------------------------------------------------------------------- pipeline


def upscale_file(src: str, dst: str, upscaler: Upscaler, opts: UpscaleOptions | None = None) -> UpscaleReport:
    """Upscale every video frame of ``src`` into ``dst`` (see module docstring)."""
    import time

    opts = opts or UpscaleOptions()
    kind = output_kind(dst)
    check_paths(src, dst)
    t0 = time.perf_counter()
    import av

    container, resolved = _open_source(src, opts.ytdl_format)
    separate = resolved.separate_audio if resolved is not None and kind == "video" else []
    # separate audio (yt-dlp, an EDL): the video goes to a hidden file beside DST first, then both are muxed
    target = str(Path(dst).with_name(f".{Path(dst).stem}.{os.getpid()}.video{Path(dst).suffix}")) if separate else dst
    try:
        report = _run(container, src, target, kind, upscaler, opts)
        if separate:
            report.copied_streams += _mux_separate_audio(Path(target), separate, Path(dst))
    except av.error.FFmpegError as e:
        raise MediaError(f"{dst}: FFmpeg failed while writing ({_ffmpeg_msg(e)})") from None
    finally:
        container.close()
        if resolved is not None:
            resolved.close()
        if separate:
            Path(target).unlink(missing_ok=True)
    report.seconds = time.perf_counter() - t0
    return report


def _open_source(src: str, ytdl_format: str | None = None) -> tuple[Any, Any]:
    """The input container, and for an mpv EDL or a web page (yt-dlp) its resolved tracks (to close)."""
    from .streams import EDL_PREFIX, resolve_edl, resolve_page

    resolved = None
    if src.startswith(EDL_PREFIX):
        resolved = resolve_edl(src)
    else:
        try:
            return open_input(src), None
        except MediaError:
            if not src.startswith(("http://", "https://")):
                raise
            resolved = resolve_page(src, ytdl_format)  # a page, not a media URL: MediaError with a hint without yt-dlp
    try:
        container = open_input(resolved.video.url, resolved.video.options)
    except BaseException:
        resolved.close()
        raise
    return container, resolved


def _mux_separate_audio(video_file: Path, audio: list[Any], dst: Path) -> list[str]:
    """Stream-copy the upscaled video and the separate audio tracks (streams.Track) into DST, in
    timestamp order; written to a temporary file and renamed, so a failure leaves nothing."""
    import heapq

    import av

    tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.mux{dst.suffix}")
    inputs = [av.open(str(video_file))]
    try:
        from .mpv.source import open_container

        inputs += [open_container(t.url, t.options) for t in audio]
        mapping: dict[tuple[int, int], Any] = {}
        copied = []
        with av.open(str(tmp), "w") as out:
            for ci, c in enumerate(inputs):
                for st in (c.streams if ci == 0 else c.streams.audio):
                    mapping[(ci, st.index)] = out.add_stream_from_template(st)
                    if ci:
                        copied.append(f"audio#{st.index} of {audio[ci - 1].url}")

            def packets(ci: int, c: Any) -> Iterator[tuple[float, int, Any]]:
                for p in c.demux(*[st for st in c.streams if (ci, st.index) in mapping]):
                    if p.dts is not None and p.size:
                        yield float(p.dts * p.time_base), ci, p

            for _t, ci, p in heapq.merge(*(packets(ci, c) for ci, c in enumerate(inputs)), key=lambda x: x[0]):
                p.stream = mapping[(ci, p.stream.index)]
                out.mux(p)
        os.replace(tmp, dst)
        return copied
    except av.error.FFmpegError as e:
        raise MediaError(f"{dst}: cannot add the separate audio ({_ffmpeg_msg(e)})") from None
    finally:
        for c in inputs:
            c.close()
        tmp.unlink(missing_ok=True)


def _ended_early(container: Any, report: UpscaleReport) -> bool:
    """A URL whose demuxer ended "cleanly" well before its announced duration (FFmpeg's HLS demuxer
    skips segments it cannot fetch): more than a second of video missing."""
    vin = container.streams.video[0]
    fps = float(vin.average_rate or vin.guessed_rate or 0)
    if not container.duration or not fps:
        return False  # live or unknown length
    return report.frames < (container.duration / 1e6 - 1.0) * fps


def _estimated_frames(container: Any, vin: Any) -> int | None:
    """Frames from the duration, for the progress display of containers that do not count them."""
    rate = vin.average_rate or vin.guessed_rate
    seconds = float(vin.duration * vin.time_base) if vin.duration and vin.time_base else (
        container.duration / 1e6 if container.duration else 0.0)
    return max(1, round(seconds * rate)) if rate and seconds > 0 else None


def _run(container: Any, src: str, dst: str, kind: str, upscaler: Upscaler, opts: UpscaleOptions) -> UpscaleReport:
    vin = container.streams.video[0]
    report = UpscaleReport()
    total = vin.frames or _estimated_frames(container, vin)
    dst_path = Path(dst).resolve()
    # a missing sequence folder: the temporary folder is made where it would be, and renamed to it
    tmp_parent = _existing_ancestor(dst_path.parent) if kind == "sequence" else dst_path.parent
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dst_path.name.replace('%', '_')}.", dir=tmp_parent))
    tmp_out = tmpdir / dst_path.name
    try:
        _pipeline(container, str(tmp_out), kind, upscaler, opts, vin, report, total)
        if report.stopped_early and _is_url(src) and not report.stopped_early.startswith("End of file"):
            raise MediaError(f"{src}: reading failed after {report.frames} frame(s) ({report.stopped_early})")
        if _is_url(src) and _ended_early(container, report):
            raise MediaError(f"{src}: the stream ended after {report.frames} frame(s), before its announced "
                             f"{container.duration / 1e6:.1f} s (connection cut?)")
        if report.frames == 0:
            cause = f" (reading stopped: {report.stopped_early})" if report.stopped_early else ""
            raise MediaError(f"{src}: no video frame could be decoded{cause}")
        if report.stopped_early:
            log.warning("%s: reading stopped early (%s); keeping the %d frame(s) decoded",
                        src, report.stopped_early, report.frames)
        if kind == "image" and report.frames > 1:
            raise UsageError(f"{src}: has {report.frames} frames; write an image sequence such as out%04d.png")
        _commit(tmpdir, tmp_out, dst_path, kind)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return report


def _commit(tmpdir: Path, tmp_out: Path, dst: Path, kind: str) -> None:
    if kind == "sequence" and not dst.parent.exists():
        dst.parent.parent.mkdir(parents=True, exist_ok=True)
        tmpdir.chmod(0o777 & ~_umask())  # mkdtemp's folder is private; the user's folder is not
        os.rename(tmpdir, dst.parent)
    elif kind == "sequence":
        for f in sorted(tmpdir.iterdir()):
            os.replace(f, dst.parent / f.name)
    elif kind == "image":
        produced = sorted(tmpdir.iterdir())
        os.replace(produced[0], dst)
    else:
        os.replace(tmp_out, dst)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _Stages:
    """The queues between the three threads and the abort flag they all check.

    Once the run is aborted (an error in any thread, or a signal in the main thread), no
    thread waits on a queue for more than ``POLL_S``: every error path ends the run in
    bounded time, with no end sentinel that has to arrive.
    """

    def __init__(self, size: int) -> None:
        self.q_in: queue.Queue = queue.Queue(maxsize=size)  # reader -> model
        self.q_out: queue.Queue = queue.Queue(maxsize=size)  # model and copied packets -> writer
        self.abort = threading.Event()
        self.errors: list[BaseException] = []

    def fail(self, e: BaseException) -> None:
        self.errors.append(e)
        self.abort.set()

    def put(self, q: queue.Queue, item: Any) -> bool:
        """Queue ``item``; False (not queued) once the run is aborted."""
        while not self.abort.is_set():
            try:
                q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue) -> Any:
        """The next item, or ``_END`` once the run is aborted and nothing is left."""
        while True:
            try:
                return q.get(timeout=POLL_S)
            except queue.Empty:
                if self.abort.is_set():
                    return _END


def _pipeline(container: Any, tmp_out: str, kind: str, upscaler: Upscaler, opts: UpscaleOptions,
              vin: Any, report: UpscaleReport, total: int | None) -> None:
    st = _Stages(opts.queue_size)
    pending_packets: list[Any] = []
    writer_box: dict[str, _Writer] = {}
    ready = threading.Event()
    lock = threading.Lock()  # packets that arrive before the writer exists wait in `pending_packets`

    def on_packet(p: Any) -> None:
        with lock:
            if not ready.is_set():
                pending_packets.append(p)
                return
        st.put(st.q_out, ("pkt", p))

    # the GPU frame path's yuv420p planes go to the encoder as they are
    planes_out = kind in ("video", "y4m") and output_format(tmp_out, kind, opts, vin)[1] == "yuv420p"

    def reader() -> None:
        try:
            for frame in _decode_frames(container, report, on_packet):
                colour = frame_colour(frame)
                if planes_out and upscaler.has_frame_path(frame, colour):
                    item = (None, frame, colour)  # the GPU frame path: no float RGB on the CPU
                else:
                    item = (frame_to_float(frame, colour).transpose(2, 0, 1), frame, colour)
                if not st.put(st.q_in, item):
                    return
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            st.fail(e)
        finally:
            st.put(st.q_in, _END)

    def writer() -> None:
        w = writer_box["w"]
        try:
            while not st.abort.is_set():
                item = st.get(st.q_out)
                if item is _END:
                    break
                tag, payload = item
                if tag == "pkt":
                    w.write_packet(payload)
                elif tag == "planes":
                    w.write_planes(*payload)
                else:
                    w.write_frame(*payload)
            if not st.abort.is_set():
                w.close()
        except BaseException as e:  # noqa: BLE001
            st.fail(e)

    rt = threading.Thread(target=reader, name="srunet-decode", daemon=True)
    wt = threading.Thread(target=writer, name="srunet-encode", daemon=True)
    rt.start()
    bar = progress_bar(total, "upscale", "frame", opts.progress)
    finished = False
    try:
        _infer_loop(st, upscaler, opts, report, bar,
                    lambda size, colour: _start_writer(writer_box, wt, tmp_out, kind, opts, vin, container,
                                                       size, colour, pending_packets, st, ready, lock))
        if st.put(st.q_out, _END) and wt.ident:
            wt.join()  # the encoder's flush and the trailer
        finished = True
        if not st.errors and not report.stopped_early:  # the whole input: an estimated total ends at 100 %
            finish_progress(bar, report.frames)
    finally:
        st.abort.set()  # whatever is still running stops within POLL_S (or its current packet)
        bar.close()
        rt.join()
        if wt.ident:
            wt.join()
        if "w" in writer_box and (st.errors or not finished):
            writer_box["w"].abandon()
    if st.errors:
        raise st.errors[0]
    if "w" in writer_box:
        kinds = {s.index: s.type for s in container.streams}
        report.copied_streams = [f"{kinds[i]}#{i}" for i in writer_box["w"].copied]


def _start_writer(box: dict, wt: threading.Thread, tmp_out: str, kind: str, opts: UpscaleOptions, vin: Any,
                  container: Any, size: tuple[int, int], colour: Colour, pending: list, st: _Stages,
                  ready: threading.Event, lock: threading.Lock) -> None:
    box["w"] = _Writer(tmp_out, kind, opts, vin, container, size, colour)
    wt.start()
    with lock:
        for p in pending:
            st.put(st.q_out, ("pkt", p))
        pending.clear()
        ready.set()


def _infer_loop(st: _Stages, upscaler: Upscaler, opts: UpscaleOptions, report: UpscaleReport, bar: Any,
                start_writer: Callable[[tuple[int, int], Colour], None]) -> None:
    done = False
    while not done and not st.abort.is_set():
        batch = [st.get(st.q_in)]
        while len(batch) < opts.batch_size and batch[-1] is not _END:
            batch.append(st.get(st.q_in))
        if batch[-1] is _END:
            batch.pop()
            done = True
        if not batch or st.abort.is_set():
            continue
        w, h = batch[0][1].width, batch[0][1].height
        if any((b[1].width, b[1].height) != (w, h) for b in batch) or (report.frames and (w, h) != report.in_size):
            raise MediaError("the video changes frame size mid-stream; split it first")
        floats = [b[0] for b in batch if b[0] is not None]  # None: the GPU frame path takes it
        ys = iter(upscaler.upscale_float(np.stack(floats)) if floats else ())
        outs = [("frame", next(ys)) if x is not None else ("planes", upscaler.upscale_yuv420(frame, colour))
                for x, frame, colour in batch]
        if not report.frames:
            report.in_size, report.out_size = (w, h), out_size(h, w, upscaler.cfg)[::-1]
            start_writer(report.out_size, batch[0][2])
        for (_, frame, _c), (tag, out) in zip(batch, outs):
            if not st.put(st.q_out, (tag, (out, frame.pts, frame.time_base))):  # "frame": float CHW, "planes": yuv420p
                return
            report.frames += 1
            bar.update(1)
