"""The GPU frame graphs: YUV 4:2:0 planes in and out, colour conversion on the device.

Shared by the torch-CUDA backend (:class:`YUV420FrameGraph`, run as it is) and the
TensorRT engine graph (:class:`YUV420ToRGB`, folded into the exported ONNX by
:mod:`mpv_srunet.trt.graph`). Decoded planes go to the GPU as they are (1.5 bytes per
pixel for 8-bit 4:2:0) instead of float RGB (12 bytes), and only output planes come back.
Everything here is plain torch: it runs, and is tested, on the CPU too.

Colour (:class:`mpv_srunet.colour.Colour`): BT.709 / BT.601 / BT.2020 (non-constant
luminance) matrices, limited or full range, 8 or 10 bits, exactly the textbook equations
(ITU-R BT.709-6 section 3, BT.601-7 section 2.5), clamped to [0, 1]. 4:2:0 chroma is
upsampled 2x, bilinearly, at one of three sitings:

* ``left`` (default): chroma co-sited with the even luma columns and centred
  between luma rows -- the MPEG-2/H.264/HEVC default (chroma_sample_loc_type 0),
  and what swscale (so PyAV and the CPU path) assumes for yuv420p. Measured against
  PyAV on real decoded frames: mean 0.4 levels, p99 2 levels (tests/test_engine.py).
* ``center``: chroma centred in its 2x2 luma block (MPEG-1/JPEG siting).
* ``nearest``: each chroma sample covers its 2x2 block (no interpolation).

Edges are replicated in all three.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..colour import Colour, levels
from ..errors import BackendError, ConfigError
from ..model import SRUNet, reparameterize_model

PRECISIONS = ("fp16", "fp32")


def check_gpu_colour(colour: Colour) -> None:
    """ConfigError unless the GPU graphs implement ``colour``'s matrix."""
    if not colour.on_gpu:
        raise ConfigError(f"the GPU graphs implement the bt709, bt601 and bt2020 matrices, not {colour.matrix}")


