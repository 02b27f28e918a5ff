"""`mpv-srunet import-weights` and `mpv-srunet info`: weights files."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-weights", help="convert an authors'-format .pth checkpoint to our safetensors",
                       description="Reads a fast-sr-unet .pth (strict load), fuses it (unless --train-form) and "
                       "writes safetensors with config and provenance metadata.")
    p.add_argument("checkpoint", help="authors' .pth file")
    p.add_argument("-o", "--output", required=True, help="output .safetensors")
    p.add_argument("--out-scale", type=float, default=None,
                   help="final bicubic rescale the checkpoint was trained with (authors' 1.5x model: 0.75)")
    p.add_argument("--train-form", action="store_true", help="keep the unfused train form (for fine-tuning)")
    p.set_defaults(func=run_import)

    q = sub.add_parser("info", help="show a weights file's config, form, parameters and metadata")
    q.add_argument("weights", nargs="?", help="weights file (default: the shipped weights)")
    q.set_defaults(func=run_info)


def run_import(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..weights import import_authors_checkpoint

    if not args.output.endswith(".safetensors"):
        raise UsageError(f"{args.output}: output must end in .safetensors")
    info = import_authors_checkpoint(args.checkpoint, args.output, out_scale=args.out_scale, deploy=not args.train_form)
    print(f"{args.output}: {info.form} form, F={info.cfg.n_filters} lm={info.cfg.layer_multiplier} "
          f"x{info.cfg.total_scale:g}, sha256 {info.sha256[:12]}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    import json

    from ..model import count_parameters, macs_per_pixel
    from ..weights import load_model

    model, info = load_model(args.weights, deploy=True)
    print(f"file:       {info.path}")
    print(f"sha256:     {info.sha256}")
    print(f"stored as:  {info.form} form; config {json.dumps(info.cfg.to_dict())}")
    print(f"parameters: {count_parameters(model):,} (fused)")
    print(f"cost:       {2 * macs_per_pixel(info.cfg) * 960 * 544 / 1e9:.1f} GFLOP per 960x544 frame")
    for k, v in sorted(info.metadata.items()):
        if not k.startswith("srunet."):
            print(f"{k}: {json.dumps(v) if not isinstance(v, str) else v}")
    return 0
