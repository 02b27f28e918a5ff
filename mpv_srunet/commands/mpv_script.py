"""`mpv-srunet mpv-script`: where the mpv Lua script is, and installing it for this user."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

#: First line of our main.lua: how an existing copy is recognised before it is replaced.
SCRIPT_MARKER = "-- srunet: every video frame through SR-UNet"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mpv-script",
        help="print or install the mpv Lua script (mpv --script=DIR/srunet)",
        description="--path prints the script directory (use it as mpv --script=PATH). --install links it into "
        "~/.config/mpv/scripts/srunet (active in every mpv; Alt+u toggles) and records this Python in "
        "script-opts/srunet.conf. Safe to run again.",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--path", action="store_true", help="print the script directory")
    g.add_argument("--install", action="store_true", help="install for this user (idempotent)")
    g.add_argument("--uninstall", action="store_true", help="remove the installed script (keeps srunet.conf)")
    p.add_argument("--config-dir", default=None,
                   help="mpv config directory (default: $MPV_HOME, else $XDG_CONFIG_HOME/mpv or ~/.config/mpv)")
    p.add_argument("--copy", action="store_true", help="copy the script instead of linking it")
    p.add_argument("--python", default=None, help="Python to record (default: the one running this command)")
    p.add_argument("--with-shader", action="store_true",
                   help="with --install: also copy the GLSL shader to ~~/shaders/srunet.glsl and bind Ctrl+u "
                   "to toggle it in input.conf (any GPU, no Python at play time; see docs/glsl.md)")
    p.set_defaults(func=run)


def mpv_config_dir(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("MPV_HOME"):
        return Path(os.environ["MPV_HOME"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mpv"


def _is_ours(path: Path) -> bool:
    try:
        return (path / "main.lua").read_text(errors="replace").startswith(SCRIPT_MARKER)
    except OSError:
        return False


def _remove_installed(target: Path) -> None:
    from ..errors import UsageError

    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        if not _is_ours(target):
            raise UsageError(f"{target}: exists and is not an mpv-srunet script; move it away and run again")
        shutil.rmtree(target)


def set_conf_value(conf: Path, key: str, value: str) -> None:
    """Set ``key=value`` in an mpv script-opts file, keeping every other line (idempotent)."""
    lines = conf.read_text().splitlines() if conf.exists() else ["# mpv-srunet options (see docs/mpv.md)"]
    out, done = [], False
    for line in lines:
        if line.split("=", 1)[0].strip() == key:
            if not done:
                out.append(f"{key}={value}")
                done = True
            continue
        out.append(line)
    if not done:
        out.append(f"{key}={value}")
    tmp = conf.with_name(conf.name + ".tmp")
    tmp.write_text("\n".join(out) + "\n")
    tmp.replace(conf)


def install(config_dir: Path, python: str, copy: bool) -> Path:
    from ..mpv import script_dir

    src = script_dir()
    target = config_dir / "scripts" / "srunet"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not (target.is_symlink() and not copy and Path(os.readlink(target)) == src):
        _remove_installed(target)
        if copy:
            shutil.copytree(src, target)
        else:
            target.symlink_to(src, target_is_directory=True)
    conf = config_dir / "script-opts" / "srunet.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    set_conf_value(conf, "python", python)
    return target


def run(args: argparse.Namespace) -> int:
    from ..mpv import script_dir

    if args.path:
        print(script_dir())
        return 0
    config_dir = mpv_config_dir(args.config_dir)
    target = config_dir / "scripts" / "srunet"
    if args.uninstall:
        if target.exists() or target.is_symlink():
            _remove_installed(target)
            print(f"removed {target}")
        return 0
    python = args.python or sys.executable
    install(config_dir, python, args.copy)
    print(f"installed {target} (python={python}); Alt+u toggles SR-UNet in mpv")
    if args.with_shader:
        from ..glsl import install_shader

        shader = install_shader(config_dir)
        print(f"installed {shader}; Ctrl+u toggles the SR-UNet GLSL shader (mpv --vo=gpu/gpu-next)")
    return 0
