"""`mpv-srunet finetune VIDEO`: over-fit a small model to one clip (the paper's per-video mode).

    mpv-srunet finetune clip.mkv --crf 23            # writes clip.mkv.srunet.safetensors
    mpv-srunet finetune clip.mkv --steps 1000 --base my_lite.safetensors

The player loads ``VIDEO.srunet.safetensors`` automatically when it sits next to the video.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from ..training.finetune import FinetuneOptions

    d = FinetuneOptions()
    p = sub.add_parser("finetune", help="fine-tune compact per-video weights (sidecar VIDEO.srunet.safetensors)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", type=Path, help="the clip (ground truth); its input is its own x2-downscaled H.265 encode")
    p.add_argument("-o", "--output", type=Path, default=None, help="weights file (default: VIDEO.srunet.safetensors)")
    p.add_argument("--crf", type=int, default=d.crf, help=f"CRF the clip is streamed at (default {d.crf})")
    p.add_argument("--preset", default=d.preset, help=f"model preset (default {d.preset}; must fit 1.1 MB in fp16)")
    p.add_argument("--base", default=None, help="weights to start from (default: exact bicubic start)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"training steps (default {d.steps})")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--patch", type=int, default=d.patch, help=f"input patch side (default {d.patch})")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--max-frames", type=int, default=d.max_frames, help=f"frames of the clip used (default {d.max_frames})")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..training.finetune import FinetuneOptions, finetune_video

    if args.steps <= 0 or args.batch <= 0 or args.patch <= 0 or args.patch % 8 or not 0 <= args.crf <= 51:
        raise UsageError("--steps/--batch must be > 0, --patch a positive multiple of 8 and --crf in 0..51")
    opts = FinetuneOptions(crf=args.crf, preset=args.preset, base=args.base, steps=args.steps, batch=args.batch,
                           patch=args.patch, lr=args.lr, max_frames=args.max_frames, threads=args.threads)
    rep = finetune_video(args.video, args.output, opts, progress=not args.no_progress)
    (bp, bs), (p0, s0), (p1, s1) = rep.bicubic, rep.base, rep.tuned
    print(f"{rep.out}: {rep.size_bytes / 1e6:.3f} MB (fp16), {rep.steps} steps in {rep.seconds:.0f} s ({rep.steps_per_s:.2f} steps/s), {rep.frames} frames at CRF {args.crf}")
    print(f"  PSNR-Y {p1:.3f} dB (base {p0:.3f}, H.265+bicubic {bp:.3f}): {p1 - p0:+.3f} dB vs base; SSIM-Y {s1:.4f} (base {s0:.4f}, bicubic {bs:.4f})")
    return 0