class YUV420ToRGB(nn.Module):
    """Planar 4:2:0 code values -> RGB float32 NCHW in [0, 1] (textbook equations)."""

    def __init__(self, colour: Colour, bit_depth: int = 8) -> None:
        super().__init__()
        check_gpu_colour(colour)
        self.colour = colour
        kr, kb = colour.kr_kb
        kg = 1.0 - kr - kb
        self.y_off, self.y_scale, self.c_off, self.c_scale = levels(bit_depth, colour.full)
        self.rv = 2.0 * (1.0 - kr)
        self.bu = 2.0 * (1.0 - kb)
        self.gu = -2.0 * kb * (1.0 - kb) / kg
        self.gv = -2.0 * kr * (1.0 - kr) / kg

    def _upsample(self, c: torch.Tensor) -> torch.Tensor:
        if self.colour.chroma == "nearest":
            return F.interpolate(c, scale_factor=2.0, mode="nearest")
        if self.colour.chroma == "center":
            return F.interpolate(c, scale_factor=2.0, mode="bilinear", align_corners=False)
        return _up_cols_cosited(_up_rows_centred(c))

    def forward(self, y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        y = (y.float() - self.y_off) * (1.0 / self.y_scale)
        u = self._upsample((u.float() - self.c_off) * (1.0 / self.c_scale))
        v = self._upsample((v.float() - self.c_off) * (1.0 / self.c_scale))
        rgb = torch.cat([y + self.rv * v, y + self.gu * u + self.gv * v, y + self.bu * u], dim=1)
        return rgb.clamp(0.0, 1.0)


def _up_rows_centred(c: torch.Tensor) -> torch.Tensor:
    """2x rows, samples centred between output rows: 3/4 own + 1/4 neighbour, edges replicated.

    Written with slices, concat and reshape (no Resize) so that TensorRT and ONNX
    runtimes all compute exactly the same thing for any dynamic size."""
    prev = torch.cat([c[:, :, :1], c[:, :, :-1]], dim=2)
    nxt = torch.cat([c[:, :, 1:], c[:, :, -1:]], dim=2)
    even, odd = 0.75 * c + 0.25 * prev, 0.75 * c + 0.25 * nxt
    n, ch, h, w = c.shape
    return torch.stack([even, odd], dim=3).reshape(n, ch, 2 * h, w)


def _up_cols_cosited(c: torch.Tensor) -> torch.Tensor:
    """2x columns, samples co-sited with even output columns: odd columns average two neighbours."""
    nxt = torch.cat([c[:, :, :, 1:], c[:, :, :, -1:]], dim=3)
    n, ch, h, w = c.shape
    return torch.stack([c, 0.5 * (c + nxt)], dim=4).reshape(n, ch, h, 2 * w)


class RGBToYUV420(nn.Module):
    """RGB float NCHW in [0, 1] -> uint8 planes Y (N,1,H,W), U and V (N,1,H/2,W/2).

    The inverse of :class:`YUV420ToRGB` (8-bit, same textbook equations). Chroma is
    downsampled as swscale does it for RGB -> yuv420p (the renderer's float path):
    pairs of columns averaged, rows filtered [1 3 3 1]/8 (bilinear, centred between
    two luma rows), edges replicated. Measured against swscale on a real photo: luma
    within 1 level, chroma mean below 0.1 level (tests/test_engine.py)."""

    def __init__(self, colour: Colour) -> None:
        super().__init__()
        check_gpu_colour(colour)
        self.kr, self.kb = colour.kr_kb
        self.kg = 1.0 - self.kr - self.kb
        self.y_off, self.y_scale, self.c_off, self.c_scale = levels(8, colour.full)

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
        y = self.kr * r + self.kg * g + self.kb * b
        u = _down_chroma((b - y) * (1.0 / (2.0 * (1.0 - self.kb))))
        v = _down_chroma((r - y) * (1.0 / (2.0 * (1.0 - self.kr))))

        def code(t: torch.Tensor, scale: float, off: float) -> torch.Tensor:
            return torch.round(t * scale + off).clamp(0.0, 255.0).to(torch.uint8)

        return code(y, self.y_scale, self.y_off), code(u, self.c_scale, self.c_off), code(v, self.c_scale, self.c_off)


def _down_chroma(c: torch.Tensor) -> torch.Tensor:
    """Half width: column pairs averaged; half height: [1 3 3 1]/8 over rows 2i-1 .. 2i+2."""
    c = 0.5 * (c[:, :, :, 0::2] + c[:, :, :, 1::2])
    prev = torch.cat([c[:, :, :1], c[:, :, :-1]], dim=2)
    nxt = torch.cat([c[:, :, 1:], c[:, :, -1:]], dim=2)
    return (prev[:, :, 0::2] + 3.0 * c[:, :, 0::2] + 3.0 * c[:, :, 1::2] + nxt[:, :, 1::2]) * 0.125


class YUV420FrameGraph(nn.Module):
    """4:2:0 planes in, the 2x frame's 8-bit yuv420p planes out: the whole frame filter
    on one device (the torch-CUDA backend's frame path).

    ``forward(y, u, v)`` takes (1,1,H,W) and (1,1,H/2,W/2) planes (H, W multiples of 8) of
    ``bit_depth``-bit code values (uint8 for 8 bits; any integer type, e.g. int16, for 10)
    and returns one flat uint8 tensor: the output Y, U and V planes, each row-major,
    one after the other (:func:`unpack_yuv420` crops and lays them out as PyAV's
    ``to_ndarray`` does). The RGB in between is rounded to 8 bits, as the Python path
    rounds it, so both paths agree to a level or so.
    """

    def __init__(self, model: SRUNet, colour: Colour, precision: str = "fp16", bit_depth: int = 8) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if bit_depth not in (8, 10):
            raise ConfigError(f"{bit_depth}-bit input; expected 8 or 10")
        model = model if model.deploy else reparameterize_model(model)
        model = copy.deepcopy(model).eval().float()
        self.half = precision == "fp16"
        self.model = model.half() if self.half else model
        self.to_rgb = YUV420ToRGB(colour, bit_depth)
        self.to_yuv = RGBToYUV420(colour)

    def forward(self, y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x = self.to_rgb(y, u, v) * 2.0 - 1.0
        if self.half:
            x = x.half().contiguous(memory_format=torch.channels_last)
        out = self.model(x).float()
        rgb = torch.round((out.clamp(-1.0, 1.0) + 1.0) * 127.5) * (1.0 / 255.0)
        return torch.cat([p.reshape(-1) for p in self.to_yuv(rgb)])


def unpack_yuv420(flat: np.ndarray, padded_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """:class:`YUV420FrameGraph`'s flat output of a padded (H, W) frame -> the (h, w) frame's
    planes as one (h*3/2, w) uint8 array (Y rows, then U, then V: PyAV's yuv420p layout)."""
    (hp, wp), (h, w) = padded_hw, out_hw
    if h % 4 or w % 2 or h > hp or w > wp or flat.size != hp * wp * 3 // 2:
        raise ConfigError(f"cannot unpack a {wp}x{hp} yuv420p output to {w}x{h}")
    n_y, n_c = hp * wp, (hp // 2) * (wp // 2)
    y = flat[:n_y].reshape(hp, wp)[:h, :w]
    u = flat[n_y:n_y + n_c].reshape(hp // 2, wp // 2)[: h // 2, : w // 2]
    v = flat[n_y + n_c:].reshape(hp // 2, wp // 2)[: h // 2, : w // 2]
    out = np.empty((h * 3 // 2, w), np.uint8)
    out[:h] = y
    chroma = out[h:].reshape(-1)  # a view: U's rows then V's, each h/2 x w/2
    chroma[: u.size] = u.reshape(-1)
    chroma[u.size:] = v.reshape(-1)
    return out


def pad_yuv420(y: np.ndarray, u: np.ndarray, v: np.ndarray, multiple: int = 8):
    """Edge-pad planes (H,W), (H/2,W/2) so luma is a multiple of ``multiple``; returns 1x1xHxW arrays."""
    h, w = y.shape
    if h % 2 or w % 2 or u.shape != (h // 2, w // 2) or v.shape != u.shape:
        raise BackendError(f"expected 4:2:0 planes with even luma size, got {y.shape}, {u.shape}, {v.shape}")
    ph, pw = -h % multiple, -w % multiple
    y = np.pad(y, ((0, ph), (0, pw)), mode="edge")
    u, v = (np.pad(c, ((0, ph // 2), (0, pw // 2)), mode="edge") for c in (u, v))
    return tuple(a[None, None] for a in (y, u, v))
