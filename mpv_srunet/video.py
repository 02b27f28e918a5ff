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
from .errors import MediaError, UsageError
from .filter import Upscaler, out_size

log = logging.getLogger(__name__)

IMAGE_EXTS = {".png": "png", ".jpg": "mjpeg", ".jpeg": "mjpeg", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff"}
VIDEO_CODECS = {"libx265": "yuv420p", "libx264": "yuv420p", "ffv1": "yuv420p", "rawvideo": "yuv420p"}
_END = object()


@dataclass
class UpscaleOptions:
    codec: str = "libx265"
    crf: int = 18
    preset: str = "medium"
    pix_fmt: str | None = None  # default: follow the input's bit depth
    batch_size: int = 1
    queue_size: int = 4
    progress: bool = True


@dataclass
class UpscaleReport:
    """What a run did; ``lost_frames`` counts packets that decoded to nothing (corrupt input)."""

    frames: int = 0
    video_packets: int = 0
    bad_packets: int = 0
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


def open_input(src: str) -> Any:
    """Open INPUT with PyAV, mapping every failure to one clear line."""
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
        c = av.open(src, "r", timeout=(15.0, 30.0) if _is_url(src) else None)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise MediaError(f"{src}: cannot open as video or image ({_ffmpeg_msg(e)})") from None
    if not c.streams.video:
        c.close()
        raise MediaError(f"{src}: has no video stream")
    return c


def _ffmpeg_msg(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e).splitlines()[0][:160]


def _decode_frames(container: Any, report: UpscaleReport, on_packet: Callable[[Any], None]) -> Iterator[Any]:
    """Demux; yield decoded video frames; pass other streams' packets to ``on_packet``.
    Corrupt packets are counted and skipped (FFmpeg resynchronises at the next one)."""
    import av

    vstream = container.streams.video[0]
    vstream.thread_type = "AUTO"
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
                yield from packet.decode()
            except av.error.InvalidDataError:
                report.bad_packets += 1
    except av.error.FFmpegError as e:  # truncated file: keep what we decoded
        report.bad_packets += 1
        log.warning("demuxing stopped early: %s", _ffmpeg_msg(e))
    try:  # demux() already ends with a flush packet when the file is whole; this covers early stops
        yield from vstream.codec_context.decode(None)
    except av.error.EOFError:
        pass
    except av.error.FFmpegError:
        report.bad_packets += 1


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
    if not parent.is_dir():
        raise UsageError(f"{dst}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{dst}: folder {parent} is not writable")


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

        self.kind, self.colour = kind, colour
        w, h = size
        fmt = {"sequence": "image2", "image": "image2", "y4m": "yuv4mpegpipe"}.get(kind)
        # image2 with update=1 rewrites one file per frame: a multi-frame input to one image is
        # then refused cleanly after decoding (see _run) instead of failing inside the muxer.
        self.container = av.open(dst_tmp, "w", format=fmt, options={"update": "1"} if kind == "image" else None)
        codec, pix_fmt = output_format(dst_tmp, kind, opts, vin)
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        try:
            self.vs = self.container.add_stream(codec, rate=rate)
        except (av.error.FFmpegError, ValueError) as e:
            raise UsageError(f"unknown or unusable codec {codec!r} ({_ffmpeg_msg(e)})") from None
        self.vs.width, self.vs.height, self.vs.pix_fmt = w, h, pix_fmt
        if kind == "video" and vin.time_base:
            self.vs.codec_context.time_base = vin.time_base
        cc = self.vs.codec_context
        if pix_fmt.startswith("yuv") and not pix_fmt.startswith("yuvj"):
            cc.colorspace, cc.color_range = colour.avcol_spc, colour.avcol_range
        if codec == "libx265":
            self.vs.options = {"crf": str(opts.crf), "preset": opts.preset, "x265-params": "log-level=error"}
        elif codec == "libx264":
            self.vs.options = {"crf": str(opts.crf), "preset": opts.preset}
        self.copied: dict[int, Any] = {}
        if kind == "video":
            for s in src_container.streams:
                if s.type in ("audio", "subtitle"):
                    try:
                        self.copied[s.index] = self.container.add_stream_from_template(s)
                    except (av.error.FFmpegError, ValueError) as e:
                        log.warning("cannot copy %s stream #%d into this container: %s", s.type, s.index, _ffmpeg_msg(e))
        self.pix_fmt = pix_fmt

    def write_frame(self, y: np.ndarray, pts: int | None, time_base: Any) -> None:
        """Quantise one CHW float frame in [-1, 1] to the output format, convert, encode."""
        f = float_to_format(y.transpose(1, 2, 0), self.pix_fmt, self.colour)
        if self.kind == "video" and pts is not None:
            f.pts, f.time_base = pts, time_base
        mux(self.container, self.vs.encode(f))

    def write_planes(self, planes: np.ndarray, pts: int | None, time_base: Any) -> None:
        """Encode one (H*3/2, W) yuv420p frame from the GPU frame path (already in the source's
        matrix and range: nothing left to convert)."""
        import av

        f = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        f.colorspace, f.color_range = self.colour.avcol_spc, self.colour.avcol_range
        if self.kind == "video" and pts is not None:
            f.pts, f.time_base = pts, time_base
        mux(self.container, self.vs.encode(f))

    def write_packet(self, packet: Any) -> None:
        ostream = self.copied.get(packet.stream.index)
        if ostream is None:
            return
        packet.stream = ostream
        self.container.mux(packet)

    def close(self) -> None:
        mux(self.container, self.vs.encode())
        self.container.close()


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

    container = open_input(src)
    try:
        report = _run(container, src, dst, kind, upscaler, opts)
    except av.error.FFmpegError as e:
        raise MediaError(f"{dst}: FFmpeg failed while writing ({_ffmpeg_msg(e)})") from None
    finally:
        container.close()
    report.seconds = time.perf_counter() - t0
    return report


def _run(container: Any, src: str, dst: str, kind: str, upscaler: Upscaler, opts: UpscaleOptions) -> UpscaleReport:
    vin = container.streams.video[0]
    report = UpscaleReport()
    total = vin.frames or None
    dst_path = Path(dst)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dst_path.name.replace('%', '_')}.", dir=dst_path.resolve().parent))
    tmp_out = tmpdir / dst_path.name
    try:
        _pipeline(container, str(tmp_out), kind, upscaler, opts, vin, report, total)
        if report.frames == 0:
            raise MediaError(f"{src}: no video frame could be decoded")
        if kind == "image" and report.frames > 1:
            raise UsageError(f"{src}: has {report.frames} frames; write an image sequence such as out%04d.png")
        _commit(tmpdir, tmp_out, dst_path, kind)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return report


