"""Full-reference picture metrics: PSNR and SSIM, on luma (Y) and on RGB.

Settings (stated in every eval output, see :data:`SETTINGS`):

* **Y** is BT.709 limited-range luma (16..235) rounded to 8 bits - the plane an
  encoder would store for HD video, and exactly the plane fed to VMAF. Peak 255
  for PSNR-Y, as in the usual MATLAB-style ``rgb2ycbcr`` PSNR-Y.
* **PSNR** is per frame, from the MSE over all pixels (and all channels for RGB);
  identical frames give ``inf``. Pooled over frames by the mean of per-frame dB.
* **SSIM** (Wang et al. 2004) uses a Gaussian window 11x11, sigma 1.5, K1=0.01,
  K2=0.03, data range 255, valid (unpadded) filtering, mean over the map; RGB is
  the mean of the three channel SSIMs. Computed with ``pytorch-msssim`` and checked
  against scikit-image ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255)`` in the tests.
"""

from __future__ import annotations

import math

import numpy as np

#: BT.709 luma weights (Kr, Kg, Kb).
BT709 = (0.2126, 0.7152, 0.0722)

SETTINGS: dict[str, str] = {
    "Y": "BT.709 limited-range luma (16-235), 8-bit, from RGB",
    "PSNR": "per frame, peak 255, inf for identical frames; pooled by mean of dB (inf frames left out unless all are)",
    "SSIM": "Gaussian window 11x11 sigma 1.5, K1=0.01 K2=0.03, data range 255, valid filtering; RGB = mean over channels (pytorch-msssim)",
}


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """uint8 ...xHxWx3 RGB (full range) -> uint8 ...xHxW BT.709 limited-range luma."""
    kr, kg, kb = BT709
    f = rgb.astype(np.float32)
    y = 16.0 + (219.0 / 255.0) * (kr * f[..., 0] + kg * f[..., 1] + kb * f[..., 2])
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB between two same-shape arrays (any channels); ``inf`` when equal."""
    _same_shape(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of HxW (one channel) or HxWx3 (mean over channels) uint8 images; see module doc."""
    import torch
    from pytorch_msssim import ssim as _ssim

    _same_shape(a, b)
    if min(a.shape[0], a.shape[1]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[1]}x{a.shape[0]}")
    ta, tb = (_to_nchw(x, torch) for x in (a, b))
    with torch.no_grad():
        v = _ssim(ta, tb, data_range=255.0, size_average=False, win_size=11, win_sigma=1.5, K=(0.01, 0.03))
    return float(v[0])


def frame_scores(ref_rgb: np.ndarray, out_rgb: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM on Y and RGB for one uint8 HxWx3 frame pair."""
    ry, oy = rgb_to_y(ref_rgb), rgb_to_y(out_rgb)
    return {
        "psnr_y": psnr(ry, oy),
        "psnr_rgb": psnr(ref_rgb, out_rgb),
        "ssim_y": ssim(ry, oy),
        "ssim_rgb": ssim(ref_rgb, out_rgb),
    }


def _to_nchw(x: np.ndarray, torch):  # noqa: ANN001, ANN202 - torch passed in to keep import lazy
    # float32: within 1e-6 of float64 on 1080p frames and ~5x faster on CPU.
    t = torch.tensor(np.asarray(x), dtype=torch.float32)
    return t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
