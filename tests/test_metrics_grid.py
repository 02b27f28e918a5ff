"""Grid share (period-2 energy of the residual over bicubic): zero for bicubic, large for a checkerboard."""

from __future__ import annotations

import numpy as np
import pytest

from mpv_srunet.evaluation.candidates import bicubic_x2
from mpv_srunet.metrics.grid import bicubic_to, grid_share


@pytest.fixture(scope="module")
def lr(photo_rgb_540p: np.ndarray) -> np.ndarray:
    return photo_rgb_540p[:128, :192]


def test_bicubic_scores_zero_uint8_and_float(lr: np.ndarray) -> None:
    assert grid_share(bicubic_x2(lr), lr) == 0.0  # the eval bicubic candidate is this bicubic
    lf = lr.astype(np.float32) / 255
    assert grid_share(bicubic_to(lf, (384, 256)), lf) == 0.0


def test_checkerboard_on_top_of_bicubic_is_almost_all_grid(lr: np.ndarray) -> None:
    sr = bicubic_x2(lr).astype(np.int16)
    yy, xx = np.mgrid[:256, :384]
    board = np.where((yy + xx) % 2 == 0, 6, -6)[..., None]  # period 2 both ways: the (H/2, W/2) bin
    stripes = np.where(xx % 2 == 0, 6, -6)[..., None]  # period 2 horizontally: column W/2
    for tex in (board, stripes):
        out = np.clip(sr + tex, 0, 255).astype(np.uint8)
        assert grid_share(out, lr) > 0.9


def test_white_noise_scores_its_share_of_bins_and_smooth_detail_less(lr: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    base = bicubic_x2(lr).astype(np.float64) / 255
    noisy = base + rng.normal(0, 0.02, base.shape)
    h, w = base.shape[:2]
    lf = lr.astype(np.float64) / 255
    assert grid_share(noisy, lf) == pytest.approx((h + w - 1) / (h * w - 1), rel=0.2)
    # a smooth added detail (an unsharp mask at a 5-pixel scale) has almost no period-2 energy
    from PIL import Image, ImageFilter

    sharp = np.asarray(Image.fromarray(bicubic_x2(lr)).filter(ImageFilter.UnsharpMask(5, 80, 0)))
    assert grid_share(sharp, lr) < (h + w - 1) / (h * w - 1)


def test_bad_shapes_and_mixed_dtypes_are_refused(lr: np.ndarray) -> None:
    with pytest.raises(ValueError, match="not 2x"):
        grid_share(bicubic_x2(lr)[:-2], lr)
    with pytest.raises(ValueError, match="mixed dtypes"):
        grid_share(bicubic_x2(lr), lr.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="HxWx3"):
        grid_share(bicubic_x2(lr)[..., 0], lr[..., 0])
