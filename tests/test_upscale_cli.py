"""`mpv-srunet upscale` end to end on real H.265 files, and every bad input of the brief."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import load_photo_rgb, make_h265_clip
from mpv_srunet.cli import main
from mpv_srunet.video import MAX_DECODE_DELAY_S, mux


def cli(*args: str) -> int:
    return main(["upscale", *map(str, args), "--no-progress"])


def probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(video=0))
        return {
            "size": (v.codec_context.width, v.codec_context.height),
            "codec": v.codec_context.name,
            "pix_fmt": v.codec_context.pix_fmt,
            "frames": len(frames),
            "pts": [f.time for f in frames],
            "audio": [s.codec_context.name for s in c.streams.audio],
            "first": frames[0],
        }


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("mpv-srunet: error:"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_h265_clip_to_h265_keeps_frames_audio_timestamps(h265_small_clip, tiny_weights, tmp_path):
    out = tmp_path / "up.mkv"
    assert cli(h265_small_clip, out, "--weights", tiny_weights, "--preset", "ultrafast") == 0
    src, dst = probe(h265_small_clip), probe(out)
    assert dst["size"] == (2 * src["size"][0], 2 * src["size"][1])
    assert dst["codec"] == "hevc" and dst["frames"] == src["frames"]
    assert dst["audio"] == ["aac"]
    assert np.allclose(dst["pts"], src["pts"], atol=1e-3)
    assert (dst["first"].colorspace, dst["first"].color_range) == (1, 1)  # BT.709 limited, as the source
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_frames_equal_the_python_api(h265_small_clip, tiny_weights, tmp_path):
    """ffv1 output == Upscaler on the decoded frames (colour conversion included)."""
    from mpv_srunet import Upscaler

    out = tmp_path / "up.mkv"
    assert cli(h265_small_clip, out, "--weights", tiny_weights, "--codec", "ffv1", "--backend", "torch-cpu",
               "--precision", "fp32", "--batch", "3") == 0
    up = Upscaler(tiny_weights, backend="torch-cpu", precision="fp32")
    with av.open(str(h265_small_clip)) as a, av.open(str(out)) as b:
        for fa, fb in zip(a.decode(video=0), b.decode(video=0)):
            ref = up.upscale(fa).to_ndarray(format="rgb24")
            got = fb.to_ndarray(format="rgb24")
            assert np.abs(ref.astype(int) - got.astype(int)).max() <= 2


@pytest.mark.gpu
def test_gpu_frame_path_feeds_the_encoder(h265_small_clip, tmp_path):
    """torch-cuda: decoded planes -> GPU -> encoder, no float RGB on the CPU. The y4m output is
    the frame path's planes byte for byte; an x265 file comes out whole, with the source's colour."""
    from mpv_srunet import Upscaler

    assert cli(h265_small_clip, tmp_path / "o.y4m", "--backend", "torch-cuda") == 0
    up = Upscaler(backend="torch-cuda")
    try:
        with av.open(str(h265_small_clip)) as a, av.open(str(tmp_path / "o.y4m")) as b:
            pairs = list(zip(a.decode(video=0), b.decode(video=0)))
            assert len(pairs) == 12
            for fa, fb in pairs:
                assert up.has_frame_path(fa)
                assert np.array_equal(fb.to_ndarray(), up.upscale_yuv420(fa))
    finally:
        up.close()
    assert cli(h265_small_clip, tmp_path / "o.mkv", "--backend", "torch-cuda") == 0
    p = probe(tmp_path / "o.mkv")
    assert (p["size"], p["frames"], p["pix_fmt"]) == ((320, 192), 12, "yuv420p")
    assert (p["first"].colorspace, p["first"].color_range) == (1, 1)


def test_y4m_png_sequence_and_single_image(h265_small_clip, tiny_weights, tmp_path, photo_rgb_540p):
    assert cli(h265_small_clip, tmp_path / "o.y4m", "--weights", tiny_weights) == 0
    assert probe(tmp_path / "o.y4m")["size"] == (320, 192)
    seq = tmp_path / "seq"
    seq.mkdir()
    assert cli(h265_small_clip, seq / "f%04d.png", "--weights", tiny_weights) == 0
    files = sorted(seq.iterdir())
    assert len(files) == probe(h265_small_clip)["frames"] and files[0].name == "f0001.png"
    png_in = tmp_path / "in.png"
    av.VideoFrame.from_ndarray(np.ascontiguousarray(photo_rgb_540p[:50, :70]), format="rgb24").to_image().save(png_in)
    assert cli(png_in, tmp_path / "out.png", "--weights", tiny_weights) == 0
    assert probe(tmp_path / "out.png")["size"] == (140, 100)
    assert cli(h265_small_clip, tmp_path / "one.png", "--weights", tiny_weights) == 2  # many frames -> one image
    assert not (tmp_path / "one.png").exists()


def _encode(path: Path, frames: list[np.ndarray], pix_fmt: str, codec: str = "libx265", fmt_in: str = "rgb24") -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=24)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = pix_fmt
        if codec == "libx265":
            s.options = {"preset": "ultrafast", "x265-params": "log-level=error"}
        for i, a in enumerate(frames):
            f = av.VideoFrame.from_ndarray(a, format=fmt_in).reformat(format=pix_fmt)
            f.pts, f.time_base = i, Fraction(1, 24)
            mux(out, s.encode(f))
        mux(out, s.encode())
    return path


@pytest.mark.parametrize("w,h", [(2, 2), (1919 // 4, 1079 // 4), (99, 37)])
def test_odd_sizes(tmp_path, tiny_weights, w, h):
    rgb = load_photo_rgb(w, h)
    src = _encode(tmp_path / "odd.mkv", [rgb, rgb], "yuv444p", codec="ffv1")
    assert cli(src, tmp_path / "o.mkv", "--weights", tiny_weights, "--codec", "ffv1") == 0
    p = probe(tmp_path / "o.mkv")
    assert p["size"] == (2 * w, 2 * h) and p["frames"] == 2


def test_two_frame_h265_clips_mux_cleanly(tmp_path, tiny_weights):
    """libx265 leaves the dts of 2-frame clips uninitialised (garbage, sometimes after the
    pts: the muxer's EINVAL); ``mux`` repairs it. Many real 2-frame encodes, then the
    product's own libx265 writer on a 2-frame clip."""
    rgb = load_photo_rgb(64, 48)
    for k in range(16):
        mp4 = _encode(tmp_path / f"two{k}.mp4", [rgb, rgb[:, ::-1].copy()], "yuv420p")  # MP4 keeps the dts
        with av.open(str(mp4)) as c:
            stamps = [(p.pts * p.time_base, p.dts * p.time_base) for p in c.demux(video=0) if p.size]
        assert [t for t, _ in stamps] == [0, Fraction(1, 24)], stamps
        # mux's rule: never a dts after its pts, never a decode delay beyond MAX_DECODE_DELAY_S
        # (garbage can land inside that bound: once seen, 83 frames; the file still plays)
        assert all(0 <= t - d <= MAX_DECODE_DELAY_S for t, d in stamps), stamps
        path = _encode(tmp_path / f"two{k}.mkv", [rgb, rgb[:, ::-1].copy()], "yuv420p")
        with av.open(str(path)) as c:
            assert len(list(c.decode(video=0))) == 2
    for k in range(4):
        out = tmp_path / f"up{k}.mkv"
        assert cli(path, out, "--weights", tiny_weights, "--preset", "ultrafast") == 0
        assert probe(out)["frames"] == 2


def test_ten_bit_and_grayscale(tmp_path, tiny_weights):
    rgb = load_photo_rgb(64, 48)
    src10 = _encode(tmp_path / "ten.mkv", [rgb] * 3, "yuv420p10le")
    assert cli(src10, tmp_path / "o10.mkv", "--weights", tiny_weights) == 0
    p = probe(tmp_path / "o10.mkv")
    assert p["pix_fmt"] == "yuv420p10le" and p["frames"] == 3
    gray = _encode(tmp_path / "gray.mkv", [rgb] * 2, "gray", codec="ffv1")
    assert cli(gray, tmp_path / "og.mkv", "--weights", tiny_weights, "--codec", "ffv1") == 0
    g = probe(tmp_path / "og.mkv")
    assert g["pix_fmt"] == "gray" and g["size"] == (128, 96)  # gray stays gray


def test_corrupt_and_truncated_h265_finish(tiny_weights, tmp_path, capsys):
    clip = make_h265_clip(tmp_path / "clip.mkv", 320, 180, frames=24)
    data = bytearray(clip.read_bytes())
    rng = np.random.default_rng(3)
    for j in rng.integers(4000, len(data) - 100, 20):
        data[j: j + 40] = bytes(40)
    bad = tmp_path / "corrupt.mkv"
    bad.write_bytes(bytes(data))
    assert cli(bad, tmp_path / "o1.mkv", "--weights", tiny_weights, "--codec", "ffv1") == 0
    assert 0 < probe(tmp_path / "o1.mkv")["frames"] <= 24
    trunc = tmp_path / "trunc.mkv"
    trunc.write_bytes(clip.read_bytes()[: int(len(data) * 0.9)])  # the first I-frame is most of the file
    assert cli(trunc, tmp_path / "o2.mkv", "--weights", tiny_weights, "--codec", "ffv1") == 0
    assert 0 < probe(tmp_path / "o2.mkv")["frames"] < 24


def test_bad_inputs_one_line_no_output(tmp_path, tiny_weights, h265_small_clip, capsys):
    (tmp_path / "empty.mkv").write_bytes(b"")
    (tmp_path / "text.mkv").write_text("not a video\n" * 50)
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(audio_only), "w") as out:
        from conftest import _write_tone

        s = out.add_stream("aac", rate=48000)
        s.layout = "stereo"
        _write_tone(out, s, 0.5)
    big = _encode(tmp_path / "big.mkv", [np.zeros((2400, 4000), np.uint8)], "gray", codec="ffv1", fmt_in="gray")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    w = ["--weights", str(tiny_weights)]
    cases = [
        ([tmp_path / "missing.mkv", tmp_path / "o.mkv", *w], "no such file"),
        ([tmp_path / "empty.mkv", tmp_path / "o.mkv", *w], "empty file"),
        ([tmp_path / "text.mkv", tmp_path / "o.mkv", *w], "cannot open"),
        ([audio_only, tmp_path / "o.mkv", *w], "no video stream"),
        ([big, tmp_path / "o.mkv", *w, "--codec", "ffv1"], "larger than"),
        ([h265_small_clip, tmp_path / "o.mkv", "--weights", tmp_path / "text.mkv"], "unknown weights extension"),
        ([h265_small_clip, tmp_path / "o.mkv", *w, "--backend", "gpu9"], "unknown backend"),
        ([h265_small_clip, h265_small_clip, *w], "same file as the input"),
        ([h265_small_clip, tmp_path / "nodir" / "o.mkv", *w], "does not exist"),
        ([h265_small_clip, tmp_path / "o.xyz", *w], "unknown output type"),
        ([h265_small_clip, tmp_path / "o.mkv", *w, "--codec", "nosuchcodec"], "codec"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append(([h265_small_clip, ro / "o.mkv", *w], "not writable"))
    for args, msg in cases:
        assert cli(*args) == 2, args
        assert msg in one_line_error(capsys), (args, msg)
        assert not (tmp_path / "o.mkv").exists()
    ro.chmod(0o700)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers


def test_ctrl_c_leaves_no_partial_output(tmp_path, random_weights, h265_540p_clip):
    out = tmp_path / "o.mkv"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mpv_srunet.cli", "upscale", str(h265_540p_clip), str(out),
                             "--weights", str(random_weights), "--no-progress"],
                            stderr=subprocess.PIPE, text=True, env=env,
                            # a runner started in the background hands SIGINT down ignored (POSIX);
                            # what is tested here is a user's Ctrl-C
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".") for p in tmp_path.iterdir()):
        time.sleep(0.2)  # wait until it is writing its temp output
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_http_input(h265_small_clip, tiny_weights, tmp_path):
    """An http:// URL (a loopback server with Range support, like any web server) upscales like a file."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(h265_small_clip.parent))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/{h265_small_clip.name}"
        assert cli(url, tmp_path / "o.mkv", "--weights", tiny_weights, "--codec", "ffv1") == 0
        assert probe(tmp_path / "o.mkv")["frames"] == probe(h265_small_clip)["frames"]
        assert cli(url + ".missing", tmp_path / "o2.mkv", "--weights", tiny_weights) == 2
    finally:
        srv.shutdown()
        srv.server_close()
