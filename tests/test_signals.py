"""Every signal ends `mpv-srunet play`, mpv with the Lua script, and the frame server cleanly (issue 17).

Each signal is sent while upscaled frames are flowing (a probe script marks when mpv's
playback position passed 0.3 s of upscaled video). Clean means: the documented exit
status (128 + signal for our processes), no abort/core dump ("terminate called ..."),
no process and no control directory left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_h265_clip
from test_mpv_helpers import MPV, control_dir_of, mpv_cmd, server_pids, srunet_env, wait_no_servers

from mpv_srunet.mpv import script_dir

pytestmark = [
    pytest.mark.mpv,
    pytest.mark.skipif(MPV is None, reason="mpv binary not installed (apt install mpv; ./install.sh --dev)"),
    pytest.mark.timeout(300),
]

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
BACKEND = "onnxruntime"  # a C++ runtime with its own threads: where an unclean exit aborts

#: Writes "flowing" once 0.3 s of the (upscaled) video has played; "w=<width>" each restart;
#: "s=<second>" each time the playback position enters another second.
PROBE_LUA = """
local out = "{out}"
local done = false
local function note(s) local f = io.open(out, "a"); f:write(s .. "\\n"); f:close() end
mp.register_event("playback-restart", function() note("w=" .. mp.get_property("video-params/w", "?")) end)
local sec = -1
mp.observe_property("time-pos", "number", function(_, t)
  if t and math.floor(t) ~= sec then sec = math.floor(t); note("s=" .. sec) end
  if done or not t or t < 0.3 then return end
  done = true
  note("flowing")
end)
"""


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """160x96 H.265, 10 s, with audio."""
    return make_h265_clip(tmp_path_factory.mktemp("sig") / "pan.mkv", 160, 96, frames=240)


def _probe(tmp_path: Path) -> tuple[Path, Path]:
    rec, lua = tmp_path / "probe.txt", tmp_path / "probe.lua"
    lua.write_text(PROBE_LUA.replace("{out}", str(rec)))
    return lua, rec


def _wait_for(pred, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, f"exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.05)


def _text(p: Path) -> str:
    return p.read_text() if p.exists() else ""


def _pids_with(needle: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and needle.encode() in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except OSError:
            continue
    return out


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_play_ends_cleanly_on_signal_while_frames_flow(tmp_path, clip, tiny_weights, sig) -> None:
    """`play --policy wait` (libmpv in-process, onnxruntime rendering): was an abort (134) on Ctrl-C."""
    lua, rec = _probe(tmp_path)
    cmd = [sys.executable, "-m", "mpv_srunet.cli", "play", str(clip), "--no-config", "--policy", "wait",
           "--weights", str(tiny_weights), "--backend", BACKEND, "--mpv-opt", "vo=null", "--mpv-opt", "ao=null",
           "--mpv-opt", "loop-file=inf", "--mpv-opt", f"scripts={lua}"]
    err = tmp_path / "stderr.txt"
    with open(err, "w") as ef:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=ef, env=srunet_env(), start_new_session=True)
    try:
        _wait_for(lambda: "flowing" in _text(rec), proc, "upscaled playback")
        assert "w=320" in _text(rec), _text(rec)  # the frames flowing are the upscaled ones
        os.kill(proc.pid, sig)
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    log = err.read_text()
    assert rc == 128 + sig, (rc, log[-3000:])
    assert "terminate called" not in log and "Traceback" not in log, log[-3000:]
    assert f"stopped by {sig.name}" in log
    assert _pids_with(str(lua)) == []


@contextlib.contextmanager
def _mpv_upscaling(tmp_path: Path, clip: Path, tiny_weights: Path,
                   prefix: tuple[str, ...] = ()) -> Iterator[tuple[subprocess.Popen, Path, Path, int]]:
    """mpv (run by ``prefix``, e.g. nohup) with the script playing upscaled frames: (mpv, its log,
    the probe's record, the server pid); whatever is left is killed at the end."""
    lua, rec = _probe(tmp_path)
    log = tmp_path / "mpv.log"
    cmd = [*prefix, *mpv_cmd(script_dir(), "--vo=null", "--ao=null", "--loop-file=inf", f"--log-file={log}", f"--script={lua}",
                  str(clip), opts={"weights": str(tiny_weights), "backend": BACKEND, "policy": "wait"})]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=srunet_env(), start_new_session=True)
    try:
        _wait_for(lambda: "flowing" in _text(rec) and server_pids(proc.pid), proc, "upscaled playback")
        assert "w=320" in _text(rec), _text(rec)
        (server,) = server_pids(proc.pid)
        yield proc, log, rec, server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_lua_mpv_and_server_end_cleanly_on_signal_to_the_group(tmp_path, clip, tiny_weights, sig) -> None:
    """A terminal's Ctrl-C / hang-up reaches mpv and its frame server (one process group)."""
    with _mpv_upscaling(tmp_path, clip, tiny_weights) as (proc, log, _, server):
        control = control_dir_of(server)
        assert control is not None
        os.killpg(proc.pid, sig)
        rc = proc.wait(60)
    # mpv quits with its own status 4 on SIGINT/SIGTERM; it does not handle SIGHUP (dies by it). Never a crash.
    assert rc in (4, -sig), (rc, log.read_text()[-3000:])
    assert wait_no_servers(proc.pid) == [], "frame server left running"
    # An mpv killed by SIGHUP does not wait for its server, which is then reparented (no longer
    # mpv's child) and finishes its own shutdown: control directory first, then the interpreter's
    # exit, which on a loaded machine can take seconds. Bounded wait for both, then the same checks.
    deadline = time.monotonic() + 30
    while (control.exists() or _running(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not control.exists(), "control directory left behind"
    assert not _running(server), "frame server still running"


@pytest.mark.skipif(shutil.which("nohup") is None, reason="no nohup (coreutils)")
def test_nohup_mpv_and_server_play_on_through_a_hang_up(tmp_path, clip, tiny_weights) -> None:
    """`nohup mpv --script=...`: a hang-up to the group is ignored by mpv and by its frame server
    (which mpv starts with default signals: it follows mpv's SigIgn): upscaled playback goes on;
    SIGTERM then ends both."""
    with _mpv_upscaling(tmp_path, clip, tiny_weights, prefix=("nohup",)) as (proc, log, rec, server):
        os.killpg(proc.pid, signal.SIGHUP)
        seconds = _text(rec).count("s=")
        _wait_for(lambda: _text(rec).count("s=") >= seconds + 2, proc, "two more seconds of playback", 60)
        assert _running(server), "frame server ended by the hang-up"
        assert "playing the original" not in _text(log) and "w=160" not in _text(rec), _text(log)[-3000:]
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 4, (rc, _text(log)[-3000:])
    assert wait_no_servers(proc.pid) == [], "frame server left running"


def _running(pid: int) -> bool:
    """Alive and not a zombie (a server whose mpv died is reaped by init, whenever init does it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_lua_server_alone_ends_cleanly_on_signal_and_mpv_plays_on(tmp_path, clip, tiny_weights, sig) -> None:
    """The server gets the signal alone: it exits 128 + signal without leftovers; mpv plays the original."""
    with _mpv_upscaling(tmp_path, clip, tiny_weights) as (proc, log, rec, server):
        control = control_dir_of(server)
        assert control is not None
        os.kill(server, sig)
        _wait_for(lambda: "playing the original: frame server stopped" in _text(log), proc, "the fallback", 30)
        _wait_for(lambda: "w=160" in _text(rec), proc, "the original playing", 30)
        assert f"exit status {128 + sig}" in _text(log).split("frame server stopped", 1)[1][:200], _text(log)[-3000:]
        assert not control.exists(), "control directory left behind"
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert wait_no_servers(proc.pid) == []


def test_server_start_sweeps_leftover_control_dirs(tmp_path, monkeypatch) -> None:
    """Leftovers of earlier sessions go at the next server start; live or just-created ones stay."""
    from mpv_srunet.mpv import server

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    dirs = {name: tmp_path / f"mpv-srunet-{name}" for name in ("orphan", "fresh", "live", "dead")}
    for d in dirs.values():
        d.mkdir()
    (dirs["orphan"] / "resp-2.json").write_text('{"ok": true}')  # a last answer written during the shutdown
    os.utime(dirs["orphan"], (time.time() - 2 * server.ORPHAN_AGE_S,) * 2)
    (dirs["live"] / "server.pid").write_text(str(os.getpid()))
    (dirs["dead"] / "server.pid").write_text(str(dead.pid))
    server.sweep_stale_control_dirs()
    assert sorted(d.name for d in tmp_path.iterdir()) == ["mpv-srunet-fresh", "mpv-srunet-live"]
