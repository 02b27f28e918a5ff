"""`mpv-srunet train`: build training pairs, train, and export weights.

    mpv-srunet train prepare /usr/share/backgrounds --out data/pairs --crf 20,23,26
    mpv-srunet train run --data data/pairs --out runs/default --steps 20000 --bf16
    mpv-srunet train run --data data/pairs --out runs/default --steps 40000 --resume
    mpv-srunet train export runs/default engines/my.safetensors --eval
    mpv-srunet train settle engines/my.safetensors engines/my_settled.safetensors --data data/pairs

Needs the ``train`` extra (pytorch-msssim, matplotlib); see docs/training.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError
from . import options


def _crf_list(s: str) -> tuple[int, ...]:
    """``23``, ``18,23,28``, or a range ``18-30`` (every 2nd CRF: 18, 20, ..., 30)."""
    try:
        if "-" in s:
            a, b = (int(v) for v in s.split("-", 1))
            return tuple(range(a, b + 1, 2))
        return tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a CRF like 23, a list like 18,23,28 or a range like 18-30, got {s!r}") from None


def _alpha(s: str) -> float | str:
    if s == "auto":
        return s
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'auto', got {s!r}") from None


_HELP = {
    "preset": "model preset: default, lite",
    "steps": "total training steps",
    "warm_steps": "steps of L1 + (1-SSIM) before the GAN phase (>= --steps: warm start only)",
    "batch": "patches per step",
    "patch": "input patch side; the target is twice that",
    "lr": "Adam learning rate of the GAN phase (paper: 1e-4)",
    "warm_lr": "Adam learning rate of the warm start",
    "lpips_net": "LPIPS backbone of the GAN loss: vgg (paper) or alex",
    "adv_weight": "weight of the adversarial BCE term (paper: 1e-3; 0: no discriminator, LPIPS + SSIM + --gan-l1 only)",
    "gan_l1": "weight of an L1 fidelity anchor added to the GAN loss (paper: 0)",
    "lpips_view": "how LPIPS-VGG compares output and target: blur (both through a 3x3 binomial whose response at period 2 is 0; "
                  "LPIPS-VGG otherwise rewards a 2-pixel stripe/checkerboard texture) or plain (the paper's)",
    "gan_view": "how LPIPS-VGG and the discriminator see the output: jitter (a random 1-pixel offset of their "
                "2-pixel pooling/stride grid each step; avoids period-2 texture) or aligned (the paper's)",
    "min_grain": "draw patches only from training sources with at least this much camera-like grain in their flat areas "
                 "(grey levels, training.data.grain_level; most photos and video 0.5-3, rendered wallpapers 0-0.4; 0: every "
                 "source); may change on --resume",
    "ckpt_every": "checkpoint every N steps",
    "ckpt_minutes": "... and at least every M minutes",
    "val_every": "validate every N steps (0: only at the end)",
    "val_crop": "periodic validation on centre crops of this input size (0: full frames)",
    "log_every": "write a log.csv row every N steps",
    "threads": "torch CPU threads",
    "seed": "random seed (patches, flips, init)",
    "init": "'bicubic' (exact bicubic start), a train-form weights file, or another run's checkpoint.pt (generator only)",
    "init_strength": "with --init FILE of two endpoints (fidelity, perceptual): start from it at this detail strength, "
                     "0..1 (0: the fidelity endpoint; not given: the file's default strength)",
    "device": "auto, cpu or cuda",
    "bf16": "bfloat16 autocast for the generator body, LPIPS and the discriminator (about 2x faster GAN steps on CPUs with AVX-512 bf16)",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train SR-UNet weights (prepare data, run, export)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="train_command", metavar="STEP")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    _register_prepare(tsub)
    _register_run(tsub)
    _register_export(tsub)
    _register_settle(tsub)


def _register_prepare(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser("prepare", help="build GT / H.265-degraded input pairs from images and videos")
    p.add_argument("sources", nargs="+", type=Path, help="folders (searched recursively) or files: images and videos")
    p.add_argument("--out", type=Path, required=True, help="data folder to create")
    p.add_argument("--val", type=Path, nargs="+", default=None, metavar="SRC",
                   help="validation sources (default: --val-fraction of SOURCES, chosen by a hash of their names)")
    p.add_argument("--crf", type=_crf_list, default=(23,), help="training CRF(s): 23, 18,23,28 or 18-30 (default 23)")
    p.add_argument("--val-crf", type=int, default=23, help="CRF of the validation split (default 23, the paper's)")
    p.add_argument("--gt-width", type=int, default=1920, help="downscale wider sources to this width (default 1920)")
    p.add_argument("--min-downscale", type=float, default=1.0,
                   help="downscale every image at least this much (1.5 averages away the JPEG blocks of photos; default 1)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of sources kept for validation (default 0.15)")
    p.add_argument("--x265-preset", default="medium", help="x265 preset (default medium)")
    p.add_argument("--video-frames", type=int, default=96, help="frames decoded from the start of each video (default 96)")
    p.add_argument("--video-stride", type=int, default=4,
                   help="keep every Nth of those frames as a pair (default 4; neighbours are near-duplicates): with "
                        "photos in the same folder, these two set how much of the training is video")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    options.add_no_progress(p)
    p.set_defaults(func=run_prepare)


def _register_run(tsub: argparse._SubParsersAction) -> None:
    from dataclasses import fields

    p = tsub.add_parser("run", help="train (warm start, then the paper's GAN loss); resumable")
    p.add_argument("--data", default=None, help="folder made by `train prepare` (with --resume: the run's own by default)")
    p.add_argument("--out", required=True, help="run folder (checkpoint.pt, log.csv, val.csv, run.json, plot.png)")
    p.add_argument("--resume", action="store_true",
                   help="continue the checkpoint in --out exactly, with the options it was started with "
                        "(options given now override them, e.g. a larger --steps)")
    options.add_no_progress(p)
    skip = {"data", "out"}
    from ..training.loop import TrainConfig

    for f in fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        # default None: an option not given keeps the run's saved value on --resume, else the TrainConfig default
        if f.type in ("bool", bool):
            p.add_argument(flag, action="store_true", default=None, help=_HELP.get(f.name, ""))
        else:
            typ = {"int": int, "float": float, "float | None": float, "str": str}.get(str(f.type), str)
            p.add_argument(flag, type=typ, default=None, help=f"{_HELP.get(f.name, '')} (default {f.default})")
    p.set_defaults(func=run_train)


def _register_export(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser("export", help="write a run's generator as deploy-form safetensors weights")
    p.add_argument("run_dir", type=Path, help="run folder (or its checkpoint.pt)")
    p.add_argument("output", type=Path, help="weights file to write (.safetensors)")
    p.add_argument("--eval", action="store_true", help="measure full-frame validation metrics (+ LPIPS-alex) into the metadata")
    p.add_argument("--half", action="store_true", help="store fp16 tensors (half the size)")
    p.add_argument("--compare", type=Path, nargs="+", default=None, metavar="WEIGHTS",
                   help="also measure these weights files (e.g. the authors' .pth) the same way; results go to RUN/export.json")
    p.add_argument("--card", type=Path, default=None, help="also write a Markdown model card (implies --eval)")
    p.add_argument("--blend", type=Path, default=None, metavar="RUN",
                   help="network interpolation: export ALPHA x this run + (1 - ALPHA) x RUN (a run folder or checkpoint.pt, "
                        "normally the warm-start run the GAN phase began from, or a weights file: of a two-endpoint file "
                        "its fidelity endpoint)")
    p.add_argument("--alpha", type=_alpha, default=1.0,
                   help="weight of this run in --blend, or 'auto': the lowest validation LPIPS-alex among 0, 0.1, ..., 1 "
                        "that still beats H.265 + bicubic by 0.05 dB PSNR-Y and 0.0005 SSIM-Y (default 1: no blend)")
    p.add_argument("--endpoints", action="store_true",
                   help="with --blend: write RUN (fidelity) and this run (perceptual) as the two endpoints of one "
                        "detail-strength file, ALPHA its default --strength, instead of the blend alone")
    p.add_argument("--into", type=Path, default=None, metavar="FILE",
                   help="write FILE (a two-endpoint weights file) with its --endpoint replaced by this run; the other "
                        "endpoint and the file's history are kept")
    p.add_argument("--endpoint", choices=("fidelity", "perceptual"), default=None,
                   help="with --into: the endpoint this run replaces")
    p.add_argument("--strength", default="keep",
                   help="with --into: the new file's default detail strength: keep (FILE's), auto (picked on the "
                        "validation split by the rule of --alpha auto) or a number 0..1 (default keep)")
    options.add_threads(p, 1)
    p.set_defaults(func=run_export)


def _register_settle(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser("settle", help="re-fit the output layer of a weights file's perceptual endpoint (removes period-2 texture)",
                        description="Re-fit the 1x1 conv in front of the PixelShuffle, the rest of the network frozen, on "
                                    "LPIPS(VGG) seen through a blur with zero response at period 2 + (1-SSIM). A GAN phase "
                                    "trained on the paper's plain LPIPS-VGG, which rewards it, leaves a 2-pixel "
                                    "stripe/checkerboard texture that this removes (docs/training.md, 'Period-2 texture').")
    p.add_argument("weights", type=Path, help="weights file (.safetensors); a two-endpoint file has its perceptual endpoint settled")
    p.add_argument("output", type=Path, help="weights file to write (.safetensors)")
    p.add_argument("--data", type=Path, required=True, help="folder made by `mpv-srunet train prepare` (its training split)")
    p.add_argument("--steps", type=int, default=40, help="Adam steps (default 40)")
    p.add_argument("--batch", type=int, default=8, help="patches per step (default 8)")
    p.add_argument("--patch", type=int, default=96, help="input patch side, a multiple of 8 (default 96)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the patches (default 0)")
    p.add_argument("--layers", default="conv_last",
                   help="comma list of the modules re-fitted, the rest frozen: conv_last (the output layer), "
                        "dconv_up1 (the last decoder stage, whose features it mixes), dconv_up2, dconv_up3 (default conv_last)")
    p.add_argument("--min-grain", type=float, default=0.0,
                   help="draw patches only from training sources with at least this much camera-like grain in their flat "
                        "areas (grey levels; most camera photos and video score 0.5-3, rendered wallpapers 0-0.4; the shipped "
                        "weights were last settled with 0.5); default 0: every source")
    p.add_argument("--strength", default="auto",
                   help="a two-endpoint file's default detail strength after settling: auto (picked on the validation "
                        "split by the rule of `train export --alpha auto`: lowest LPIPS-alex among the strengths that beat "
                        "H.265 + bicubic without the 2-pixel texture), keep (the file's), or a number 0..1 (default auto)")
    options.add_threads(p, 2)
    options.add_overwrite(p)
    options.add_no_progress(p)
    p.set_defaults(func=run_settle)


def run_prepare(args: argparse.Namespace) -> int:
    from ..training.data import PrepareOptions, prepare

    opts = PrepareOptions(crfs=tuple(args.crf), val_crf=args.val_crf, gt_width=args.gt_width, min_downscale=args.min_downscale,
                          val_fraction=args.val_fraction, preset=args.x265_preset, video_max_frames=args.video_frames,
                          video_stride=args.video_stride)
    rep = prepare(list(args.sources), args.out, opts, val_roots=args.val, force=args.force, progress=not args.no_progress)
    n_src = {k: len(v) for k, v in rep.sources.items()}
    print(f"{rep.out}: {rep.pairs['train']} training pairs from {n_src['train']} sources, "
          f"{rep.pairs['val']} validation pairs from {n_src['val']} sources; {len(rep.skipped)} file(s) skipped")
    for path, why in rep.skipped:
        print(f"  skipped {why}", file=sys.stderr)
    return 0


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from ..training.loop import TrainConfig, Trainer

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    if args.resume:
        from ..training.checkpoint import CHECKPOINT_NAME, load_checkpoint

        path = Path(args.out) / CHECKPOINT_NAME
        if not path.is_file():
            raise UsageError(f"{path}: no such checkpoint to --resume; start the run without --resume")
        cfg = TrainConfig.from_dict(load_checkpoint(path)["config"] | given)
    elif args.data is None:
        raise UsageError("train run: --data is required (a folder made by `mpv-srunet train prepare`)")
    else:
        cfg = TrainConfig(**given)
    if cfg.steps <= 0 or cfg.batch <= 0 or cfg.patch <= 0 or cfg.patch % 8:
        raise UsageError(f"--steps/--batch must be > 0 and --patch a positive multiple of 8; got {cfg.steps}/{cfg.batch}/{cfg.patch}")
    trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress)
    summary = trainer.run()
    v = summary.get("val") or {}
    msg = f"{cfg.out}: step {summary['step']}, {summary['steps_per_s']:.3f} steps/s ({summary['hardware']})"
    if v:
        msg += f"; val PSNR-Y {v['psnr_y']:.3f} dB (H.265+bicubic {v['bicubic_psnr_y']:.3f}), SSIM-Y {v['ssim_y']:.4f} ({v['bicubic_ssim_y']:.4f})"
        if v.get("lpips_alex") is not None:
            msg += f", LPIPS-alex {v['lpips_alex']:.4f} ({v['bicubic_lpips_alex']:.4f})"
    print(msg)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..training.export import export_run

    if args.into is not None or args.endpoint is not None:
        return _run_export_into(args)
    if args.strength != "keep":
        raise UsageError("--strength goes with --into FILE --endpoint NAME; a blend's weight is --alpha")
    meta = export_run(args.run_dir, args.output, evaluate_full=args.eval or bool(args.compare) or args.card is not None, half=args.half,
                      threads=args.threads, compare=args.compare, card=args.card, blend=args.blend, alpha=args.alpha,
                      endpoints=args.endpoints)
    print(f"{args.output}: {args.output.stat().st_size / 1e6:.2f} MB, step {meta['training']['steps']}")
    for r in meta.get("alpha_sweep") or []:
        print(f"  alpha {r['alpha']:.1f}: PSNR-Y {r['psnr_y']:.3f} dB, SSIM-Y {r['ssim_y']:.4f}, LPIPS-alex {r['lpips_alex']:.4f}, "
              f"grid {r['grid']:.4f}")
    if meta.get("alpha_sweep"):
        print(f"  picked alpha {meta['provenance']['interpolation']['alpha']}")
    for name, v in [("this model", meta.get("validation"))] + list((meta.get("compare") or {}).items()):
        if v:
            lp = f", LPIPS-alex {v['lpips_alex']:.4f} (bicubic {v['bicubic_lpips_alex']:.4f})" if v.get("lpips_alex") is not None else ""
            print(f"  {name}: PSNR-Y {v['psnr_y']:.3f} dB (H.265+bicubic {v['bicubic_psnr_y']:.3f}), "
                  f"SSIM-Y {v['ssim_y']:.4f} ({v['bicubic_ssim_y']:.4f}){lp} over {v['n']} validation frames")
    return 0


def _run_export_into(args: argparse.Namespace) -> int:
    from ..training.export import replace_endpoint

    if args.into is None or args.endpoint is None:
        raise UsageError("--into FILE and --endpoint fidelity|perceptual go together")
    clash = [flag for flag, on in (("--blend", args.blend is not None), ("--alpha", args.alpha != 1.0),
                                   ("--endpoints", args.endpoints), ("--half", args.half), ("--card", args.card is not None),
                                   ("--compare", bool(args.compare)), ("--eval", args.eval)) if on]
    if clash:
        raise UsageError(f"--into writes a two-endpoint file with its own validation; drop {', '.join(clash)}")
    meta = replace_endpoint(args.run_dir, args.output, args.into, args.endpoint, strength=args.strength, threads=args.threads)
    v = meta["endpoints"][args.endpoint]["validation"]
    print(f"{args.output}: {args.into.name} with its {args.endpoint} endpoint replaced by {args.run_dir} "
          f"(step {meta['endpoints'][args.endpoint]['training']['steps']}); {args.output.stat().st_size / 1e6:.2f} MB")
    if v:
        lp = f", LPIPS-alex {v['lpips_alex']:.4f}" if v.get("lpips_alex") is not None else ""
        print(f"  {args.endpoint} endpoint: PSNR-Y {v['psnr_y']:.3f} dB (H.265+bicubic {v['bicubic_psnr_y']:.3f}), "
              f"SSIM-Y {v['ssim_y']:.4f}{lp}, grid {v['grid']:.4f} over {v['n']} validation frames")
    for r in meta["strength_sweep"]:
        print(f"  strength {r['strength']:.1f}: PSNR-Y {r['psnr_y']:.3f} dB, SSIM-Y {r['ssim_y']:.4f}, "
              f"LPIPS-alex {r['lpips_alex']:.4f}, grid {r['grid']:.4f}")
    print(f"  default strength {meta['default_strength']:.2f}")
    return 0


def run_settle(args: argparse.Namespace) -> int:
    import torch

    from ..progress import progress_bar
    from ..training.data import PairStore
    from ..training.export import PICK_RULE, NoBlendPasses, blend_endpoint_models, choose_alpha, full_validation, sweep_strengths
    from ..training.settle import SETTLE_LAYERS, check_layers, settle_output_layer
    from ..weights import (
        WeightsError,
        check_strength,
        has_endpoints,
        load_endpoint_models,
        load_model,
        save_endpoints,
        save_weights,
    )

    if args.output.exists() and not args.overwrite:
        raise UsageError(f"{args.output}: exists; pass --overwrite to replace it")
    if not (args.data / "train").is_dir():
        raise UsageError(f"{args.data}: not a folder made by `mpv-srunet train prepare` (no train/ split)")
    if args.steps <= 0 or args.batch <= 0 or args.patch <= 0 or args.patch % 8:
        raise UsageError(f"--steps/--batch must be > 0 and --patch a positive multiple of 8; got {args.steps}/{args.batch}/{args.patch}")
    if not 0 <= args.min_grain < float("inf"):
        raise UsageError(f"--min-grain {args.min_grain}: expected a number >= 0")
    strength = args.strength if args.strength in ("auto", "keep") else check_strength(args.strength)  # one line if bad
    try:  # checked before anything is loaded or trained
        layers = check_layers([n.strip() for n in args.layers.split(",") if n.strip()])
    except ValueError:
        raise UsageError(f"--layers {args.layers}: expected a comma list of {', '.join(SETTLE_LAYERS)}") from None
    try:
        two = has_endpoints(args.weights)
        model, info = load_model(args.weights)  # a single set of weights, or the default blend (for the metadata)
        if two:
            fidelity, model, ends = load_endpoint_models(args.weights)
    except WeightsError as e:
        raise UsageError(str(e)) from None
    if not two and args.strength != "auto":
        raise UsageError(f"--strength {args.strength}: {args.weights} holds one set of weights, not two endpoints to blend")
    if two and strength == "auto" and len(PairStore(args.data, "val")) == 0:
        raise UsageError(f"{args.data}: no validation split to pick the default strength on; pass --strength keep or a number")
    torch.set_num_threads(args.threads)
    meta = {k: v for k, v in info.metadata.items() if not k.startswith("srunet.")}
    bar = progress_bar(args.steps, "settle", "step", enabled=not args.no_progress)
    try:
        summary = settle_output_layer(model, args.data, steps=args.steps, batch=args.batch, patch=args.patch, lr=args.lr,
                                      seed=args.seed, layers=layers, min_grain=args.min_grain,
                                      on_step=lambda step, loss: bar.update(1))
    finally:
        bar.close()
    model.eval()
    summary["from"] = {"file": args.weights.name, "sha256": info.sha256}
    sweep: list[dict] = []
    if two and strength == "auto":
        sweep = sweep_strengths(lambda a: blend_endpoint_models(fidelity, model, a, source=f"{args.output} at strength {a}"),
                                args.data)
        val = next(r["validation"] for r in sweep if r["alpha"] == 1.0)
        try:
            strength = choose_alpha(sweep)
        except NoBlendPasses as e:  # the settled endpoint is still worth writing: keep the file's default
            print(f"  no strength passes the rule ({e.args[0]}); the default strength stays {ends.default_strength:.2f}",
                  file=sys.stderr)
            strength = "keep"
    else:
        with torch.no_grad():
            val = full_validation(model, args.data)
    if val:
        summary["validation"] = val
    prior = meta.get("settled")  # settling again keeps the earlier runs' provenance, oldest first
    meta["settled"] = ([prior] if isinstance(prior, dict) else list(prior or [])) + [summary]
    perceptual = (meta.get("endpoints") or {}).get("perceptual") if two else None
    if val and isinstance(perceptual, dict):  # the endpoint's record describes the settled tensors
        perceptual["validation"] = val
    if sweep:
        meta["default_strength_pick"] = {"rule": PICK_RULE, "picked": None if strength == "keep" else strength, "sweep": [
            {"strength": r["alpha"], **{k: r["validation"][k] for k in ("psnr_y", "ssim_y", "lpips_alex", "grid")}} for r in sweep]}
    if two:
        default = ends.default_strength if strength == "keep" else float(strength)
        if strength != "keep":
            meta.pop("default_strength_note", None)  # it explained the old default
        # "validation": what loading the file at its default strength gives (as `train export` writes it)
        at_default = next((r["validation"] for r in sweep if r["alpha"] == default), None)
        if at_default is None:
            at_default = full_validation(blend_endpoint_models(fidelity, model, default, source=str(args.output)), args.data)
        if at_default:
            meta["validation"] = at_default
        save_endpoints(args.output, fidelity, model, default, meta)
    else:
        if val:
            meta["validation"] = val
        save_weights(args.output, model, meta)
    what = "output layer" if layers == ("conv_last",) else " + ".join(layers)
    print(f"{args.output}: {what} settled in {summary['steps']} steps ({summary['seconds']:.0f} s)")
    if val:
        lp = f", LPIPS-alex {val['lpips_alex']:.4f}" if val.get("lpips_alex") is not None else ""
        print(f"  {'perceptual endpoint' if two else 'model'}: PSNR-Y {val['psnr_y']:.3f} dB, SSIM-Y {val['ssim_y']:.4f}{lp}, "
              f"grid {val['grid']:.4f} over {val['n']} validation frames")
    for r in sweep:
        v = r["validation"]
        print(f"  strength {r['alpha']:.1f}: PSNR-Y {v['psnr_y']:.3f} dB, SSIM-Y {v['ssim_y']:.4f}, LPIPS-alex {v['lpips_alex']:.4f}, "
              f"grid {v['grid']:.4f}")
    if two:
        how = "kept" if strength == "keep" else "picked on validation" if sweep else "given"
        print(f"  default strength {default:.2f} ({how})")
    return 0
