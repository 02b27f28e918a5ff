"""The user's mpv config changes only when the user asks, and `--uninstall` undoes exactly that;
a first install is quiet (issue 17). Every test runs in a temporary HOME / config dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from test_mpv_helpers import MPV, srunet_env

from mpv_srunet.glsl import INPUT_CONF_LINE

REPO = Path(__file__).resolve().parents[1]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in srunet_env().items() if k not in ("MPV_HOME", "XDG_CONFIG_HOME", "CI")}
    return {**env, "HOME": str(home), **extra}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mpv_srunet.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: files by content and mode, links by target, directories."""
    out: dict[str, tuple] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", p.stat().st_mode)
        else:
            out[rel] = ("file", p.read_bytes(), p.stat().st_mode)
    return out


def _user_config(cfg: Path) -> None:
    """A user's own mpv config, with the details a rewrite would lose (CRLF, no final newline)."""
    (cfg / "script-opts").mkdir(parents=True)
    (cfg / "script-opts" / "srunet.conf").write_bytes(b"backend=onnxruntime\r\npython=/my/own/python")
    (cfg / "script-opts" / "osc.conf").write_text("seekbarstyle=diamond\n")
    (cfg / "input.conf").write_bytes(b"# mine\nq quit-watch-later\nCTRL+x cycle mute")
    (cfg / "mpv.conf").write_text("hwdec=auto\n")
    (cfg / "input.conf").chmod(0o640)


@pytest.mark.parametrize("existing", [False, True], ids=["fresh-home", "user-config"])
def test_install_then_uninstall_leaves_the_config_byte_identical(tmp_path, existing) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cfg = home / ".config" / "mpv"
    if existing:
        _user_config(cfg)
    before = snapshot(home)
    env = _env(home)
    for extra in ([], ["--with-shader"], ["--with-shader", "--copy"]):  # reinstalls keep the first record
        r = _cli("mpv-script", "--install", *extra, env=env)
        assert r.returncode == 0, r.stderr
    assert (cfg / "scripts" / "srunet" / "main.lua").is_file()
    assert f"python={sys.executable}" in (cfg / "script-opts" / "srunet.conf").read_text().splitlines()
    assert INPUT_CONF_LINE in (cfg / "input.conf").read_text().splitlines()
    assert (cfg / "shaders" / "srunet.glsl").is_file()
    r = _cli("mpv-script", "--uninstall", env=env)
    assert r.returncode == 0, r.stderr
    assert snapshot(home) == before, r.stdout


def test_uninstall_keeps_what_the_user_changed_since(tmp_path) -> None:
    cfg = tmp_path / "mpv"
    _user_config(cfg)
    env = _env(tmp_path)
    assert _cli("mpv-script", "--install", "--with-shader", "--config-dir", str(cfg), env=env).returncode == 0
    with open(cfg / "input.conf", "a") as f:
        f.write("CTRL+y cycle pause\n")
    r = _cli("mpv-script", "--uninstall", "--config-dir", str(cfg), env=env)
    assert r.returncode == 0, r.stderr
    lines = (cfg / "input.conf").read_text().splitlines()
    assert INPUT_CONF_LINE not in lines
    assert lines == ["# mine", "q quit-watch-later", "CTRL+x cycle mute", "CTRL+y cycle pause"]
    assert (cfg / "script-opts" / "srunet.conf").read_bytes() == b"backend=onnxruntime\r\npython=/my/own/python"
    assert not (cfg / "scripts").exists() and not (cfg / "shaders").exists()
    assert not (cfg / "script-opts" / "srunet.install.json").exists()


