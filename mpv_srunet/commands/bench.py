"""`mpv-srunet bench`: latency per backend, model alone and end to end, as a table or JSON."""

from __future__ import annotations

import argparse
import sys

from . import options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure ms/frame (p50/p95/p99), fps and GFLOP/s per backend")
    p.add_argument("--backend", metavar="LIST",
                   help="comma-separated cases NAME[:PRECISION], e.g. torch-cpu:bf16,onnxruntime,authors-style "
                        "(default: authors-style and every backend that can run here)")
    p.add_argument("--size", default="960x540", metavar="WxH", help="input frame size (default 960x540)")
    p.add_argument("--frames", type=int, default=5, help="timed frames per case and mode (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed frames first (default 1)")
    options.add_threads(p)
    p.add_argument("--mode", choices=["model", "e2e", "both"], default="both",
                   help="model alone, end to end (decode -> filter -> hand-off), or both")
    p.add_argument("--video", help="clip for the end-to-end run (default: a generated H.265 clip of --size)")
    w = p.add_mutually_exclusive_group()
    options.add_weights(w)
    w.add_argument("--preset", help="a randomly initialised model preset instead (speed does not depend on weights)")
    p.add_argument("--json", action="store_true",
                   help="the report as JSON (for CI artifacts): on stdout, or only in the -o file when given")
    p.add_argument("-o", "--output", help="write the JSON report to this file (with --json: nothing on stdout)")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="compare two saved reports and exit")
    p.set_defaults(func=run)


def _model(args: argparse.Namespace):
    from pathlib import Path

    if args.preset:
        import torch

        from ..model import create_model

        torch.manual_seed(0)
        return create_model(args.preset, deploy=True).eval(), None, None
    from ..weights import load_model

    model, info = load_model(args.weights, deploy=True)
    return model, Path(info.path), info.sha256


def _compare(args: argparse.Namespace) -> int:
    import json

    from ..bench import compare_reports, format_comparison, load_report

    a, b = (load_report(p) for p in args.compare)
    rows = compare_reports(a, b)
    print(json.dumps({"a": args.compare[0], "b": args.compare[1], "rows": rows}, indent=2) if args.json
          else format_comparison(rows, args.compare[0], args.compare[1]))
    return 0


def _settings(args: argparse.Namespace):
    from pathlib import Path

    from ..bench import BenchSettings
    from ..errors import UsageError
    from ..trt.cache import parse_size

    if args.frames < 1 or args.warmup < 0:
        raise UsageError(f"--frames must be >= 1 and --warmup >= 0, got {args.frames} and {args.warmup}")
    if args.video and not Path(args.video).is_file():
        raise UsageError(f"--video {args.video}: no such file")
    try:
        h, w = parse_size(args.size)
    except Exception:
        raise UsageError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 960x540") from None
    modes = ("model", "e2e") if args.mode == "both" else (args.mode,)
    return BenchSettings(width=w, height=h, frames=args.frames, warmup=args.warmup, threads=args.threads,
                         modes=modes, video=Path(args.video) if args.video else None)


def run(args: argparse.Namespace) -> int:
    if args.compare:
        return _compare(args)
    import json
    from pathlib import Path

    from ..bench import format_table, parse_cases, run_bench
    from ..trt.cache import atomic_write_bytes

    settings = _settings(args)
    cases = parse_cases(args.backend)
    model, weights, sha = _model(args)
    report = run_bench(model, cases, settings, weights=weights, weights_sha256=sha)
    text = json.dumps(report, indent=2)
    if args.output:
        atomic_write_bytes(Path(args.output), text.encode())
        print(f"mpv-srunet: wrote {args.output}", file=sys.stderr)
    if not args.json:
        print(format_table(report))
    elif not args.output:
        print(text)
    return 0
