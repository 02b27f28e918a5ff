"""`mpv-srunet mpv-script`: where the mpv Lua script is, and installing it for this user."""

from __future__ import annotations

import argparse
import os
import sys

from ..mpv.install import SCRIPT_REL, SHADER_REL, install, mpv_config_dir, uninstall


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mpv-script",
        help="print or install the mpv Lua script (mpv --script=DIR/srunet)",
        description="--path prints the script directory (use it as mpv --script=PATH). --install links it into "
        "~/.config/mpv/scripts/srunet (active in every mpv; Alt+u toggles) and records this Python in "
        "script-opts/srunet.conf; it notes what it added in script-opts/srunet.install.json, so that "
        "--uninstall removes exactly that. Safe to run again. Nothing else ever changes your mpv config.",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--path", action="store_true", help="print the script directory")
    g.add_argument("--install", action="store_true", help="install for this user (idempotent)")
    g.add_argument("--uninstall", action="store_true",
                   help="undo --install exactly: the script, shader, input.conf line, srunet.conf as it was")
    p.add_argument("--config-dir", default=None,
                   help="mpv config directory (default: $MPV_HOME, else $XDG_CONFIG_HOME/mpv or ~/.config/mpv)")
    p.add_argument("--copy", action="store_true", help="copy the script instead of linking it")
    p.add_argument("--python", default=None, help="Python to record (default: the one running this command)")
    p.add_argument("--with-shader", action="store_true",
                   help="with --install: also copy the GLSL shader to ~~/shaders/srunet.glsl and bind Ctrl+u "
                   "to toggle it in input.conf (any GPU, no Python at play time; see docs/glsl.md)")
    p.set_defaults(func=run)


def _user_config_guard(args: argparse.Namespace) -> None:
    """CI never changes the CI user's own mpv config (a temp --config-dir or MPV_HOME is fine)."""
    from ..errors import UsageError

    if os.environ.get("CI", "").lower() in ("1", "true", "yes") and not (args.config_dir or os.environ.get("MPV_HOME")):
        raise UsageError("CI is set: not changing this user's mpv config (pass --config-dir DIR or MPV_HOME)")


def run(args: argparse.Namespace) -> int:
    from ..mpv import script_dir

    if args.path:
        print(script_dir())
        return 0
    _user_config_guard(args)
    config_dir = mpv_config_dir(args.config_dir)
    target = config_dir / SCRIPT_REL
    if args.uninstall:
        for line in uninstall(config_dir):
            print(line)
        return 0
    python = args.python or sys.executable
    install(config_dir, python, args.copy, shader=args.with_shader)
    print(f"installed {target} (python={python}); Alt+u toggles SR-UNet in mpv")
    if args.with_shader:
        print(f"installed {config_dir / SHADER_REL}; Ctrl+u toggles the SR-UNet GLSL shader (mpv --vo=gpu/gpu-next)")
    print(f"undo with: mpv-srunet mpv-script --uninstall{f' --config-dir {args.config_dir}' if args.config_dir else ''}")
    return 0