def test_ci_never_changes_the_users_mpv_config(tmp_path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    r = _cli("mpv-script", "--install", env=_env(home, CI="true"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "CI" in r.stderr, r.stderr
    assert snapshot(home) == {}


@pytest.mark.slow
def test_install_sh_leaves_the_mpv_config_alone_and_is_quiet(tmp_path) -> None:
    """`./install.sh` (no --mpv-config) and `CI=true ./install.sh --mpv-config`: no mpv config at all;
    pip's editable install prints no setuptools `project.license` warning."""
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv: install.sh installs into the checkout's venv")
    home = tmp_path / "home"
    home.mkdir()
    for args, extra in (([], {}), (["--mpv-config"], {"CI": "true"})):
        r = subprocess.run(["bash", str(REPO / "install.sh"), "--no-apt", *args], env=_env(home, **extra),
                           capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        assert "project.license" not in r.stdout + r.stderr
        assert not (home / ".config" / "mpv").exists(), snapshot(home)
    assert "--mpv-config ignored" in r.stderr


def test_pyproject_license_uses_the_spdx_form() -> None:
    """setuptools warns (three times per install) about `project.license` as a TOML table."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert [str(w.message)[:200] for w in caught if "license" in str(w.message).lower()] == []
    assert dist.metadata.license_expression == "MIT"


@pytest.mark.mpv
@pytest.mark.skipif(MPV is None, reason="mpv binary not installed")
def test_installed_script_whose_python_is_gone_plays_the_original_with_one_osd_line(tmp_path, h265_small_clip) -> None:
    """The clone it was installed from is deleted: mpv (with the user's config) plays the original."""
    venv = tmp_path / "clone" / ".venv" / "bin"
    venv.mkdir(parents=True)
    python = venv / "python3"
    python.symlink_to(sys.executable)
    cfg = tmp_path / "mpv"
    r = _cli("mpv-script", "--install", "--copy", "--python", str(python), "--config-dir", str(cfg),
             env=_env(tmp_path))
    assert r.returncode == 0, r.stderr
    shutil.rmtree(tmp_path / "clone")
    rec, probe = tmp_path / "rec.txt", tmp_path / "probe.lua"
    probe.write_text(f'mp.register_event("playback-restart", function() local f = io.open("{rec}", "a"); '
                     'f:write(mp.get_property("video-params/w", "?") .. "\\n"); f:close() end)\n')
    # the user's config (MPV_HOME), so the installed copy and its srunet.conf load (encoding mode would not)
    proc = subprocess.run([MPV, "--vo=null", "--ao=null", "--msg-level=srunet=v", f"--script={probe}",
                           str(h265_small_clip)],
                          env={**srunet_env(), "MPV_HOME": str(cfg)}, capture_output=True, text=True, timeout=150)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Exiting... (End of file)" in log, log[-3000:]
    assert rec.read_text().split() == ["160"]  # the original, played to its end
    osd = [ln for ln in log.splitlines() if ln.startswith("[srunet] off")]
    assert len(osd) == 1 and str(python) in osd[0], log[-3000:]
    assert json.loads((cfg / "script-opts" / "srunet.install.json").read_text())["script"]["kind"] == "copy"


def test_uninstall_of_an_older_install_removes_only_what_is_ours(tmp_path) -> None:
    """Installs made before the record existed (every install.sh run did one): link, key line, shader."""
    from mpv_srunet.glsl import shipped_shader_path
    from mpv_srunet.mpv import script_dir

    cfg = tmp_path / "mpv"
    _user_config(cfg)
    (cfg / "scripts").mkdir()
    (cfg / "scripts" / "srunet").symlink_to(script_dir(), target_is_directory=True)
    (cfg / "shaders").mkdir()
    (cfg / "shaders" / "srunet.glsl").write_bytes(shipped_shader_path().read_bytes())
    with open(cfg / "input.conf", "a") as f:
        f.write("\n" + INPUT_CONF_LINE + "\n")
    r = _cli("mpv-script", "--uninstall", "--config-dir", str(cfg), env=_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert not (cfg / "scripts" / "srunet").exists() and not (cfg / "shaders" / "srunet.glsl").exists()
    assert (cfg / "input.conf").read_text().splitlines() == ["# mine", "q quit-watch-later", "CTRL+x cycle mute"]
    assert (cfg / "script-opts" / "srunet.conf").read_bytes() == b"backend=onnxruntime\r\npython=/my/own/python"
