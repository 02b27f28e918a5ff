"""`mpv-srunet finetune VIDEO`: fit the shipped weights to one clip (the paper's per-video mode).

    mpv-srunet finetune clip.mkv --crf 23            # writes clip.mkv.srunet.safetensors, if it pays
    mpv-srunet finetune clip.mkv --steps 600 --base my.safetensors

The sidecar is written only when, on the clip's own frames, it beats the weights it
started from by >= 10 % LPIPS-alex with no PSNR-Y loss and paints no 2-pixel
stripe/checkerboard texture (grid share at most 1.5x the base's); otherwise nothing is written,
one line says why and the exit status is 3. The player loads
``VIDEO.srunet.safetensors`` automatically when it sits next to the video.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import options


def register(sub: argparse._SubParsersAction) -> None:
    from ..training.finetune import FinetuneOptions

    d = FinetuneOptions()
    p = sub.add_parser("finetune", help="fine-tune compact per-video weights (sidecar VIDEO.srunet.safetensors)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", type=Path, help="the clip (ground truth); its input is its own x2-downscaled H.265 encode")
    p.add_argument("-o", "--output", type=Path, default=None, help="weights file (default: VIDEO.srunet.safetensors)")
    p.add_argument("--crf", type=int, default=d.crf, help=f"CRF the clip is streamed at (default {d.crf})")
    p.add_argument("--base", default=None, help="weights to start from (default: the shipped weights)")
    options.add_strength(p, "detail strength of a two-endpoint base to start from (default: its own, 1.0 for the "
                         "shipped weights)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"training steps at most (default {d.steps}; --patience can end the run earlier)")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--patch", type=int, default=d.patch, help=f"input patch side (default {d.patch})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr:g})")
    p.add_argument("--l1", type=float, default=d.l1, help=f"weight of L1 next to LPIPS(VGG) + (1-SSIM) (default {d.l1:g}; higher holds PSNR)")
    p.add_argument("--eval-every", type=int, default=d.eval_every,
                   help=f"steps between measurements; the best passing checkpoint is written (default {d.eval_every})")
    p.add_argument("--patience", type=int, default=d.patience,
                   help=f"once a checkpoint passes, stop after this many measurements without a better one "
                        f"(default {d.patience}; 0: run every step)")
    p.add_argument("--min-gain", type=float, default=d.min_gain,
                   help=f"required LPIPS-alex improvement over the base, with no PSNR-Y loss (default {d.min_gain:g} = 10 %%)")
    p.add_argument("--max-frames", type=int, default=d.max_frames, help=f"frames of the clip used (default {d.max_frames})")
    options.add_threads(p, d.threads)
    options.add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from ..errors import UsageError
    from ..training.finetune import FinetuneOptions, NoGain, finetune_video

    if args.steps < 0 or args.batch <= 0 or args.patch <= 0 or args.patch % 8 or not 0 <= args.crf <= 51:
        raise UsageError("--steps must be >= 0, --batch > 0, --patch a positive multiple of 8 and --crf in 0..51")
    if args.eval_every <= 0 or args.patience < 0 or not 0 <= args.min_gain < 1 or args.l1 < 0:
        raise UsageError("--eval-every must be > 0, --patience >= 0, --min-gain in 0..1 (0.1 = 10 %) and --l1 >= 0")
    options.checked_strength(args)
    opts = FinetuneOptions(crf=args.crf, base=args.base, strength=args.strength, steps=args.steps, batch=args.batch,
                           patch=args.patch, lr=args.lr, max_frames=args.max_frames, threads=args.threads,
                           eval_every=args.eval_every, patience=args.patience, min_gain=args.min_gain, l1=args.l1)
    try:
        rep = finetune_video(args.video, args.output, opts, progress=not args.no_progress)
    except NoGain as e:
        print(str(e), file=sys.stderr)
        return NO_GAIN_EXIT
    (bp, bs, bl, _), (p0, s0, l0, g0), (p1, s1, l1, g1) = rep.bicubic, rep.base, rep.tuned
    early = f" (stopped early: no better one in {args.patience} measurements)" if rep.steps < args.steps else ""
    print(f"{rep.out}: {rep.size_bytes / 1e6:.3f} MB (fp16), step {rep.best_step} of {rep.steps}{early} ({rep.seconds:.0f} s, "
          f"{rep.steps_per_s:.2f} steps/s), {rep.frames} frames at CRF {args.crf}")
    print(f"  LPIPS-alex {l1:.4f} (base {l0:.4f}, H.265+bicubic {bl:.4f}): {100 * rep.lpips_gain:.1f} % lower; "
          f"PSNR-Y {p1:.3f} dB (base {p0:.3f}, bicubic {bp:.3f}); SSIM-Y {s1:.4f} (base {s0:.4f}, bicubic {bs:.4f}); "
          f"grid share {g1:.4f} (base {g0:.4f}, at most {rep.max_grid:.4f})")
    return 0


#: exit status when fine-tuning did not pay and no sidecar was written
NO_GAIN_EXIT = 3
