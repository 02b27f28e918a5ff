"""Sizes peers fail on: 1920x1040, 1920x816, 720x480 at SAR 8:9 / 32:27, 1440x1080 at SAR 4:3.

The frame server's y4m carries the source's sample aspect ratio (the header's ``A`` field), so
mpv shows the upscaled video with the original's shape; ``upscale`` keeps it in the output
(MP4: ``pasp``). Real mpv plays small versions of these shapes through the Lua script; the true
sizes are checked on the y4m header FFmpeg reads back (no model run at 4K on a CPU).
"""

from __future__ import annotations

import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import load_photo_rgb
from test_mpv_helpers import MPV, mpv_cmd, run_mpv, srunet_env

from mpv_srunet.mpv import script_dir
from mpv_srunet.mpv.source import probe
from mpv_srunet.mpv.y4m import FRAME_TAG, Y4MLayout

#: (name, width, height, sample aspect ratio): the true sizes
TRUE_SIZES = [
    ("1920x1040", 1920, 1040, Fraction(1)),
    ("1920x816", 1920, 816, Fraction(1)),
    ("720x480 8:9", 720, 480, Fraction(8, 9)),
    ("720x480 32:27", 720, 480, Fraction(32, 27)),
    ("1440x1080 4:3", 1440, 1080, Fraction(4, 3)),
]
#: small versions (same width:height ratio, to the pixel where it divides; same SAR)
SMALL = [
    ("1920x1040/8", 240, 130, Fraction(1)),
    ("1920x816/8", 240, 102, Fraction(1)),
    ("720x480/4 8:9", 180, 120, Fraction(8, 9)),
    ("720x480/4 32:27", 180, 120, Fraction(32, 27)),
    ("1440x1080/6 4:3", 240, 180, Fraction(4, 3)),
]


def make_sar_clip(path: Path, width: int, height: int, sar: Fraction, frames: int = 4) -> Path:
    """A real H.265 MP4 (a pan over a real photo) whose stream says ``sar``."""
    import av

    from mpv_srunet.video import mux

    src = load_photo_rgb(width + 2 * frames + 2, height)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx265", rate=24)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.sample_aspect_ratio = sar
        vs.options = {"crf": "23", "preset": "ultrafast", "x265-params": "log-level=error"}
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(src[:, 2 * i: 2 * i + width]), format="rgb24")
            f = f.reformat(format="yuv420p", dst_colorspace="itu709", dst_color_range="MPEG")
            f.pts = i
            f.time_base = Fraction(1, 24)
            mux(out, vs.encode(f))
        mux(out, vs.encode())
    return path


@pytest.fixture(scope="module")
def small_clips(tmp_path_factory) -> list[tuple[str, Path, int, int, Fraction]]:
    d = tmp_path_factory.mktemp("sizes")
    return [(name, make_sar_clip(d / f"clip{i}.mp4", w, h, sar), w, h, sar) for i, (name, w, h, sar) in enumerate(SMALL)]


@pytest.mark.parametrize("name,w,h,sar", TRUE_SIZES, ids=[t[0] for t in TRUE_SIZES])
def test_y4m_header_at_true_size_reads_back_in_ffmpeg(tmp_path, name, w, h, sar):
    import av

    lay = Y4MLayout(2 * w, 2 * h, Fraction(24000, 1001), frames=1, sar=sar)
    assert f"A{sar.numerator}:{sar.denominator} ".encode() in lay.header
    path = tmp_path / "one.y4m"
    with open(path, "wb") as f:
        f.write(lay.header + FRAME_TAG)
        f.write(bytes(lay.frame_bytes))
    assert path.stat().st_size == lay.size
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (2 * w, 2 * h)
        assert Fraction(v.sample_aspect_ratio or 1) == sar
        frame = next(c.decode(v))
        assert (frame.width, frame.height) == (2 * w, 2 * h)


def test_probe_reads_the_sample_aspect_ratio(small_clips):
    for name, clip, w, h, sar in small_clips:
        info = probe(str(clip))
        assert (info.width, info.height, info.sar) == (w, h, sar), name


_VP = """
mp.observe_property("video-params", "native", function(_, p)
    if p and p.dw then
        print(("SRTEST %s w=%d h=%d dw=%d dh=%d"):format(mp.get_property("filename"), p.w, p.h, p.dw, p.dh))
        mp.command("playlist-next force")
    end
end)
"""


def _shapes(out: str) -> dict[str, tuple[int, int, int, int]]:
    found = {}
    for m in re.finditer(r"SRTEST (\S+) w=(\d+) h=(\d+) dw=(\d+) dh=(\d+)", out):
        found.setdefault(m[1], tuple(int(m[i]) for i in range(2, 6)))
    return found


@pytest.mark.mpv
@pytest.mark.skipif(MPV is None, reason="needs the mpv binary")
@pytest.mark.timeout(600)
def test_mpv_plays_odd_sizes_upscaled_with_their_aspect(tmp_path, small_clips, tiny_weights):
    probe_script = tmp_path / "vp.lua"
    probe_script.write_text(_VP)
    clips = [str(c[1]) for c in small_clips]
    cmd = mpv_cmd(script_dir(), "--vo=null", "--ao=null", f"--script={probe_script}", *clips,
                  opts={"weights": str(tiny_weights), "backend": "torch-cpu", "policy": "wait"})
    res, left = run_mpv(cmd, timeout=540)
    assert not left, "frame servers left behind"
    shapes = _shapes(res.stdout)
    assert res.stdout.count("upscaling ") == len(clips), res.stdout[-3000:]
    for name, clip, w, h, sar in small_clips:
        got = shapes.get(clip.name)
        assert got is not None, f"{name}: no video-params\n{res.stdout[-3000:]}"
        gw, gh, dw, dh = got
        assert (gw, gh) == (2 * w, 2 * h), name  # upscaled, not the original
        assert dw / dh == pytest.approx(w * float(sar) / h, rel=0.01), f"{name}: shown {dw}x{dh}"


@pytest.mark.mpv
@pytest.mark.skipif(MPV is None, reason="needs the mpv binary")
def test_upscale_keeps_the_sample_aspect_ratio(tmp_path, small_clips, tiny_weights):
    import av

    name, clip, w, h, sar = small_clips[2]  # 720x480-like at 8:9
    out = tmp_path / "up.mp4"
    subprocess.run([sys.executable, "-m", "mpv_srunet.cli", "upscale", str(clip), str(out), "--weights", str(tiny_weights),
                    "--backend", "torch-cpu", "--codec", "libx264"], check=True, env=srunet_env(), timeout=300,
                   capture_output=True)
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height, Fraction(v.sample_aspect_ratio)) == (2 * w, 2 * h, sar)
    probe_script = tmp_path / "vp.lua"
    probe_script.write_text(_VP)
    res = subprocess.run([MPV, "--no-config", "--vo=null", "--ao=null", f"--script={probe_script}", str(out)],
                         capture_output=True, text=True, timeout=120)
    gw, gh, dw, dh = _shapes(res.stdout)[out.name]
    assert (gw, gh) == (2 * w, 2 * h) and dw / dh == pytest.approx(w * float(sar) / h, rel=0.01)
