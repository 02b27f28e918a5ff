"""One home for colour: how a frame's YUV maps to RGB, and the CPU conversions.

Everything that decides or converts a frame's colour lives here:

* :class:`Colour` -- the one spec type: matrix, range, 4:2:0 chroma siting, and
  whether it was guessed. The CPU path (swscale through PyAV), the mpv frame
  server and the GPU graphs (:mod:`mpv_srunet.gpu.frames`, the TensorRT engine
  graph) all take it. Our names are the GPU graphs' and the CLI's (``bt709``,
  ``limited``); its properties give every other vocabulary: swscale/PyAV
  (``itu709``, ``MPEG``), libavutil's AVCOL_* numbers (frame tags), mpv's
  (``bt.709``).
* :func:`frame_colour` -- a decoded frame's colour, with mpv's rule for untagged
  video (BT.709 from 720 lines up, else BT.601; limited range for YUV).
* :func:`sws_flags` -- the swscale flags every YUV<->RGB conversion uses.
* The CPU conversions between VideoFrames and float RGB in [-1, 1]:
  :func:`frame_to_float`, :func:`float_to_format`, :func:`float_to_frame`,
  :func:`float_to_yuv420` (the frame server's hot path) and
  :func:`yuv420_to_frame`; and 8-bit RGB for evaluation and training data:
  :func:`frame_to_rgb24`, :func:`rgb24_to_yuv420`.

8-bit formats go through swscale, whose 8-bit path (rgb24) is exact. For > 8-bit
YUV and gray (10-bit HEVC, p010, 12-bit...) swscale's 16-bit RGB output is not full
scale: limited-range 10-bit white (Y 940) comes out as 65283 in rgb48 (0.99615 in
gbrpf32), full-range white (1023) as 65472, a frame read that way 0.1-0.4 % dark,
about one 8-bit level at white. So for those formats swscale only resamples chroma,
to 4:4:4 at the source's own depth (and back on output), and the matrix and range
are applied here with the textbook equations (BT.709/601/2020 and friends; full
range per BT.2100: code = (2^n - 1) * E).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError

log = logging.getLogger(__name__)

#: (Kr, Kb) of each matrix, by our names
KR_KB: dict[str, tuple[float, float]] = {
    "bt709": (0.2126, 0.0722),
    "bt601": (0.299, 0.114),
    "bt2020": (0.2627, 0.0593),  # non-constant luminance
    "fcc": (0.30, 0.11),
    "smpte240m": (0.212, 0.087),
}
#: the matrices the GPU graphs implement (FCC and SMPTE 240M stay on the CPU path)
GPU_MATRICES = ("bt709", "bt601", "bt2020")
RANGES = ("limited", "full")
#: 4:2:0 chroma siting: left = co-sited with even luma columns, centred between rows (MPEG-2/
#: H.264/HEVC default, what swscale assumes); center = centred in the 2x2 block; nearest = no
#: interpolation (GPU graphs only)
CHROMA_SITINGS = ("left", "center", "nearest")

_SWS_MATRIX = {"bt709": "itu709", "bt601": "itu601", "bt2020": "bt2020", "fcc": "fcc", "smpte240m": "smpte240m"}
_SWS_RANGE = {"limited": "MPEG", "full": "JPEG"}
_MPV_MATRIX = {"bt709": "bt.709", "bt601": "bt.601", "fcc": "bt.601", "smpte240m": "smpte-240m", "bt2020": "bt.2020-ncl"}
# libavutil AVColorSpace values: what a frame says -> our names, and what we tag frames with
_AVCOL_SPC_IN = {1: "bt709", 4: "fcc", 5: "bt601", 6: "bt601", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
_AVCOL_SPC_OUT = {"bt709": 1, "fcc": 4, "bt601": 6, "smpte240m": 7, "bt2020": 9}
_AVCOL_RANGE_IN = {1: "limited", 2: "full"}
_DEPTHS = (9, 10, 12, 14, 16)  # depths with both a yuv444pNNle and a grayNNle format


def _check_choice(what: str, value: str, valid: tuple[str, ...] | dict) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {what} {value!r}; choose one of {', '.join(valid)}")


@dataclass(frozen=True)
class Colour:
    """How a frame's YUV planes map to RGB: the one colour spec of the project."""

    matrix: str = "bt709"  # a key of KR_KB
    range: str = "limited"  # limited (16-235/240 x 2^(n-8)) or full
    chroma: str = "left"  # 4:2:0 chroma siting, see CHROMA_SITINGS
    guessed: bool = field(default=False, compare=False)  # the stream did not say: mpv's rule

    def __post_init__(self) -> None:
        _check_choice("colour matrix", self.matrix, KR_KB)
        _check_choice("colour range", self.range, RANGES)
        _check_choice("chroma siting", self.chroma, CHROMA_SITINGS)

    @property
    def full(self) -> bool:
        return self.range == "full"

    @property
    def kr_kb(self) -> tuple[float, float]:
        return KR_KB[self.matrix]

    @property
    def on_gpu(self) -> bool:
        """Whether the GPU graphs implement this matrix."""
        return self.matrix in GPU_MATRICES

    @property
    def sws_matrix(self) -> str:
        """swscale's (PyAV's ``src_colorspace``) name, e.g. ``itu709``."""
        return _SWS_MATRIX[self.matrix]

    @property
    def sws_range(self) -> str:
        """swscale's (PyAV's ``src_color_range``) name: ``MPEG`` or ``JPEG``."""
        return _SWS_RANGE[self.range]

    @property
    def mpv_matrix(self) -> str:
        """mpv's name (``vf=format:colormatrix=``), e.g. ``bt.709``."""
        return _MPV_MATRIX[self.matrix]

    @property
    def avcol_spc(self) -> int:
        """libavutil's AVColorSpace value to tag a frame with."""
        return _AVCOL_SPC_OUT[self.matrix]

    @property
    def avcol_range(self) -> int:
        return 2 if self.full else 1


