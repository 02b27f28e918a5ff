"""Frame server: y4m layout, control protocol, security (secret, registered media only), lifetime."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import make_h265_clip
from test_mpv_helpers import server_pids, srunet_env

from mpv_srunet.mpv.y4m import FRAME_TAG, Y4MLayout

pytestmark = pytest.mark.timeout(120)


def test_y4m_layout_maps_offsets_to_frames() -> None:
    lay = Y4MLayout(320, 192, Fraction(24000, 1001), frames=10)
    h = lay.header
    assert h.startswith(b"YUV4MPEG2 W320 H192 F24000:1001 ") and h.endswith(b"\n")
    assert lay.frame_bytes == 320 * 192 * 3 // 2
    assert lay.size == len(h) + 10 * (len(FRAME_TAG) + lay.frame_bytes)
    assert lay.locate(len(h)) == (0, 0)
    assert lay.locate(len(h) + 3 * lay.record_bytes + 7) == (3, 7)
    with pytest.raises(ValueError):
        lay.locate(len(h) - 1)
    assert Y4MLayout(320, 192, Fraction(25), frames=None).size is None


def test_float_to_yuv420_matches_the_filter_conversion() -> None:
    """The fused hand-off conversion equals float_to_uint8 + swscale rgb24 -> yuv420p (+-1 level)."""
    import av

    from mpv_srunet.colour import Colour, float_to_yuv420
    from mpv_srunet.filter import float_to_uint8

    rng = np.random.default_rng(1)
    y = rng.uniform(-1.05, 1.05, (3, 90, 166)).astype(np.float32)  # odd-ish width: padded planes
    for colour in (Colour("bt709", "limited"), Colour("bt601", "full")):
        ref = av.VideoFrame.from_ndarray(float_to_uint8(y.transpose(1, 2, 0)), format="rgb24").reformat(
            format="yuv420p", src_colorspace=colour.sws_matrix, dst_colorspace=colour.sws_matrix,
            src_color_range="JPEG", dst_color_range=colour.sws_range).to_ndarray()
        got = float_to_yuv420(y.copy(), colour, (166, 90))
        assert got.shape == ref.shape and np.abs(got.astype(int) - ref).max() <= 1


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    return make_h265_clip(tmp_path_factory.mktemp("srv") / "clip.mkv", 160, 96, frames=12)


class ServerProc:
    """A frame server started the way the Lua script starts it."""

    def __init__(self, tmp: Path) -> None:
        self.ready = tmp / "ready.json"
        cmd = [sys.executable, "-m", "mpv_srunet.mpv.server", "--ready-file", str(self.ready), "--backend", "onnxruntime"]
        self.proc = subprocess.Popen(cmd, env=srunet_env(), stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            assert self.proc.poll() is None, self.proc.stderr.read()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        self.info = json.loads(self.ready.read_text())
        self.n = 0

    def request(self, req: dict) -> dict:
        self.n += 1
        d = Path(self.info["control_dir"])
        tmp = d / f".req-{self.n}.tmp"
        tmp.write_text(json.dumps(req))
        tmp.rename(d / f"req-{self.n}.json")
        resp = d / f"resp-{self.n}.json"
        deadline = time.monotonic() + 90
        while not resp.exists():
            assert time.monotonic() < deadline, "no response"
            time.sleep(0.02)
        return json.loads(resp.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self.proc.stderr.close()


@pytest.fixture()
def server(tmp_path):
    s = ServerProc(tmp_path)
    yield s
    s.stop()


def _get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), b""


def test_server_serves_registered_media_only(server, small_clip, tiny_weights) -> None:
    info = server.info
    assert Path(info["control_dir"]).stat().st_mode & 0o777 == 0o700
    resp = server.request({"op": "register", "source": str(small_clip), "weights": str(tiny_weights)})
    assert resp["ok"], resp
    assert (resp["width"], resp["height"], resp["out_width"], resp["out_height"]) == (160, 96, 320, 192)
    assert resp["frames"] == 12 and resp["seekable"] and resp["has_audio"]
    assert resp["colormatrix"] == "bt.709" and resp["colorlevels"] == "limited"
    url = resp["urls"]["sr"]
    assert url.startswith(f"http://127.0.0.1:{info['port']}/{info['secret']}/")

    # one frame in the middle, by byte range (what mpv sends after a seek)
    lay = Y4MLayout(320, 192, Fraction(24), 12)
    start = len(lay.header) + 5 * lay.record_bytes
    status, headers, body = _get(url, {"Range": f"bytes={start}-{start + lay.record_bytes - 1}"})
    assert status == 206 and headers["Content-Range"] == f"bytes {start}-{start + lay.record_bytes - 1}/{lay.size}"
    assert body.startswith(FRAME_TAG) and len(body) == lay.record_bytes
    y = np.frombuffer(body[len(FRAME_TAG):len(FRAME_TAG) + 320 * 192], np.uint8)
    assert 16 <= y.mean() <= 235 and y.std() > 5  # a real picture, limited range

    base = f"http://127.0.0.1:{info['port']}"
    media = resp["media"]
    wrong = info["secret"][:-2] + ("AA" if not info["secret"].endswith("AA") else "BB")
    assert _get(f"{base}/{wrong}/{media}/sr.y4m")[0] == 403
    assert _get(f"{base}/{info['secret']}/999/sr.y4m")[0] == 404
    assert _get(f"{base}/{info['secret']}/{media}/other.y4m")[0] == 404
    for bad in (f"/{info['secret']}/../../../etc/passwd", f"/{info['secret']}/{media}/../../etc/passwd",
                f"/{info['secret']}{small_clip}", "/etc/passwd"):
        assert _get(base + bad)[0] in (403, 404), bad
    assert _get(url, {"Range": f"bytes={lay.size + 10}-"})[0] == 416


def test_server_reports_bad_input(server, tmp_path, small_clip) -> None:
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00" * 100)
    r = server.request({"op": "register", "source": str(small_clip), "weights": str(bad)})
    assert not r["ok"] and "broken.safetensors" in r["error"]
    r = server.request({"op": "register", "source": str(tmp_path / "missing.mkv")})
    assert not r["ok"] and "no such file" in r["error"]


def test_server_exits_and_cleans_up_when_its_parent_is_killed(tmp_path) -> None:
    """kill -9 of the parent (mpv) -> the server exits (parent-death signal) and removes its control dir."""
    ready = tmp_path / "ready.json"
    parent_code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-m', 'mpv_srunet.mpv.server', '--ready-file', {str(ready)!r}])\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], env=srunet_env())
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert info["pid"] in server_pids()
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while info["pid"] in server_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert info["pid"] not in server_pids()
        assert not Path(info["control_dir"]).exists()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)


def test_backend_failure_mid_stream_serves_bicubic_and_reports(small_clip, tiny_weights) -> None:
    """The backend dies after frame 0 (its session is closed): frames keep coming (bicubic), the
    stats say why, which is what the Lua script and `play` turn into 'playing the original'."""
    from mpv_srunet.mpv.media import UpscalerPool, open_media

    pool = UpscalerPool()
    media, _ = open_media("1", str(small_clip), pool, weights=str(tiny_weights), backend="onnxruntime")
    try:
        store = media.store("sr")
        first = store.get(0)
        assert not media.stats_dict()["fallback"]
        media.upscaler.close()  # a real failure: the runtime session is gone
        later = store.get(6)
        s = media.stats_dict()
        assert s["fallback"] and s["error"], s
        assert len(later) == len(first) == media.layout.record_bytes
        y = np.frombuffer(later[len(FRAME_TAG):len(FRAME_TAG) + 320 * 192], np.uint8)
        assert y.std() > 5  # a real (bicubic) picture, not a blank frame
    finally:
        media.close()


def test_closed_media_starts_no_render_thread(small_clip, tiny_weights) -> None:
    """A read racing close() (mpv re-reads after its stream was cancelled) used to make a fresh store
    whose render thread nobody joined; `play` could then exit with it inside onnxruntime and abort
    ("terminate called without an active exception"). After close, no store and no thread start."""
    import threading

    from mpv_srunet.mpv.media import UpscalerPool, open_media
    from mpv_srunet.mpv.render import Cancelled

    pool = UpscalerPool()
    media, _ = open_media("1", str(small_clip), pool, weights=str(tiny_weights), backend="onnxruntime")
    assert len(media.store("sr").get(0)) == media.layout.record_bytes
    assert media.close(wait=60)
    before = {t.ident for t in threading.enumerate() if t.name == "srunet-render"}
    for variant in ("sr", "compare"):
        with pytest.raises(Cancelled):
            media.store(variant)
        with pytest.raises(Cancelled):
            next(iter(media.chunks(variant, len(media.layout.header), None, lambda: False)))
    assert {t.ident for t in threading.enumerate() if t.name == "srunet-render"} <= before
    assert media.close(wait=0)