def _commit(tmpdir: Path, tmp_out: Path, dst: Path, kind: str) -> None:
    if kind == "sequence":
        for f in sorted(tmpdir.iterdir()):
            os.replace(f, dst.parent / f.name)
    elif kind == "image":
        produced = sorted(tmpdir.iterdir())
        os.replace(produced[0], dst)
    else:
        os.replace(tmp_out, dst)


def _pipeline(container: Any, tmp_out: str, kind: str, upscaler: Upscaler, opts: UpscaleOptions,
              vin: Any, report: UpscaleReport, total: int | None) -> None:
    from tqdm import tqdm

    q_in: queue.Queue = queue.Queue(maxsize=opts.queue_size)
    q_out: queue.Queue = queue.Queue(maxsize=opts.queue_size)
    errors: list[BaseException] = []
    stop = threading.Event()
    pending_packets: list[Any] = []
    writer_box: dict[str, _Writer] = {}
    ready = threading.Event()
    lock = threading.Lock()  # packets that arrive before the writer exists wait in `pending_packets`

    def on_packet(p: Any) -> None:
        with lock:
            if not ready.is_set():
                pending_packets.append(p)
                return
        q_out.put(("pkt", p))

    # the GPU frame path's yuv420p planes go to the encoder as they are
    planes_out = kind in ("video", "y4m") and output_format(tmp_out, kind, opts, vin)[1] == "yuv420p"

    def reader() -> None:
        try:
            for frame in _decode_frames(container, report, on_packet):
                if stop.is_set():
                    return
                colour = frame_colour(frame)
                if planes_out and upscaler.has_frame_path(frame, colour):
                    q_in.put((None, frame, colour))  # the GPU frame path: no float RGB on the CPU
                else:
                    q_in.put((frame_to_float(frame, colour).transpose(2, 0, 1), frame, colour))
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)
        finally:
            q_in.put(_END)

    def writer() -> None:
        try:
            while True:
                item = q_out.get()
                if item is _END:
                    break
                if errors:
                    continue
                tag, payload = item
                if tag == "pkt":
                    writer_box["w"].write_packet(payload)
                elif tag == "planes":
                    writer_box["w"].write_planes(*payload)
                else:
                    writer_box["w"].write_frame(*payload)
            if not errors:
                writer_box["w"].close()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            stop.set()
            while q_out.get() is not _END:  # drain so the producer never blocks
                pass

    threads = [threading.Thread(target=reader, name="srunet-decode", daemon=True)]
    threads[0].start()
    wt = threading.Thread(target=writer, name="srunet-encode", daemon=True)
    bar = tqdm(total=total, unit="frame", disable=not opts.progress, dynamic_ncols=True)
    try:
        _infer_loop(q_in, q_out, upscaler, opts, report, bar, errors, stop,
                    lambda size, colour: _start_writer(writer_box, wt, tmp_out, kind, opts, vin, container,
                                                       size, colour, pending_packets, q_out, ready, lock))
    finally:
        stop.set()
        bar.close()
        _drain(q_in)
        q_out.put(_END)
        threads[0].join()
        if wt.is_alive() or wt.ident:
            wt.join()
        if "w" in writer_box and errors:
            try:
                writer_box["w"].container.close()
            except Exception:  # noqa: BLE001 - already failing; the temp is removed
                pass
    if errors:
        raise errors[0]
    report.copied_streams = [f"{s.type}#{s.index}" for s in container.streams if s.type in ("audio", "subtitle")] \
        if kind == "video" else []


def _start_writer(box: dict, wt: threading.Thread, tmp_out: str, kind: str, opts: UpscaleOptions, vin: Any,
                  container: Any, size: tuple[int, int], colour: Colour, pending: list, q_out: queue.Queue,
                  ready: threading.Event, lock: threading.Lock) -> None:
    box["w"] = _Writer(tmp_out, kind, opts, vin, container, size, colour)
    wt.start()
    with lock:
        for p in pending:
            q_out.put(("pkt", p))
        pending.clear()
        ready.set()


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def _infer_loop(q_in: queue.Queue, q_out: queue.Queue, upscaler: Upscaler, opts: UpscaleOptions,
                report: UpscaleReport, bar: Any, errors: list, stop: threading.Event,
                start_writer: Callable[[tuple[int, int], Colour], None]) -> None:
    done = False
    while not done and not errors:
        batch = [q_in.get()]
        while len(batch) < opts.batch_size and batch[-1] is not _END:
            batch.append(q_in.get())
        if batch[-1] is _END:
            batch.pop()
            done = True
        if not batch:
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
            q_out.put((tag, (out, frame.pts, frame.time_base)))  # "frame": float CHW, "planes": yuv420p
            report.frames += 1
            bar.update(1)
