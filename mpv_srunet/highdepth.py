"""Exact YUV <-> float RGB for > 8-bit YUV and gray frames (10-bit HEVC, p010, 12-bit...).

swscale's 16-bit RGB output is not full scale: limited-range 10-bit white (Y 940) comes out
as 65283 in rgb48 (and 0.99615 in gbrpf32), full-range 10-bit white (1023) as 65472, i.e. a
frame read that way is 0.1-0.4 % dark, about one 8-bit level at white. Its 8-bit path
(rgb24) is exact, and so is its chroma resampling at a fixed depth.

So for these formats swscale only resamples chroma, to 4:4:4 at the source's own depth
(and back on output), and the matrix and range are applied here with the textbook
equations (BT.709/601/2020 and friends; full range per BT.2100: code = (2^n - 1) * E).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .filter import FrameColour

#: (Kr, Kb) of each matrix, by the GPU graphs' names (mpv_srunet.trt.graph re-exports it)
MATRICES: dict[str, tuple[float, float]] = {
    "bt709": (0.2126, 0.0722),
    "bt601": (0.299, 0.114),
    "bt2020": (0.2627, 0.0593),
}
#: swscale's matrix names -> MATRICES' names
SWS_TO_MATRIX = {"itu709": "bt709", "itu601": "bt601", "smpte170m": "bt601", "bt2020": "bt2020"}
#: (Kr, Kb) by swscale's names, including the two matrices the GPU graphs do not implement
KR_KB: dict[str, tuple[float, float]] = {
    **{sws: MATRICES[name] for sws, name in SWS_TO_MATRIX.items()},
    "fcc": (0.30, 0.11),
    "smpte240m": (0.212, 0.087),
}
_DEPTHS = (9, 10, 12, 14, 16)  # depths with both a yuv444pNNle and a grayNNle format


def exact_depth(fmt: Any) -> int | None:
    """Bit depth when ``fmt`` (an av.VideoFormat) is a > 8-bit YUV or gray format converted
    here, else None (8-bit formats, RGB, palettes, Bayer and odd depths keep swscale)."""
    if fmt.is_rgb or fmt.has_palette or fmt.is_bayer or fmt.name.startswith(("xyz", "ya")):
        return None
    bits = max(c.bits for c in fmt.components)
    return bits if bits in _DEPTHS else None


def _is_gray(fmt: Any) -> bool:
    return sum(1 for c in fmt.components if not c.is_alpha) == 1


def levels(bits: int, full: bool) -> tuple[float, float, float, float]:
    """(luma offset, luma scale, chroma offset, chroma scale) in ``bits``-bit code values:
    limited range 16/219/128/224 x 2^(bits-8); full range per BT.2100, code = (2^n - 1) * E."""
    m = float(1 << (bits - 8))
    if full:
        peak = float((1 << bits) - 1)
        return 0.0, peak, float(1 << (bits - 1)), peak
    return 16.0 * m, 219.0 * m, 128.0 * m, 224.0 * m


def _plane(frame: Any, i: int) -> np.ndarray:
    """Plane ``i`` of a 16-bit-per-sample frame as a writable (h, w) uint16 view (line padding dropped)."""
    p = frame.planes[i]
    return np.frombuffer(p, np.uint16).reshape(p.height, p.line_size // 2)[:, : p.width]


def to_float(frame: Any, colour: FrameColour, bits: int, interpolation: Any) -> np.ndarray:
    """> 8-bit YUV/gray VideoFrame -> float32 HxWx3 RGB in [-1, 1]."""
    y_off, y_scale, c_off, c_scale = levels(bits, colour.range == "JPEG")
    gray = _is_gray(frame.format)
    f444 = frame.reformat(
        format=f"gray{bits}le" if gray else f"yuv444p{bits}le", interpolation=interpolation,
        src_color_range=colour.range, dst_color_range=colour.range,
    )
    y = _plane(f444, 0).astype(np.float32)
    y -= y_off
    y *= 2.0 / y_scale
    y -= 1.0  # 2Y' - 1
    out = np.empty((3, *y.shape), np.float32)  # channel planes: HWC view returned, CHW for free
    if gray:
        out[:] = y
    else:
        kr, kb = KR_KB[colour.matrix]
        kg = 1.0 - kr - kb
        u, v = (_plane(f444, i).astype(np.float32) for i in (1, 2))
        for c in (u, v):
            c -= c_off
            c *= 2.0 / c_scale  # 2Pb, 2Pr
        np.multiply(v, 2.0 * (1.0 - kr), out=out[0])
        np.multiply(u, 2.0 * (1.0 - kb), out=out[2])
        u *= -2.0 * kb * (1.0 - kb) / kg
        v *= -2.0 * kr * (1.0 - kr) / kg
        np.add(u, v, out=out[1])
        out += y
    np.clip(out, -1.0, 1.0, out=out)
    return out.transpose(1, 2, 0)


def from_float(rgb: np.ndarray, fmt_name: str, colour: FrameColour, bits: int, interpolation: Any) -> Any:
    """float32 HxWx3 RGB in [-1, 1] -> untagged VideoFrame in ``fmt_name`` (> 8-bit YUV/gray)."""
    import av

    y_off, y_scale, c_off, c_scale = levels(bits, colour.range == "JPEG")
    top = float((1 << bits) - 1)
    h, w = rgb.shape[:2]
    x = (np.clip(rgb, -1.0, 1.0) + 1.0) * 0.5
    r, g, b = x[:, :, 0], x[:, :, 1], x[:, :, 2]
    kr, kb = KR_KB[colour.matrix]
    luma = kr * r + (1.0 - kr - kb) * g + kb * b
    gray = _is_gray(av.VideoFormat(fmt_name))
    f444 = av.VideoFrame(w, h, f"gray{bits}le" if gray else f"yuv444p{bits}le")
    planes = [(luma, y_off, y_scale)]
    if not gray:
        planes += [((b - luma) / (2.0 * (1.0 - kb)), c_off, c_scale), ((r - luma) / (2.0 * (1.0 - kr)), c_off, c_scale)]
    for i, (e, off, scale) in enumerate(planes):
        np.copyto(_plane(f444, i), np.clip(np.rint(e * scale + off), 0, top), casting="unsafe")
    if f444.format.name == fmt_name:
        return f444
    return f444.reformat(format=fmt_name, interpolation=interpolation,
                         src_color_range=colour.range, dst_color_range=colour.range)
