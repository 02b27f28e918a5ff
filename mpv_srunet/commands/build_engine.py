"""`mpv-srunet build-engine`: build (or list) cached TensorRT engines.

One engine covers a range of input sizes (an optimization profile), so players
never rebuild per resolution. ``--onnx-out`` writes the engine-ready ONNX graph
without TensorRT (for ``trtexec`` or inspection on another machine).
"""

from __future__ import annotations

import argparse

from ..colour import CHROMA_SITINGS, GPU_MATRICES, RANGES, Colour
from . import options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-engine", help="build a TensorRT FP16 engine (or --list the cached ones)")
    options.add_weights(p)
    p.add_argument("--format", default="rgb", choices=["rgb", "rgb24", "yuv420p", "yuv420p10"],
                   help="engine input: float RGB (backend protocol), uint8 RGB, or YUV 4:2:0 planes (default: rgb)")
    p.add_argument("--matrix", default="bt709", choices=GPU_MATRICES, help="YUV formats: colour matrix")
    p.add_argument("--range", dest="colour_range", default="limited", choices=RANGES,
                   help="YUV formats: limited (TV) or full (PC) range")
    p.add_argument("--chroma", default="left", choices=CHROMA_SITINGS,
                   help="YUV formats: 4:2:0 chroma siting (left: MPEG-2/H.264/HEVC default)")
    p.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    p.add_argument("--min", dest="min_size", default="640x360", metavar="WxH", help="smallest frame size (default 640x360)")
    p.add_argument("--opt", dest="opt_size", default="960x540", metavar="WxH", help="size to tune for (default 960x540)")
    p.add_argument("--max", dest="max_size", default="1920x1080", metavar="WxH", help="largest frame size (default 1920x1080)")
    p.add_argument("--max-batch", type=int, default=1, help="largest batch (rgb format only)")
    p.add_argument("--static", metavar="WxH", help="one fixed frame size instead of a range")
    p.add_argument("--out-dir", help="engine cache dir (default: $MPV_SRUNET_ENGINE_DIR or the user cache dir)")
    p.add_argument("--workspace-mb", type=int, default=2048, help="TensorRT workspace limit (MiB)")
    p.add_argument("--opt-level", type=int, choices=range(0, 6), help="TensorRT builder optimization level")
    p.add_argument("--force", action="store_true", help="rebuild even if a valid engine is cached")
    p.add_argument("--list", action="store_true", help="list cached engines and whether each runs on this machine")
    p.add_argument("--prune", action="store_true", help="with --list: delete engines that are stale on this machine")
    p.add_argument("--onnx-out", metavar="PATH", help="only write the engine-ready ONNX (no TensorRT needed)")
    p.set_defaults(func=run)


def _spec_and_profile(args: argparse.Namespace):
    from ..errors import UsageError
    from ..trt.cache import make_profile
    from ..trt.graph import GraphSpec

    spec = GraphSpec(args.format, args.precision, Colour(args.matrix, args.colour_range, args.chroma))
    if args.max_batch != 1 and args.format != "rgb":
        raise UsageError(f"--max-batch {args.max_batch}: batching is only supported with --format rgb")
    if args.static:
        return spec, make_profile(args.static, args.static, args.static, spec.multiple_of)
    return spec, make_profile(args.min_size, args.opt_size, args.max_size, spec.multiple_of, args.max_batch)


def _engine_dir(args: argparse.Namespace):
    from pathlib import Path

    from ..trt.cache import default_engine_dir

    return Path(args.out_dir) if args.out_dir else default_engine_dir()


def _list(args: argparse.Namespace) -> int:
    from ..trt.builder import probe_machine, unavailable_reason
    from ..trt.cache import list_engines

    machine = probe_machine()
    directory = _engine_dir(args)
    here = unavailable_reason(machine) or f"TensorRT {machine.trt_version}, {machine.gpu_name} (sm {machine.compute_capability})"
    print(f"engine cache: {directory}\nthis machine: {here}")
    if args.prune and not machine.can_build:
        from ..errors import UsageError

        raise UsageError(f"--prune needs TensorRT and a GPU to judge engines by ({here}); nothing deleted")
    n = 0
    for e in list_engines(directory, machine):
        n += 1
        status = "ok" if e.usable else "stale: " + "; ".join(e.reasons)
        size_mb = e.path.stat().st_size / 2**20
        if args.prune and not e.usable:
            for extra in (e.path, *(e.path.with_suffix(s) for s in (".json", ".build.log"))):
                extra.unlink(missing_ok=True)
            status = "deleted (" + status + ")"
        print(f"  {e.path.name}  ({size_mb:.1f} MiB)  {status}")
    if not n:
        print("  (no engines)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args)
    spec, profile = _spec_and_profile(args)
    if args.onnx_out:
        from ..trt.graph import export_engine_onnx
        from ..weights import load_model

        model, _ = load_model(args.weights, deploy=True)
        path = export_engine_onnx(model, args.onnx_out, spec, static_hw=profile.opt_hw if profile.is_static else None)
        print(f"{path}: engine graph {spec.tag()} {spec.precision}, inputs {', '.join(spec.input_names)}, "
              f"{'static ' + profile.tag() if profile.is_static else 'dynamic height/width'}")
        return 0
    from ..trt.builder import ensure_engine, require_tensorrt

    machine = require_tensorrt("build-engine")  # before loading anything: fail fast, one line
    from ..weights import load_model

    model, _ = load_model(args.weights, deploy=True)
    path = ensure_engine(model, spec, profile, _engine_dir(args), workspace_mb=args.workspace_mb,
                         opt_level=args.opt_level, force=args.force, machine=machine)
    print(f"{path}  ({spec.tag()}, {spec.precision}, profile {profile.tag()}, TensorRT {machine.trt_version}, "
          f"{machine.gpu_name})")
    return 0
