"""`mpv-srunet upscale INPUT OUTPUT`: upscale a video, stream URL or image with SR-UNet."""

from __future__ import annotations

import argparse
import sys

from ..video import VIDEO_CODECS
from . import options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upscale",
        help="upscale a video/stream/image file (2x, H.265 artifacts removed)",
        description="Every video frame goes through SR-UNet; audio and subtitles are copied, timestamps kept. "
        "OUTPUT type follows its name: .mkv/.mp4 (video), .y4m, name%04d.png or name%04d.jpg (image sequence; "
        "its folder is created), .png/.jpg (one image). Progress: a bar on a terminal, else a line every 10 %.",
    )
    p.add_argument("input", help="video or image file, or http(s) URL (anything FFmpeg opens)")
    p.add_argument("output", help="output file (written to a temp file and renamed on success)")
    options.add_weights(p)
    options.add_backend(p)
    options.add_model(p, "model preset when no --weights (default auto: files need no real time, so the best "
                      "quality, `default`); lite: a quarter of the compute")
    options.add_strength(p)
    options.add_cpu_speed(p)
    options.add_ytdl_format(p)
    p.add_argument("--codec", default="libx265", help=f"video encoder (default libx265; e.g. {', '.join(VIDEO_CODECS)})")
    p.add_argument("--crf", type=int, default=18, help="x265/x264 quality (default 18)")
    p.add_argument("--preset", default="medium", help="x265/x264 preset (default medium)")
    p.add_argument("--pix-fmt", default=None, help="output pixel format (default: yuv420p, or yuv420p10le for >8-bit input)")
    p.add_argument("--batch", type=int, default=1, help="frames per model call (default 1)")
    options.add_overwrite(p)
    options.add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import UsageError
    from ..signals import Signalled, raise_on_exit_signals
    from ..video import check_paths

    options.checked_strength(args)
    check_paths(args.input, args.output)
    if "%" not in args.output and Path(args.output).exists() and not args.overwrite:
        raise UsageError(f"{args.output}: exists; pass --overwrite to replace it")
    if not 0 <= args.crf <= 51:
        raise UsageError(f"--crf {args.crf}: expected 0..51")
    backend_opts = options.cpu_backend_options(args)
    try:  # SIGTERM/SIGHUP/SIGINT: the temporary output is removed, exit 143/129/130
        with raise_on_exit_signals():
            return _upscale(args, backend_opts)
    except Signalled as e:
        print(f"mpv-srunet: interrupted by {e}; nothing written", file=sys.stderr)
        return e.exit_code


def _upscale(args: argparse.Namespace, backend_opts: dict) -> int:
    from ..filter import Upscaler
    from ..video import UpscaleOptions, upscale_file

    opts = UpscaleOptions(codec=args.codec, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt,
                          batch_size=max(1, args.batch), progress=not args.no_progress,
                          ytdl_format=args.ytdl_format)
    with Upscaler(options.weights_for_file(args), backend=args.backend, batch_size=opts.batch_size, strength=args.strength,
                  **backend_opts) as up:
        rep = upscale_file(args.input, args.output, up, opts)
        fps = rep.frames / rep.seconds if rep.seconds else 0.0
        bad = max(rep.bad_packets, rep.lost_frames)
        extra = f"; input damaged: {bad} packet(s) skipped, {rep.lost_frames} frame(s) lost, " \
                f"{rep.damaged_frames} frame(s) decoded with errors" if bad or rep.damaged_frames else ""
        copied = f", copied {', '.join(rep.copied_streams)}" if rep.copied_streams else ""
        print(f"{args.output}: {rep.frames} frames {rep.in_size[0]}x{rep.in_size[1]} -> {rep.out_size[0]}x{rep.out_size[1]} "
              f"with {up.backend_name} in {rep.seconds:.1f} s ({fps:.2f} fps){copied}{extra}")
    return 0
