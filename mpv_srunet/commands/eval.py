"""`mpv-srunet eval`: measure how much better the upscaled video is (the paper's protocol).

    mpv-srunet eval make-clips clips/                       # 1080p pans/zooms over real photos
    mpv-srunet eval run clips/*.mkv --out results/ --crf 23 --authors srunet_2x_crf23.pth
    mpv-srunet eval score reference.mkv upscaled.mkv        # metrics of an existing output
"""

from __future__ import annotations

import argparse
import sys

from . import options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="quality evaluation: PSNR/SSIM/LPIPS/VMAF tables, RD plots, side-by-side crops",
        description="Reproduce the paper's protocol (downscale x2, H.265 at a CRF, upscale, compare with the "
        "reference) for bicubic and SR-UNet weights; or make test clips; or score an existing output.",
    )
    evsub = p.add_subparsers(dest="eval_command", metavar="ACTION")
    _register_run(evsub)
    _register_make_clips(evsub)
    _register_score(evsub)
    p.set_defaults(func=lambda args: _no_action(p))


def _no_action(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _register_run(evsub: argparse._SubParsersAction) -> None:
    r = evsub.add_parser("run", help="run the protocol on reference videos/images",
                         description="Each reference (>= --size; larger ones are Lanczos-downscaled) is downscaled "
                         "x2 (PIL bicubic), encoded with libx265 at each CRF, decoded, upscaled by every candidate "
                         "and compared with the reference.")
    r.add_argument("refs", nargs="+", metavar="REF", help="reference video, image, or folder of images")
    r.add_argument("--out", required=True, help="output folder (results.md/.csv/.json, rd_*.png, crops_*.png)")
    r.add_argument("--crf", default="23", help="libx265 CRF or comma list, e.g. 18,23,28,33 (default 23)")
    r.add_argument("--size", default="1920x1080", help="ground-truth size WxH (default 1920x1080 -> 960x540 input)")
    r.add_argument("--frames", type=int, default=8, help="frames per reference (default 8; 0 = all)")
    r.add_argument("--experiment", choices=["x2", "720p"], default="x2",
                   help="x2: the paper's main protocol (half-size input, default); 720p: two-thirds-size input "
                   "upscaled to the reference size (2x networks then bicubic down) against the reference itself "
                   "encoded at the same CRF, with BD-rates")
    r.add_argument("--weights", default="", help="extra SR-UNet weights to compare, comma separated")
    r.add_argument("--authors", default=None, help="the authors' 2x checkpoint (.pth), loaded strictly")
    r.add_argument("--no-default", action="store_true", help="leave out the shipped default weights")
    r.add_argument("--mpv", default="", metavar="LIST",
                   help="mpv's built-in scalers to compare, rendered by the real mpv from the same H.265 stream: "
                   "comma list of default (mpv 0.35: bilinear), lanczos, gpu-hq (--profile=gpu-hq)")
    r.add_argument("--mpv-shader", action="append", default=[], metavar="NAME=PATH",
                   help="an mpv user shader to compare (e.g. FSRCNNX=FSRCNNX_x2_16-0-4-1.glsl), run by mpv on top of "
                   "--profile=gpu-hq; repeat for more")
    r.add_argument("--no-per-video", action="store_true", help="ignore VIDEO.srunet.safetensors fine-tuned weights")
    r.add_argument("--no-vmaf", action="store_true", help="skip VMAF (its column is marked unavailable)")
    r.add_argument("--preset", default="medium", help="libx265 preset (default medium)")
    options.add_backend(r, f"SR-UNet backend: {options.BACKENDS} (default: auto)")
    r.add_argument("--jobs", type=int, default=1, help="parallel metric workers (default 1)")
    options.add_no_progress(r)
    r.set_defaults(func=run_protocol_cmd)


def _register_make_clips(evsub: argparse._SubParsersAction) -> None:
    m = evsub.add_parser("make-clips", help="make short lossless clips (slow pans/zooms) from real photos",
                         description="Virtual-camera clips over real photos: pans and zooms of at most 4 px/frame, "
                         "every frame Lanczos-resampled from the full-resolution photo, stored as FFV1 (lossless RGB).")
    m.add_argument("out_dir", help="folder for the clips")
    m.add_argument("--photos", nargs="+", default=["/usr/share/backgrounds"], metavar="PHOTO",
                   help="photo files, used in the order given, and/or folders, searched for photos at least --size "
                   "(sorted by path); default /usr/share/backgrounds. Name files for a set that does not change "
                   "with what else is installed")
    m.add_argument("--count", type=int, default=4, help="number of clips (default 4)")
    m.add_argument("--frames", type=int, default=48, help="frames per clip (default 48)")
    m.add_argument("--fps", type=int, default=24, help="frame rate (default 24)")
    m.add_argument("--size", default="1920x1080", help="clip size WxH (default 1920x1080)")
    m.set_defaults(func=make_clips_cmd)


def _register_score(evsub: argparse._SubParsersAction) -> None:
    s = evsub.add_parser("score", help="metrics of an existing output against its reference",
                         description="Compare OUTPUT (e.g. from `mpv-srunet upscale`) with REFERENCE frame by frame; "
                         "both must have the same size and frame count.")
    s.add_argument("reference")
    s.add_argument("output")
    s.add_argument("--frames", type=int, default=0, help="compare only the first N frames (default all)")
    s.add_argument("--no-vmaf", action="store_true", help="skip VMAF")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=score_cmd)