def frame_colour(frame: Any) -> Colour:
    """A VideoFrame's matrix and range (never silently BT.601): its tags, else mpv's rule."""
    fmt = frame.format.name
    is_yuv = fmt.startswith(("yuv", "nv", "p01", "p21", "y2", "uyvy", "yuyv"))
    matrix = _AVCOL_SPC_IN.get(int(frame.colorspace or 2))
    rng = _AVCOL_RANGE_IN.get(int(frame.color_range or 0))
    guessed = False
    if matrix is None:
        matrix = "bt709" if frame.height >= 720 else "bt601"
        guessed = is_yuv
    if rng is None:
        rng = "limited" if (is_yuv and not fmt.startswith("yuvj")) else "full"
        guessed = guessed or is_yuv
    if guessed:
        log.debug("frame %dx%d %s: colour not tagged, using %s/%s", frame.width, frame.height, fmt, matrix, rng)
    return Colour(matrix, rng, guessed=guessed)


def sws_flags() -> Any:
    """swscale flags for YUV<->RGB: bicubic chroma, full chroma interpolation, accurate rounding.

    swscale's defaults (bilinear, fast paths) leave a systematic 1-2 level bias on 4:2:0 8-bit
    frames of real photos; these flags bring the mean error to ~0.4 levels (tests/test_filter.py).
    """
    from av.video.reformatter import Interpolation as I

    return I.BICUBIC | I.ACCURATE_RND | I.FULL_CHR_H_INT | I.FULL_CHR_H_INP


def levels(bits: int, full: bool) -> tuple[float, float, float, float]:
    """(luma offset, luma scale, chroma offset, chroma scale) in ``bits``-bit code values:
    limited range 16/219/128/224 x 2^(bits-8); full range per BT.2100, code = (2^n - 1) * E."""
    m = float(1 << (bits - 8))
    if full:
        peak = float((1 << bits) - 1)
        return 0.0, peak, float(1 << (bits - 1)), peak
    return 16.0 * m, 219.0 * m, 128.0 * m, 224.0 * m


# --------------------------------------------------------------------------- CPU conversions


