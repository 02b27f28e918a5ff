"""Grid share: how much of what an upscaler adds to bicubic sits on the period-2 frequencies.

A 2x network whose PixelShuffle sub-pixels drift apart paints a 2-pixel stripe or
checkerboard texture. In the 2-D spectrum such a texture lies on the Nyquist lines:
row H/2 (vertical period 2) and column W/2 (horizontal period 2). For an output
``sr`` of a low-resolution frame ``lr``:

    r          = sr - bicubic_x2(lr)           (what the upscaler added to bicubic)
    grid_share = E(row H/2  U  column W/2) / E(all bins but DC)   of |FFT2(r)|^2,

per RGB channel, then the mean over channels (a channel with no residual energy
counts 0). DC is left out of the denominator: a flat brightness offset is not texture.
White noise scores (H + W - 1) / (H * W - 1), 0.0014 at 1080p (0.0029 at 540p); a smooth residual
scores less (warm-start SR-UNet ~0.001), a 2-pixel checkerboard close to 1. Lower
is better; bicubic itself scores exactly 0.

Inputs: ``sr`` HxWx3 and ``lr`` (H/2)x(W/2)x3, both uint8 (0..255) or both float in
[0, 1]. ``bicubic_x2`` is SR-UNet's own residual base (torch bicubic,
``align_corners=False``, in [-1, 1], clamped); for uint8 inputs it is rounded to uint8
like every upscaler's output, so a bicubic candidate's frame gives a zero residual.
"""

from __future__ import annotations

import numpy as np

SETTING = ("share of |FFT2(out - bicubic_x2(in))|^2 on row H/2 and column W/2 (period 2), DC excluded, "
           "mean over RGB channels (lower is better; bicubic 0, white noise (H+W-1)/(HW-1))")


def bicubic_to(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 or float [0, 1] -> ``size`` (W, H) with SR-UNet's bicubic residual base.

    uint8 in, uint8 out (rounded); float in, float32 out.
    """
    import torch
    import torch.nn.functional as F

    is_u8 = img.dtype == np.uint8
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    x = x / 127.5 - 1.0 if is_u8 else x * 2.0 - 1.0
    with torch.no_grad():
        y = F.interpolate(x, size=(size[1], size[0]), mode="bicubic", align_corners=False).clamp_(-1, 1)
    y = y[0].permute(1, 2, 0)
    if is_u8:
        return ((y + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8).numpy()
    return ((y + 1.0) * 0.5).numpy()


def white_noise_share(h: int, w: int) -> float:
    """The grid share of a white-noise residual on an HxW output: (H + W - 1) / (H * W - 1)."""
    return (h + w - 1) / (h * w - 1)


#: how far a trained model's grid share may rise over its reference's (see :func:`grid_limit`)
GRID_RATIO = 1.5


def grid_limit(base_grid: float, noise_floor: float, ratio: float = GRID_RATIO) -> float:
    """The most grid share a trained model may have and not count as painting the checkerboard:
    ``ratio`` times its reference's (``base_grid``: the weights a fine-tune started from, or the
    texture-free fidelity endpoint), or times white noise's at the frame size
    (``noise_floor``, :func:`white_noise_share`) when that is higher (a smooth reference's share
    is below the noise floor). Used by ``finetune``'s sidecar rule and by the default-strength
    pick of ``train export --alpha auto`` / ``train settle``."""
    return ratio * max(base_grid, noise_floor)


def grid_share(sr: np.ndarray, lr: np.ndarray) -> float:
    """Period-2 share of the spectral energy ``sr`` adds to bicubic (see module doc)."""
    if sr.ndim != 3 or lr.ndim != 3 or sr.shape[2] != 3 or lr.shape[2] != 3:
        raise ValueError(f"grid_share needs HxWx3 images, got {sr.shape} and {lr.shape}")
    h, w = sr.shape[:2]
    if (h, w) != (2 * lr.shape[0], 2 * lr.shape[1]):
        raise ValueError(f"grid_share: output {w}x{h} is not 2x the input {lr.shape[1]}x{lr.shape[0]}")
    if (sr.dtype == np.uint8) != (lr.dtype == np.uint8):
        raise ValueError(f"grid_share: mixed dtypes {sr.dtype} and {lr.dtype}; pass both uint8 or both float")
    scale = 255.0 if sr.dtype == np.uint8 else 1.0
    base = bicubic_to(lr, (w, h))
    resid = (sr.astype(np.float64) - base.astype(np.float64)) / scale
    power = np.abs(np.fft.fft2(resid, axes=(0, 1))) ** 2  # HxWx3
    total = power.sum(axis=(0, 1)) - power[0, 0]
    lines = power[h // 2].sum(axis=0) + power[:, w // 2].sum(axis=0) - power[h // 2, w // 2]
    shares = np.divide(lines, total, out=np.zeros(3), where=total > 0)
    return float(shares.mean())
