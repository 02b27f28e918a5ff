"""`mpv-srunet doctor`: which backends work here (and why not), and measured ms/frame per size and preset."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="what runs here (CUDA, TensorRT, ONNX Runtime, torch.compile, mpv, script, shader) and how fast",
        description="Checks every runtime and the mpv set-up, then measures ms/frame at 540p, 720p and 1080p input "
        "for each backend that runs here and each model preset, with the frame rates (24/30/60) each keeps "
        "in real time. The measurements are cached per machine (user cache dir); the mpv script's policy=auto "
        "and model=auto decide from them. Run it once before watching.",
    )
    p.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    p.add_argument("--refresh", action="store_true", help="measure again even when this machine's numbers are cached")
    p.add_argument("--quick", action="store_true",
                   help="only the backend `auto` would pick, one frame after one warm-up (about a minute on a CPU)")
    p.add_argument("--sizes", default="540p,720p,1080p", metavar="LIST",
                   help="input sizes: 540p, 720p, 1080p or WxH, comma-separated (default: all three)")
    p.add_argument("--presets", default="default,lite", metavar="LIST", help="model presets (default: default,lite)")
    p.add_argument("--backends", default=None, metavar="LIST",
                   help="backends to measure (default: every one that runs here)")
    p.add_argument("--frames", type=int, default=None,
                   help="timed frames per cell, median (default 2 on a CPU, 20 on a GPU)")
    p.set_defaults(func=run)


def _list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def run(args: argparse.Namespace) -> int:
    import json

    from ..doctor import MeasureSettings, format_report, parse_size, run_doctor
    from ..errors import UsageError
    from ..model import PLAYBACK_PRESETS

    sizes = _list(args.sizes)
    for s in sizes:
        parse_size(s)
    presets = _list(args.presets)
    bad = [p for p in presets if p not in PLAYBACK_PRESETS]
    if bad or not presets or not sizes:
        raise UsageError(f"--presets {args.presets!r}: choose from {', '.join(PLAYBACK_PRESETS)}" if bad or not presets
                         else "--sizes: give at least one size")
    if args.frames is not None and args.frames < 1:
        raise UsageError(f"--frames {args.frames}: expected 1 or more")
    if args.backends:
        from ..backends import BACKENDS

        unknown = [b for b in _list(args.backends) if b not in BACKENDS]
        if unknown:
            raise UsageError(f"--backends: unknown {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    import torch

    frames = args.frames or (20 if torch.cuda.is_available() else 2)
    settings = MeasureSettings(sizes=sizes, presets=presets, backends=_list(args.backends) if args.backends else None,
                               warmup=3 if torch.cuda.is_available() else 1, frames=frames)

    def progress(what: str) -> None:
        if not args.json and sys.stderr.isatty():
            print(f"measuring {what} ...", file=sys.stderr)

    report = run_doctor(settings, refresh=args.refresh, quick=args.quick, progress=progress)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0