def exact_depth(fmt: Any) -> int | None:
    """Bit depth when ``fmt`` (an av.VideoFormat) is a > 8-bit YUV or gray format converted
    with the textbook equations here, else None (8-bit formats, RGB, palettes, Bayer and odd
    depths keep swscale)."""
    if fmt.is_rgb or fmt.has_palette or fmt.is_bayer or fmt.name.startswith(("xyz", "ya")):
        return None
    bits = max(c.bits for c in fmt.components)
    return bits if bits in _DEPTHS else None


def _is_gray(fmt: Any) -> bool:
    return sum(1 for c in fmt.components if not c.is_alpha) == 1


def _is_high_depth(fmt: Any) -> bool:
    return any(c.bits > 8 for c in fmt.components)


def _plane(frame: Any, i: int) -> np.ndarray:
    """Plane ``i`` of a 16-bit-per-sample frame as a writable (h, w) uint16 view (line padding dropped)."""
    p = frame.planes[i]
    return np.frombuffer(p, np.uint16).reshape(p.height, p.line_size // 2)[:, : p.width]


def _exact_to_float(frame: Any, colour: Colour, bits: int) -> np.ndarray:
    """> 8-bit YUV/gray VideoFrame -> float32 HxWx3 RGB in [-1, 1], textbook equations."""
    y_off, y_scale, c_off, c_scale = levels(bits, colour.full)
    gray = _is_gray(frame.format)
    f444 = frame.reformat(
        format=f"gray{bits}le" if gray else f"yuv444p{bits}le", interpolation=sws_flags(),
        src_color_range=colour.sws_range, dst_color_range=colour.sws_range,
    )
    y = _plane(f444, 0).astype(np.float32)
    y -= y_off
    y *= 2.0 / y_scale
    y -= 1.0  # 2Y' - 1
    out = np.empty((3, *y.shape), np.float32)  # channel planes: HWC view returned, CHW for free
    if gray:
        out[:] = y
    else:
        kr, kb = colour.kr_kb
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


def _exact_from_float(rgb: np.ndarray, fmt_name: str, colour: Colour, bits: int) -> Any:
    """float32 HxWx3 RGB in [-1, 1] -> untagged VideoFrame in ``fmt_name`` (> 8-bit YUV/gray)."""
    import av

    y_off, y_scale, c_off, c_scale = levels(bits, colour.full)
    top = float((1 << bits) - 1)
    h, w = rgb.shape[:2]
    x = (np.clip(rgb, -1.0, 1.0) + 1.0) * 0.5
    r, g, b = x[:, :, 0], x[:, :, 1], x[:, :, 2]
    kr, kb = colour.kr_kb
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
    return f444.reformat(format=fmt_name, interpolation=sws_flags(),
                         src_color_range=colour.sws_range, dst_color_range=colour.sws_range)


def frame_to_float(frame: Any, colour: Colour | None = None) -> np.ndarray:
    """VideoFrame -> float32 HxWx3 RGB in [-1, 1] (textbook equations for > 8-bit YUV)."""
    colour = colour or frame_colour(frame)
    bits = exact_depth(frame.format)
    if bits is not None:
        return _exact_to_float(frame, colour, bits)
    high = _is_high_depth(frame.format)
    rgb = frame.to_ndarray(
        format="rgb48le" if high else "rgb24",
        src_colorspace=colour.sws_matrix, src_color_range=colour.sws_range,
        dst_color_range="JPEG", interpolation=sws_flags(),
    )
    peak = 65535.0 if high else 255.0
    return rgb.astype(np.float32) * (2.0 / peak) - 1.0


def float_to_format(rgb: np.ndarray, fmt_name: str, colour: Colour) -> Any:
    """float32 HxWx3 in [-1, 1] -> untagged VideoFrame in ``fmt_name`` with ``colour``'s
    matrix and range (yuvj formats: full range). The inverse of :func:`frame_to_float`."""
    import av

    fmt = av.VideoFormat(fmt_name)
    bits = exact_depth(fmt)
    if bits is not None:
        return _exact_from_float(rgb, fmt_name, colour, bits)
    high = _is_high_depth(fmt)
    peak = 65535.0 if high else 255.0
    q = np.clip(np.rint((rgb + 1.0) * (peak / 2.0)), 0, peak).astype(np.uint16 if high else np.uint8)
    src = "rgb48le" if high else "rgb24"
    f = av.VideoFrame.from_ndarray(q, format=src)
    if fmt_name == src:
        return f
    return f.reformat(
        format=fmt_name, src_colorspace=colour.sws_matrix, dst_colorspace=colour.sws_matrix,
        src_color_range="JPEG", dst_color_range="JPEG" if fmt_name.startswith("yuvj") else colour.sws_range,
        interpolation=sws_flags(),
    )


def frame_to_rgb24(frame: Any, colour: Colour | None = None) -> np.ndarray:
    """A decoded frame as full-range 8-bit HxWx3 RGB, converted as the player converts it
    (its own colour, or mpv's guess; swscale's default flags would bias it by 1-2 levels)."""
    colour = colour or frame_colour(frame)
    return frame.to_ndarray(format="rgb24", src_colorspace=colour.sws_matrix, src_color_range=colour.sws_range,
                            dst_color_range="JPEG", interpolation=sws_flags())


def rgb24_to_yuv420(rgb: np.ndarray, colour: Colour, size: tuple[int, int] | None = None) -> Any:
    """Full-range HxWx3 uint8 RGB -> untagged yuv420p VideoFrame with ``colour``'s matrix and
    range, resized to ``size`` = (w, h) in the same swscale call when given (bicubic)."""
    import av

    w, h = size or (rgb.shape[1], rgb.shape[0])
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
        width=w, height=h, format="yuv420p", interpolation=sws_flags(),
        src_colorspace=colour.sws_matrix, dst_colorspace=colour.sws_matrix,
        src_color_range="JPEG", dst_color_range=colour.sws_range,
    )


