"""PSNR / SSIM / flicker / BD-rate against independent references and known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpv_srunet.evaluation.bdrate import bd_rate
from mpv_srunet.metrics.image import frame_scores, psnr, rgb_to_y, ssim
from mpv_srunet.metrics.temporal import flicker_series


def _distorted(rgb: np.ndarray, seed: int = 0, sigma: float = 12.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rgb + rng.normal(0, sigma, rgb.shape), 0, 255).astype(np.uint8)


def test_ssim_matches_scikit_image_with_the_stated_settings(photo_rgb_540p: np.ndarray) -> None:
    from skimage.metrics import structural_similarity

    ref = photo_rgb_540p[:180, :320]
    out = _distorted(ref)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    sk_rgb = structural_similarity(ref, out, channel_axis=-1, **kw)
    sk_y = structural_similarity(rgb_to_y(ref), rgb_to_y(out), **kw)
    assert ssim(ref, out) == pytest.approx(sk_rgb, abs=1e-4)
    assert ssim(rgb_to_y(ref), rgb_to_y(out)) == pytest.approx(sk_y, abs=1e-4)
    assert 0.3 < sk_rgb < 0.95  # a real, non-trivial distortion


def test_psnr_matches_scikit_image_and_a_known_value(photo_rgb_540p: np.ndarray) -> None:
    from skimage.metrics import peak_signal_noise_ratio

    ref = photo_rgb_540p[:144, :256]
    out = _distorted(ref, 1)
    assert psnr(ref, out) == pytest.approx(peak_signal_noise_ratio(ref, out, data_range=255), abs=1e-9)
    one_level = np.clip(ref.astype(int) + 1, 0, 255).astype(np.uint8)
    one_level[ref == 255] = 254  # every pixel off by exactly 1 -> MSE 1
    assert psnr(ref, one_level) == pytest.approx(20 * math.log10(255), abs=1e-9)


def test_identical_frames_get_perfect_scores(photo_rgb_540p: np.ndarray) -> None:
    f = photo_rgb_540p[:144, :256]
    s = frame_scores(f, f)
    assert s["psnr_y"] == math.inf and s["psnr_rgb"] == math.inf
    assert s["ssim_y"] == pytest.approx(1.0, abs=1e-12) and s["ssim_rgb"] == pytest.approx(1.0, abs=1e-12)
    ys = [rgb_to_y(photo_rgb_540p[:, i: i + 256]) for i in range(0, 12, 4)]
    assert flicker_series(ys, ys) == [0.0, 0.0]


def test_luma_is_what_swscale_stores_for_bt709_limited(photo_rgb_540p: np.ndarray) -> None:
    import av

    rgb = np.ascontiguousarray(photo_rgb_540p[:144, :256])
    f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format="yuv444p", src_colorspace="itu709", dst_colorspace="itu709", src_color_range="JPEG", dst_color_range="MPEG")
    plane = f.planes[0]
    y_sws = np.frombuffer(plane, np.uint8).reshape(f.height, plane.line_size)[:, : f.width]
    ours = rgb_to_y(rgb)
    assert np.abs(ours.astype(int) - y_sws).max() <= 1  # rounding only
    assert 16 <= ours.min() and ours.max() <= 235


def test_flicker_ignores_true_motion_and_sees_added_changes(photo_rgb_540p: np.ndarray) -> None:
    ref = [rgb_to_y(photo_rgb_540p[:, 2 * i: 2 * i + 256][:144]) for i in range(4)]
    shimmer = [rgb_to_y(_distorted(photo_rgb_540p[:, 2 * i: 2 * i + 256][:144], seed=i, sigma=6)) for i in range(4)]
    steady = [np.clip(y.astype(int) + 3, 0, 255).astype(np.uint8) for y in ref]  # constant error: no flicker
    assert max(flicker_series(ref, steady)) < 0.05
    assert min(flicker_series(ref, shimmer)) > 2.0
    with pytest.raises(ValueError, match="frame counts differ"):
        flicker_series(ref, ref[:3])


def test_bd_rate_known_answers() -> None:
    rates = [100.0, 200.0, 400.0, 800.0]
    q = [30.0, 34.0, 37.0, 39.0]
    assert bd_rate(rates, q, [r * 0.8 for r in rates], q) == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate(rates, q, rates, q) == pytest.approx(0.0, abs=1e-9)
    # lower-is-better metric (LPIPS): same curve shifted to 1.25x the bitrate
    lp = [0.4, 0.3, 0.22, 0.18]
    assert bd_rate(rates, lp, [r * 1.25 for r in rates], lp, higher_is_better=False) == pytest.approx(25.0, abs=1e-9)
    assert bd_rate(rates, q, rates, [50, 51, 52, 53]) is None  # no overlap in quality