def _crfs(text: str) -> list[int]:
    from ..errors import UsageError

    try:
        crfs = sorted({int(c) for c in text.split(",") if c.strip()})
    except ValueError:
        raise UsageError(f"--crf {text!r}: expected integers such as 23 or 18,23,28") from None
    if not crfs or not all(0 <= c <= 51 for c in crfs):
        raise UsageError(f"--crf {text!r}: every CRF must be within 0..51")
    return crfs


def _candidates(args: argparse.Namespace) -> list:
    from ..errors import UsageError
    from ..evaluation.candidates import (bicubic_candidate, mpv_builtin_candidate, mpv_shader_candidate, unique_names,
                                         weights_candidate)
    from ..evaluation.mpv_scalers import check_tools
    from ..weights import default_weights_path

    scales = (2.0,) if args.experiment == "x2" else (2.0, 1.5)
    cands = [bicubic_candidate()]
    if not args.no_default:
        p = default_weights_path()
        if p.is_file():
            cands.append(weights_candidate(p, "srunet-default", f"shipped default weights ({p.name})", scales))
        else:
            print(f"mpv-srunet: note: default weights {p} not found; comparing the others", file=sys.stderr)
    if args.authors:
        cands.append(weights_candidate(args.authors, "authors-2x", f"the paper authors' checkpoint {args.authors}",
                                       scales))
    for w in filter(None, (x.strip() for x in args.weights.split(","))):
        cands.append(weights_candidate(w, scales=scales))
    mpv = [mpv_builtin_candidate(n) for n in filter(None, (x.strip() for x in args.mpv.split(",")))]
    mpv += [mpv_shader_candidate(s) for s in args.mpv_shader]
    if mpv:
        if args.experiment != "x2":
            raise UsageError("--mpv / --mpv-shader candidates run in the x2 experiment only")
        check_tools()
    return unique_names(cands + mpv)


def _require(*modules: str) -> None:
    """One clear line when the eval extras are missing (they come with the [train] extra)."""
    import importlib.util

    from ..metrics import MetricUnavailable

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MetricUnavailable(f"eval needs {', '.join(missing)}; install with: pip install 'mpv-srunet[train]'")


