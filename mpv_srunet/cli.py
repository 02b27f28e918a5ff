"""`mpv-srunet` command line.

Each subcommand lives in its own module, which exposes ``register(subparsers)``;
the parser it adds calls ``set_defaults(func=run)`` where ``run(args) -> int``.
Modules are imported lazily by name so that a missing optional dependency of one
command never breaks the others.

Errors: a :class:`~mpv_srunet.errors.SRUNetError` (or a bad argument) prints one
line on stderr and exits 2; Ctrl-C exits 130, SIGTERM 143 and a hang-up 129 (ignored under
nohup), each after the command's clean-up. ``MPV_SRUNET_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from . import __version__
from .errors import SRUNetError
from .signals import Signalled, raise_on_exit_signals

#: (module, one-line help) in the order `--help` shows them.
COMMAND_MODULES: list[str] = [
    "mpv_srunet.commands.upscale",
    "mpv_srunet.commands.weights",
    "mpv_srunet.commands.export_onnx",
    "mpv_srunet.commands.eval",
    "mpv_srunet.commands.build_engine",
    "mpv_srunet.commands.bench",
    "mpv_srunet.commands.export_glsl",
    "mpv_srunet.commands.train",
    "mpv_srunet.commands.finetune",
    "mpv_srunet.commands.mpv_script",
    "mpv_srunet.commands.play",
    "mpv_srunet.commands.doctor",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpv-srunet",
        description="SR-UNet upscaling and H.265 artifact removal for mpv (Vaccaro et al., ACM MM 2021).",
    )
    parser.add_argument("--version", action="version", version=f"mpv-srunet {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as e:  # e.g. an extra not installed: the command explains itself when used
            _register_unavailable(sub, name, e)
            continue
        module.register(sub)
    return parser


def _register_unavailable(sub: argparse._SubParsersAction, module: str, err: ImportError) -> None:
    cmd = module.rsplit(".", 1)[-1].replace("_", "-")
    p = sub.add_parser(cmd, help=f"(unavailable: {err})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def run(_args: argparse.Namespace) -> int:
        raise SRUNetError(f"{cmd}: unavailable here ({err}); reinstall with ./install.sh --dev")

    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        # SIGTERM and a hang-up end any command like Ctrl-C does: its clean-up runs (temporary
        # outputs removed, children ended) and it exits 143 / 129 with one line. Commands with more
        # to say (upscale, eval, play, train run) handle them first; Ctrl-C stays KeyboardInterrupt.
        with raise_on_exit_signals(only=(signal.SIGTERM, signal.SIGHUP)):
            return int(args.func(args) or 0)
    except Signalled as e:
        print(f"mpv-srunet: interrupted by {e}", file=sys.stderr)
        return e.exit_code
    except SRUNetError as e:
        if os.environ.get("MPV_SRUNET_DEBUG"):
            raise
        print(f"mpv-srunet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mpv-srunet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
