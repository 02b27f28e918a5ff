"""Options several commands share, each defined once: a new shared option is added here.

``add_*(parser, ...)`` adds one option (or a small family) to a parser or an argument
group; a command may reword the help where the meaning differs for it (``play``'s weights
come from a sidecar first). ``checked_strength`` and ``cpu_backend_options`` turn the
parsed values into what the library takes, with the same one-line errors everywhere.
"""

from __future__ import annotations

import argparse
from typing import Any

BACKENDS = "auto, torch-cpu, onnxruntime, torch-cuda, tensorrt"
WEIGHTS_HELP = "weights file (.safetensors, or an authors' .pth; default: the shipped weights)"
STRENGTH_HELP = ("detail strength 0 (fidelity) .. 1 (perceptual) for weights with both endpoints "
                 "(default: the weights' own, 1.0 for the shipped ones)")
MODELS = ("auto", "default", "lite")
YTDL_FORMAT = "bestvideo+bestaudio/best"  # mpv's own ytdl-format default

Parser = argparse.ArgumentParser | argparse._ArgumentGroup


def add_weights(p: Parser, help: str = WEIGHTS_HELP) -> None:
    p.add_argument("--weights", help=help)


def add_backend(p: Parser, help: str = f"{BACKENDS} (default: auto)") -> None:
    p.add_argument("--backend", default="auto", help=help)


def add_model(p: Parser, help: str) -> None:
    p.add_argument("--model", choices=MODELS, default="auto", help=help)


def weights_for_file(args: argparse.Namespace) -> str | None:
    """``--weights``, else the shipped weights of ``--model lite``; None (the default weights) for
    ``default`` and ``auto``: a file needs no real time, so auto is the best quality."""
    if args.weights is None and args.model == "lite":
        from ..weights import preset_weights_path

        return str(preset_weights_path(args.model))
    return args.weights


def add_strength(p: Parser, help: str = STRENGTH_HELP) -> None:
    p.add_argument("--strength", type=float, default=None, help=help)


def checked_strength(args: argparse.Namespace) -> float | None:
    """``--strength`` in 0..1 (or None when not given); a one-line error otherwise."""
    from ..weights import check_strength

    return None if args.strength is None else check_strength(args.strength)


def add_cpu_speed(p: Parser) -> None:
    """``--precision`` and ``--compile`` of the torch-cpu backend."""
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                   help="torch-cpu precision (default auto: bf16 where the CPU has native bf16)")
    p.add_argument("--compile", action="store_true",
                   help="torch-cpu: compile the model with TorchInductor (~1.4x faster after a one-off compile of a "
                   "minute or more)")


def cpu_backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """The backend keyword arguments ``add_cpu_speed``'s options ask for."""
    opts: dict[str, Any] = {"precision": args.precision} if args.precision else {}
    if args.compile:
        opts["compile"] = True
    return opts


def add_threads(p: Parser, default: int | None = None) -> None:
    p.add_argument("--threads", type=int, default=default, help="CPU threads for torch and onnxruntime "
                   + ("(default: theirs)" if default is None else f"(default {default})"))


def add_overwrite(p: Parser, what: str = "OUTPUT") -> None:
    p.add_argument("--overwrite", "-y", action="store_true", help=f"replace {what} if it exists")


def add_no_progress(p: Parser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")


def add_ytdl_format(p: Parser) -> None:
    p.add_argument("--ytdl-format", default=YTDL_FORMAT, metavar="FORMAT",
                   help=f"web pages and DASH manifests: the yt-dlp format to fetch, as mpv's ytdl-format "
                   f"(default {YTDL_FORMAT}; e.g. 'bestvideo[height<=720]+bestaudio')")
