"""Validation metrics used while training and for the model card.

Metrics are computed the way a viewer sees the result: the model output is
rounded to uint8 RGB first, then PSNR and SSIM are measured on luma with
:mod:`mpv_srunet.metrics.image` (BT.709 limited-range Y, the settings of
``mpv-srunet eval``) and LPIPS-alex on RGB. PSNR is the mean of per-image dB;
images reproduced exactly (``inf``) are left out of that mean. The H.265 + bicubic baseline is the same network input
upscaled with torch's bicubic (what the model's own residual path computes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics.grid import grid_share
from .data import PairStore

def to_tensor(rgb: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N)HWC RGB -> float NCHW in [-1, 1]."""
    t = torch.from_numpy(np.array(rgb, dtype=np.uint8))  # a copy: memory-mapped pairs are read-only
    if t.ndim == 3:
        t = t[None]
    return t.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] -> uint8 NHWC RGB (rounded, as a player would display it)."""
    y = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return y.permute(0, 2, 3, 1).cpu().numpy()


def psnr_ssim_y(out_u8: np.ndarray, gt_u8: np.ndarray) -> tuple[float, float]:
    """(PSNR-Y dB, SSIM-Y) of one image pair (uint8 HWC RGB), as ``mpv-srunet eval`` measures them."""
    from ..metrics.image import psnr, rgb_to_y, ssim

    a, b = rgb_to_y(out_u8), rgb_to_y(gt_u8)
    return psnr(a, b), ssim(a, b)


def bicubic_up(x: torch.Tensor, scale: int = 2) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)


@dataclass
class ValResult:
    """Mean metrics over the validation pairs, for the model and the bicubic baseline."""

    n: int
    psnr_y: float
    ssim_y: float
    lpips_alex: float | None
    bicubic_psnr_y: float
    bicubic_ssim_y: float
    bicubic_lpips_alex: float | None
    grid: float = float("nan")  # period-2 share of the residual over bicubic (mpv_srunet.metrics.grid)
    per_image: list[dict[str, float]] = field(default_factory=list, repr=False)

    def as_dict(self, per_image: bool = False) -> dict[str, object]:
        d = dict(self.__dict__)
        if not per_image:
            d.pop("per_image")
        return d


def centre_crop_pair(lr: np.ndarray, gt: np.ndarray, crop: int, scale: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Centre crop of at most crop x crop input pixels (multiple of 8) and its GT."""
    if crop <= 0:
        return lr, gt
    h, w = min(lr.shape[0], crop), min(lr.shape[1], crop)
    h, w = h - h % 8, w - w % 8
    y0, x0 = (lr.shape[0] - h) // 2 // 8 * 8, (lr.shape[1] - w) // 2 // 8 * 8
    return lr[y0 : y0 + h, x0 : x0 + w], gt[y0 * scale : (y0 + h) * scale, x0 * scale : (x0 + w) * scale]


@torch.no_grad()
def evaluate(model: torch.nn.Module, store: PairStore, *, crop: int = 0, lpips_alex: torch.nn.Module | None = None) -> ValResult:
    """Mean PSNR-Y / SSIM-Y (/ LPIPS-alex) over ``store``: model vs H.265 + bicubic, and the
    model's grid share (period-2 texture, :func:`mpv_srunet.metrics.grid.grid_share`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows, grids = [], []
    for i in range(len(store)):
        lr, gt = centre_crop_pair(*store.pair(i), crop)
        x = to_tensor(lr, device)
        outs = (to_uint8(model(x))[0], to_uint8(bicubic_up(x))[0])
        row = [m for o in outs for m in psnr_ssim_y(o, gt)]
        if lpips_alex is not None:
            g = to_tensor(gt)
            row += [float(lpips_alex(to_tensor(o), g)[0]) for o in outs]
        grids.append(grid_share(outs[0], np.asarray(lr)))
        rows.append(row)
    model.train(was_training)
    arr = np.asarray(rows, dtype=np.float64)
    arr[~np.isfinite(arr)] = np.nan
    m = np.nanmean(arr, axis=0) if rows else np.full(6, np.nan)
    lp = (float(m[4]), float(m[5])) if lpips_alex is not None and rows else (None, None)
    names = ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y", "lpips_alex", "bicubic_lpips_alex")
    per = [{"source": Path(store.source(i)).name, **dict(zip(names, r)), "grid": g} for i, (r, g) in enumerate(zip(rows, grids))]
    grid = float(np.mean(grids)) if grids else float("nan")
    return ValResult(len(rows), float(m[0]), float(m[1]), lp[0], float(m[2]), float(m[3]), lp[1], grid, per)