def run_protocol_cmd(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import UsageError
    from ..evaluation.candidates import Upscalers, weights_candidate
    from ..evaluation.figures import write_figures
    from ..evaluation.media import load_reference, parse_size
    from ..evaluation.protocol import EvalConfig, run_protocol
    from ..evaluation.report import markdown, write_csv, write_json, atomic_write
    from ..signals import Signalled, raise_on_exit_signals
    from ..weights import sidecar_weights_for

    _require("matplotlib", "pytorch_msssim", "PIL", "tqdm")
    size, crfs = parse_size(args.size), _crfs(args.crf)
    if args.frames < 0 or args.jobs < 1:
        raise UsageError("--frames must be >= 0 and --jobs >= 1")
    if args.experiment == "720p" and (size[0] % 3 or size[1] % 3):
        raise UsageError(f"--size {args.size}: the 720p experiment needs sizes divisible by 3 (e.g. 1920x1080)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    cands = _candidates(args)
    refs = [load_reference(r, size, args.frames or None) for r in args.refs]
    extra = {}
    if not args.no_per_video:
        for ref in refs:
            side = sidecar_weights_for(ref.source) if ref.is_video else None
            if side is not None:
                extra[ref.name] = [weights_candidate(side, "per-video", f"fine-tuned for {ref.name} ({side.name})",
                                                     (2.0,) if args.experiment == "x2" else (2.0, 1.5))]
    cfg = EvalConfig(crfs=crfs, size=size, max_frames=args.frames or None, preset=args.preset, jobs=args.jobs,
                     experiment=args.experiment,
                     use_vmaf=not args.no_vmaf, progress=not args.no_progress)
    ups = Upscalers(args.backend)
    try:  # SIGTERM/SIGHUP/SIGINT: mpv and Xvfb children end, nothing is written, exit 143/129/130
        with raise_on_exit_signals():
            res = run_protocol(refs, cands, cfg, ups, extra)
    except Signalled as e:
        print(f"mpv-srunet: interrupted by {e}; nothing written", file=sys.stderr)
        return e.exit_code
    finally:
        ups.close()
    res.candidates += [c for cs in extra.values() for c in cs]
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(res)
    write_csv(res, out / "results.csv")
    write_json(res, out / "results.json")
    figs = write_figures(res, out)
    atomic_write(out / "results.md", lambda f: f.write(md.encode()))
    print(md)
    print(f"wrote {out / 'results.md'}, results.csv, results.json and {len(figs)} pictures")
    return 0


def make_clips_cmd(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import UsageError
    from ..evaluation.clips import find_photos, make_clips
    from ..evaluation.media import parse_size

    size = parse_size(args.size)
    if args.count < 1 or args.fps < 1:
        raise UsageError("--count and --fps must be >= 1")
    photos = find_photos([Path(p) for p in args.photos], size)
    paths = make_clips(Path(args.out_dir), photos, count=args.count, frames=args.frames, fps=args.fps, size=size)
    for p in paths:
        print(p)
    return 0


def score_cmd(args: argparse.Namespace) -> int:
    import json

    from ..evaluation.media import load_reference
    from ..evaluation.protocol import METRICS, EvalConfig, EvalResults, Scorer
    from ..evaluation.report import _json_safe
    from ..errors import MediaError

    _require("pytorch_msssim", "PIL")
    ref = load_reference(args.reference, None, args.frames or None)
    out = load_reference(args.output, None, args.frames or None)
    (h, w), (oh, ow) = ref.frames[0].shape[:2], out.frames[0].shape[:2]
    if (oh, ow) != (h, w) or len(out.frames) != len(ref.frames):
        raise MediaError(f"{args.output}: {len(out.frames)} frames of {ow}x{oh}, but the reference has "
                         f"{len(ref.frames)} of {w}x{h}; they must match (--frames N compares the first N)")
    cfg = EvalConfig(use_vmaf=not args.no_vmaf, progress=False)
    res = EvalResults(cfg, [])
    pooled, _ = Scorer(cfg, res).score(ref.frames, out.frames, ref.fps, ref.is_video)
    if args.json:
        print(json.dumps(_json_safe({"pooled": pooled, "frames": len(ref.frames), "unavailable": res.unavailable})))
    else:
        for k in METRICS:
            v = pooled[k]
            print(f"{k:9s} {'n/a' if v is None else f'{v:.4f}'}{'  (' + res.unavailable[k] + ')' if k in res.unavailable else ''}")
    return 0