def float_to_frame(rgb: np.ndarray, like: Any, colour: Colour | None = None) -> Any:
    """float32 HxWx3 in [-1, 1] -> VideoFrame in ``like``'s pixel format, matrix and range."""
    colour = colour or frame_colour(like)
    return _tag_like(float_to_format(rgb, like.format.name, colour), like, colour)


def float_to_yuv420(y: np.ndarray, colour: Colour, size: tuple[int, int]) -> np.ndarray:
    """float32 CHW RGB in [-1, 1] -> (H*3/2, W) yuv420p planes with ``colour``'s matrix and range.

    The frame server's hand-off hot path at 1080p: one fused pass scales, rounds and writes
    each channel straight into a planar GBR frame (no HWC transpose, no temporary uint8 image),
    then swscale converts to 4:2:0. Same result as ``float_to_uint8`` + rgb24 conversion
    (rounding half up instead of half to even).
    """
    import av

    w, h = size
    if not y.flags.writeable:
        y = y.copy()
    np.clip(y, -1.0, 1.0, out=y)
    np.multiply(y, 127.5, out=y)
    np.add(y, 128.0, out=y)  # (y + 1) * 127.5 + 0.5: truncation below rounds to nearest
    frame = av.VideoFrame(w, h, "gbrp")
    for plane, ch in zip(frame.planes, (1, 2, 0)):  # planes are G, B, R
        dst = np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)[:, :w]
        np.copyto(dst, y[ch, :h, :w], casting="unsafe")
    out = frame.reformat(
        format="yuv420p", src_colorspace=colour.sws_matrix, dst_colorspace=colour.sws_matrix,
        src_color_range="JPEG", dst_color_range=colour.sws_range,
    )
    return out.to_ndarray()


def yuv420_to_frame(planes: np.ndarray, like: Any, colour: Colour) -> Any:
    """(H*3/2, W) uint8 yuv420p planes -> VideoFrame tagged with ``colour`` and ``like``'s timing."""
    import av

    return _tag_like(av.VideoFrame.from_ndarray(planes, format="yuv420p"), like, colour)


def _tag_like(out: Any, like: Any, colour: Colour) -> Any:
    if not like.format.name.startswith(("rgb", "bgr", "gbr")):
        out.colorspace = colour.avcol_spc
        out.color_range = colour.avcol_range
    out.pts = like.pts
    if like.time_base is not None:
        out.time_base = like.time_base
    return out
