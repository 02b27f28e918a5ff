"""Helpers (no tests) for the mpv integration tests: run the real mpv binary, find leftover servers, match frames."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MPV = shutil.which("mpv")
SERVER_MODULE = "mpv_srunet.mpv.server"


def srunet_env() -> dict[str, str]:
    """Environment where the frame server's Python finds this checkout even without an install."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def server_pids(mpv_pid: int | None = None) -> list[int]:
    """Frame server processes (of the mpv with ``mpv_pid``, or any)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if SERVER_MODULE.encode() not in args:
            continue
        if mpv_pid is None or str(mpv_pid).encode() in args:
            out.append(int(d.name))
    return out


def wait_no_servers(mpv_pid: int, timeout: float = 5.0) -> list[int]:
    """Wait until the servers of ``mpv_pid`` are gone; returns the survivors (killed, so no test leaks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = server_pids(mpv_pid)
        if not left:
            return []
        time.sleep(0.1)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def control_dir_of(server_pid: int) -> Path | None:
    """The control directory of the frame server ``server_pid`` (other servers may have theirs beside it)."""
    import tempfile

    for d in Path(tempfile.gettempdir()).glob("mpv-srunet-*"):
        try:
            if (d / "server.pid").read_text() == str(server_pid):
                return d
        except OSError:
            continue
    return None


def mpv_cmd(script_dir: Path, *args: str, opts: dict[str, str] | None = None) -> list[str]:
    o = {"python": sys.executable, **(opts or {})}
    script_opts = ",".join(f"srunet-{k}={v}" for k, v in o.items())
    return [MPV, "--no-config", "--msg-level=srunet=v", f"--script={script_dir}", f"--script-opts={script_opts}", *args]


def run_mpv(cmd: list[str], timeout: float = 150,
            env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, list[int]]:
    """Run mpv to completion (killed on timeout); returns the result and any server it left behind."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env or srunet_env(), start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"mpv did not finish in {timeout} s:\n{out[-3000:]}") from None
    left = wait_no_servers(proc.pid)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None), left


def decode_yuv(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """All video frames as yuv420p planes (H*3/2 x W) and the stream types in the file."""
    import av

    with av.open(str(path)) as c:
        types = [s.type for s in c.streams]
        frames = [f.to_ndarray(format="yuv420p").astype(np.int16) for f in c.decode(video=0)]
    return frames, types


def match_indices(frames: list[np.ndarray], ref: list[np.ndarray]) -> list[int]:
    """For each frame, the index of the closest reference frame (mean absolute difference)."""
    return [int(np.argmin([np.abs(f - r).mean() for r in ref])) for f in frames]
