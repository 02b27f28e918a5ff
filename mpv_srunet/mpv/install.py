"""Installing the mpv Lua script (and optionally the GLSL shader) into a user's mpv config, and undoing it.

``install`` links (or copies) ``srunet/`` into ``<config>/scripts/``, records this Python in
``script-opts/srunet.conf`` and, with the shader, copies it and binds Ctrl+u in ``input.conf``;
what it added is written to ``script-opts/srunet.install.json`` so that ``uninstall`` removes
exactly that. ``mpv_config_dir`` is mpv's own rule for where that config lives. Only
``mpv-srunet mpv-script --install`` (or ``install.sh --mpv-config``) calls this.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ..fsutil import write_text_atomic

#: First line of our main.lua: how an existing copy is recognised before it is replaced.
SCRIPT_MARKER = "-- srunet: every video frame through SR-UNet"


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


#: Where ``--install`` records what it added (in ``<config>/script-opts/``; mpv reads only ``*.conf`` there).
MANIFEST = "srunet.install.json"
SCRIPT_REL, CONF_REL, SHADER_REL, INPUT_REL = "scripts/srunet", "script-opts/srunet.conf", "shaders/srunet.glsl", "input.conf"


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return None


def _sha(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


class InstallRecord:
    """What ``--install`` added to an mpv config directory: the directories it created, each file's
    content before the first install (None: it did not exist) and a hash of what it wrote, the lines
    it added, and the script entry it replaced. Reinstalling keeps the first "before"."""

    def __init__(self, config_dir: Path) -> None:
        self.cfg = config_dir
        self.path = config_dir / "script-opts" / MANIFEST
        text = _read(self.path)
        self.data: dict = json.loads(text) if text else {"dirs": [], "files": {}, "script": None}

    def mkdir(self, rel: str) -> None:
        """Create ``rel`` and its missing parents (outside the config dir too), noting each one."""
        d, new = self.cfg / rel if rel else self.cfg, []
        while not d.exists():
            new.append(d)
            d = d.parent
        for d in reversed(new):
            d.mkdir()
            self.data["dirs"].append(str(d))

    def before(self, rel: str) -> None:
        self.data["files"].setdefault(rel, {"before": _read(self.cfg / rel), "added": []})

    def after(self, rel: str, *added_lines: str) -> None:
        entry = self.data["files"][rel]
        entry["after"] = _sha(_read(self.cfg / rel))
        before = (entry["before"] or "").splitlines()
        entry["added"] = list(dict.fromkeys(ln for ln in [*entry["added"], *added_lines] if ln not in before))

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps(self.data, indent=1) + "\n")


def install(config_dir: Path, python: str, copy: bool, shader: bool = False) -> Path:
    from . import script_dir

    rec = InstallRecord(config_dir)
    rec.mkdir("script-opts")
    rec.save()  # first, so that an interrupted install can still be undone
    src = script_dir()
    target = config_dir / SCRIPT_REL
    rec.mkdir("scripts")
    if rec.data["script"] is None:
        rec.data["script"] = {"before_link": os.readlink(target) if target.is_symlink() else None}
    if not (target.is_symlink() and not copy and Path(os.readlink(target)) == src):
        _remove_installed(target)
        if copy:
            shutil.copytree(src, target)
        else:
            target.symlink_to(src, target_is_directory=True)
    rec.data["script"]["kind"] = "copy" if copy else "link"
    rec.before(CONF_REL)
    set_conf_value(config_dir / CONF_REL, "python", python)
    rec.after(CONF_REL, f"python={python}")
    if shader:
        from ..glsl import INPUT_CONF_LINE, install_shader

        rec.mkdir("shaders")
        rec.before(SHADER_REL)
        rec.before(INPUT_REL)
        install_shader(config_dir)
        rec.after(SHADER_REL)
        rec.after(INPUT_REL, INPUT_CONF_LINE)
    rec.save()
    return target


def _undo_file(cfg: Path, rel: str, entry: dict) -> str:
    path, now = cfg / rel, _read(cfg / rel)
    if now is None:
        return f"{path}: already gone"
    if _sha(now) == entry.get("after"):  # untouched since: back to exactly what it was
        if entry["before"] is None:
            path.unlink()
            return f"removed {path}"
        write_text_atomic(path, entry["before"])
        return f"restored {path}"
    added = set(entry.get("added", []))
    if not added:
        return f"{path}: changed since the install; left as it is"
    write_text_atomic(path, "".join(ln for ln in now.splitlines(keepends=True) if ln.rstrip("\r\n") not in added))
    return f"{path}: changed since the install; removed only the lines mpv-srunet added"


def uninstall(config_dir: Path) -> list[str]:
    """Undo what ``install`` recorded; without a record (an older install), remove only what is
    recognisably ours: the script entry, the Ctrl+u input.conf line, an unchanged packaged shader."""
    from ..glsl import INPUT_CONF_LINE, shipped_shader_path

    done: list[str] = []
    target = config_dir / SCRIPT_REL
    rec = InstallRecord(config_dir)
    if not rec.path.exists():
        if target.is_symlink() or target.exists():
            _remove_installed(target)
            done.append(f"removed {target}")
        legacy = {INPUT_REL: {"after": None, "added": [INPUT_CONF_LINE]},
                  SHADER_REL: {"after": _sha(_read(shipped_shader_path())), "before": None}}
        done += [_undo_file(config_dir, rel, e) for rel, e in legacy.items() if (config_dir / rel).exists()]
        if (config_dir / CONF_REL).exists():
            done.append(f"{config_dir / CONF_REL}: no install record, left as it is")
        return done
    script = rec.data.get("script")
    if script is not None and (target.is_symlink() or target.exists()):
        _remove_installed(target)
        done.append(f"removed {target}")
        if script.get("before_link"):
            target.symlink_to(script["before_link"], target_is_directory=True)
            done.append(f"restored the link {target} -> {script['before_link']}")
    done += [_undo_file(config_dir, rel, e) for rel, e in rec.data["files"].items()]
    rec.path.unlink()
    for d in reversed(rec.data["dirs"]):
        try:
            Path(d).rmdir()  # only when empty: never what the user put there since
        except OSError:
            pass
    return done
