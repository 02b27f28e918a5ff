"""Benchmarks of the mpv route (``python -m mpv_srunet.mpv.bench``); numbers for docs/mpv.md.

* ``playback``: real-time playback in mpv (``--vo=null``, policy ``wait`` so SR stays on) for a
  few seconds per backend: displayed fps, late and dropped frames, time mpv spent waiting for
  frames, and the frame server's peak memory.
* ``handoff``: what serving a frame to mpv costs beyond the filter: the filter is replaced by
  a constant output (benchmark harness only), so what is measured is decode + colour
  conversion + y4m + loopback HTTP + mpv demux, per output frame (1080p for a 540p input);
  then the transport alone (frames pre-rendered) into mpv and into a plain HTTP client.
* ``output``: our float -> y4m output step against the filter's own output step.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import script_dir

PROBE_LUA = """
local secs, out = tonumber("{secs}"), "{out}"
local t0, f0, paused, last_pause, done = nil, nil, 0, nil, false
mp.observe_property("paused-for-cache", "bool", function(_, v)
  if v then last_pause = mp.get_time() elseif last_pause then paused = paused + mp.get_time() - last_pause; last_pause = nil end
end)
local function report()
  if not t0 then return end
  if last_pause then paused = paused + mp.get_time() - last_pause end
  local num = function(name) return mp.get_property_number(name, 0) or 0 end
  local json = string.format(
    '{{"wall": %.3f, "frames": %d, "late": %d, "dropped": %d, "decoder_dropped": %d, "waiting": %.3f, "width": %d}}',
    mp.get_time() - t0, num("estimated-frame-number") - f0, num("vo-delayed-frame-count"),
    num("frame-drop-count"), num("decoder-frame-drop-count"), paused, num("video-params/w"))
  t0 = nil
  local f = io.open(out, "w"); f:write(json); f:close()
  mp.commandv("quit")
end
mp.register_event("playback-restart", function()
  if t0 or done then return end
  done = true
  t0, f0 = mp.get_time(), mp.get_property_number("estimated-frame-number", 0)
  mp.add_timeout(secs, report)
end)
mp.add_hook("on_unload", 50, report)
"""


def _server_peak_rss_mb(mpv_pid: int, stop: threading.Event, box: dict[str, float]) -> None:
    from .server import __name__ as server_module

    while not stop.wait(0.2):
        for d in Path("/proc").iterdir():
            try:
                args = (d / "cmdline").read_bytes().split(b"\0")
                if server_module.encode() in args and str(mpv_pid).encode() in args:
                    for line in (d / "status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            box["peak_rss_mb"] = max(box.get("peak_rss_mb", 0.0), int(line.split()[1]) / 1024)
            except (OSError, ValueError):
                continue


def playback(clip: str, backend: str, weights: str | None, secs: float, log_file: str | None = None) -> dict[str, Any]:
    """Play ``clip`` in real time for ``secs`` seconds (after the first frame) and report."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        probe = Path(tmp) / "probe.lua"
        probe.write_text(PROBE_LUA.format(secs=secs, out=out))
        opts = f"srunet-python={sys.executable},srunet-backend={backend},srunet-policy=wait"
        if weights:
            opts += f",srunet-weights={weights}"
        cmd = [shutil.which("mpv") or "mpv", "--no-config", "--vo=null", "--ao=null", f"--script={script_dir()}",
               f"--script={probe}", f"--script-opts={opts}", clip]
        if log_file:
            cmd.insert(1, f"--log-file={log_file}")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stop, box = threading.Event(), {}
        threading.Thread(target=_server_peak_rss_mb, args=(proc.pid, stop, box), daemon=True).start()
        try:
            proc.wait(timeout=secs + 180)
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        r = json.loads(out.read_text()) if out.exists() else {"error": "no result"}
    r.update(box, backend=backend, fps=r.get("frames", 0) / max(r.get("wall", 1), 1e-9))
    return r


class _ConstantFilter:
    """Benchmark harness: stands in for the upscaler with a precomputed output, so the
    measured time is everything *but* the filter. Never used outside this benchmark."""

    scale = 2.0
    backend_name = "constant (benchmark)"
    weights_info = None

    def __init__(self, out: np.ndarray) -> None:
        self._out = out

    def upscale_float(self, x: np.ndarray) -> np.ndarray:
        return self._out


def _mpv_read_rate(srv: Any, secs: float, tmp: Path) -> float:
    """Frames/s at which mpv (untimed, vo=null) consumes the server's stream."""
    res = tmp / "r.json"
    probe_lua = tmp / "probe.lua"
    probe_lua.write_text(PROBE_LUA.format(secs=secs, out=res))
    cmd = [shutil.which("mpv") or "mpv", "--no-config", "--vo=null", "--no-audio", "--untimed",
           f"--script={probe_lua}", srv.url("1", "sr")]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=secs + 120)
    r = json.loads(res.read_text())
    return r["frames"] / r["wall"]


