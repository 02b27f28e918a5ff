"""`mpv-srunet import-weights` and `mpv-srunet info`: weights files."""

from __future__ import annotations

import argparse
import json
from typing import Any


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
    q.add_argument("--json", action="store_true", help="print everything as one JSON object (for machines)")
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


def _scalar(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _table(rows: list[dict[str, Any]], indent: str) -> list[str]:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [cols] + [[_scalar(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]


def format_metadata(key: str, value: Any, indent: str = "") -> list[str]:
    """``key: value`` lines for people: nested mappings indented, lists of scalars comma-joined,
    lists of mappings as a small table (``info`` shows provenance and metrics this way)."""
    if isinstance(value, dict) and value:
        return [f"{indent}{key}:"] + [ln for k, v in value.items() for ln in format_metadata(str(k), v, indent + "  ")]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [f"{indent}{key}:"] + _table(value, indent + "  ")
    if isinstance(value, list):
        return [f"{indent}{key}: {', '.join(_scalar(v) for v in value)}"]
    return [f"{indent}{key}: {_scalar(value)}"]


def run_info(args: argparse.Namespace) -> int:
    from ..model import count_parameters, macs_per_pixel
    from ..weights import load_model

    model, info = load_model(args.weights, deploy=True)
    report = {
        "file": str(info.path), "sha256": info.sha256, "form": info.form, "strength": info.strength, "config": info.cfg.to_dict(),
        "parameters": count_parameters(model), "gflop_per_960x544": round(2 * macs_per_pixel(info.cfg) * 960 * 544 / 1e9, 1),
        "metadata": {k: v for k, v in sorted(info.metadata.items()) if not k.startswith("srunet.")},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    cfg = " ".join(f"{k}={v}" for k, v in report["config"].items())
    print(f"file:       {info.path}")
    print(f"sha256:     {info.sha256}")
    print(f"stored as:  {info.form} form; config {cfg}")
    if info.strength is not None:
        print(f"strength:   {info.strength:g} (fidelity and perceptual endpoints; --strength 0..1 blends them)")
    print(f"parameters: {report['parameters']:,} (fused)")
    print(f"cost:       {report['gflop_per_960x544']:.1f} GFLOP per 960x544 frame")
    for k, v in report["metadata"].items():
        print("\n".join(format_metadata(k, v)))
    return 0
