"""VMAF through the imageio-ffmpeg static ffmpeg: our Y-plane path must give libvmaf's own score."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from mpv_srunet.metrics import MetricUnavailable
from mpv_srunet.metrics.vmaf import ffmpeg_with_vmaf, vmaf_available, vmaf_files, vmaf_y

W, H, N = 256, 144, 6


def _encode(path: Path, frames: list[np.ndarray], codec: str, options: dict | None) -> Path:
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=24)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.colorspace, s.codec_context.color_range = 1, 1
        if options:
            s.options = options
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="itu709", dst_color_range="MPEG")
            f.pts, f.time_base = i, Fraction(1, 24)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def _y_planes(path: Path) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            p = f.planes[0]
            out.append(np.frombuffer(p, np.uint8).reshape(f.height, p.line_size)[:, : f.width].copy())
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory, photo_rgb_540p: np.ndarray) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("vmaf")
    frames = [np.ascontiguousarray(photo_rgb_540p[:H, 3 * i: 3 * i + W]) for i in range(N)]
    ref = _encode(d / "ref.mkv", frames, "ffv1", None)  # lossless yuv420p
    dist = _encode(d / "dist.mkv", frames, "libx265", {"crf": "35", "preset": "ultrafast", "x265-params": "log-level=error"})
    return ref, dist


def test_y_plane_path_gives_libvmafs_own_score(pair: tuple[Path, Path]) -> None:
    ref, dist = pair
    own = vmaf_files(dist, ref)  # ffmpeg decodes both files itself: no conversion anywhere
    ours = vmaf_y(_y_planes(ref), _y_planes(dist))
    assert ours.mean == pytest.approx(own, abs=1e-3)
    assert len(ours.per_frame) == N
    assert 20 < own < 95  # a real, visible distortion


def test_identical_input_scores_top_and_beats_distorted(pair: tuple[Path, Path]) -> None:
    ref, dist = pair
    y = _y_planes(ref)
    same = vmaf_y(y, y).mean
    assert same > 97.0
    assert same > vmaf_y(y, _y_planes(dist)).mean


def test_ffmpeg_without_libvmaf_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    debian = shutil.which("ffmpeg", path="/usr/bin")
    if debian is None:
        pytest.skip("no /usr/bin/ffmpeg (Debian's build, without libvmaf) to check against")
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", debian)
    ok, reason = vmaf_available()
    assert not ok and "without libvmaf" in reason
    with pytest.raises(MetricUnavailable):
        ffmpeg_with_vmaf()


def test_mismatched_frame_counts_are_rejected(pair: tuple[Path, Path]) -> None:
    y = _y_planes(pair[0])
    with pytest.raises(ValueError, match="equal, non-zero frame counts"):
        vmaf_y(y, y[:-1])