def _client_read_ms(url: str, frames: int) -> float:
    """ms per frame for a plain HTTP client reading the whole (pre-rendered) file: the server's side alone."""
    import urllib.request

    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        while r.read(1 << 20):
            pass
    return (time.perf_counter() - t0) / frames * 1000


def handoff(clip: str, secs: float) -> dict[str, Any]:
    """Per output frame (2x the clip): the server's render time with a free filter, the
    output conversion alone, and the transport (y4m over loopback HTTP into mpv) alone."""
    from ..colour import float_to_yuv420, frame_colour
    from .media import Media
    from .server import FrameServer
    from .source import FrameSource, probe

    info = probe(clip)
    size = (2 * info.width, 2 * info.height)
    out = np.random.default_rng(0).uniform(-1, 1, (1, 3, size[1], size[0])).astype(np.float32)
    colour = frame_colour(FrameSource(info).frame_at(0))
    t0 = time.perf_counter()
    for _ in range(20):
        float_to_yuv420(out[0].copy(), colour, size)
    conv_ms = (time.perf_counter() - t0) / 20 * 1000
    with tempfile.TemporaryDirectory() as tmp:
        srv = FrameServer(Path(tmp))
        threading.Thread(target=srv.httpd.serve_forever, daemon=True).start()
        media = Media("1", info, _ConstantFilter(out), threading.Lock())
        srv.media["1"] = media
        full_fps = _mpv_read_rate(srv, secs, Path(tmp))
        render_ms = media.stats.total_ms
        media.close()
        media = Media("1", info, _ConstantFilter(out), threading.Lock())
        record = media.store("sr").get(0)
        media.store("sr")._render = lambda k: record  # transport only: every frame pre-rendered
        srv.media["1"] = media
        transport_fps = _mpv_read_rate(srv, secs, Path(tmp))
        send_ms = _client_read_ms(srv.url("1", "sr"), info.frames or 1)
        srv.httpd.shutdown()
    return {"out": f"{size[0]}x{size[1]}", "server_fps_free_filter": round(full_fps, 1),
            "server_render_ms": round(render_ms, 2), "output_conversion_ms": round(conv_ms + 0.0, 2),
            "transport_fps": round(transport_fps, 1), "transport_ms": round(1000 / transport_fps, 2),
            "record_mb": round(len(record) / 1e6, 2),
            "server_send_ms": round(send_ms, 2)}


def output_paths(clip: str, n: int = 20) -> dict[str, Any]:
    """The filter's output step (``colour.float_to_frame``: float RGB -> VideoFrame in the source
    format, what ``Upscaler.upscale(frame)`` ends with) against ours (float RGB -> y4m record),
    per 2x frame of ``clip``; the input step (``frame_to_float``) is the same code in both."""
    from ..colour import float_to_frame, float_to_yuv420, frame_colour
    from .source import FrameSource, probe
    from .y4m import FRAME_TAG

    info = probe(clip)
    like = FrameSource(info).frame_at(0)
    colour = frame_colour(like)
    size = (2 * info.width, 2 * info.height)
    y = np.random.default_rng(0).uniform(-1, 1, (3, size[1], size[0])).astype(np.float32)
    big = like.reformat(width=size[0], height=size[1])

    def timed(fn: Any) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1000

    filt = timed(lambda: float_to_frame(y.transpose(1, 2, 0), big, colour))
    ours = timed(lambda: FRAME_TAG + float_to_yuv420(y.copy(), colour, size).tobytes())
    copy = timed(lambda: y.copy())
    return {"out": f"{size[0]}x{size[1]}", "filter_output_ms": round(filt, 2),
            "server_output_ms": round(ours - copy, 2), "difference_ms": round(ours - copy - filt, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mpv_srunet.mpv.bench", description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["playback", "handoff", "output"])
    p.add_argument("clip", help="input video (e.g. a 960x540 or 480x270 H.265 clip)")
    p.add_argument("--backend", action="append", default=None, help="repeatable (default: torch-cpu, onnxruntime)")
    p.add_argument("--weights", default=None)
    p.add_argument("--secs", type=float, default=10.0)
    p.add_argument("--log", default=None, help="mpv log file (playback)")
    a = p.parse_args(argv)
    if a.what == "handoff":
        print(json.dumps(handoff(a.clip, a.secs)))
        return 0
    if a.what == "output":
        print(json.dumps(output_paths(a.clip)))
        return 0
    for be in a.backend or ["torch-cpu", "onnxruntime"]:
        print(json.dumps(playback(a.clip, be, a.weights, a.secs, a.log)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
