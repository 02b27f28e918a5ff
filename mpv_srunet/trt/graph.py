"""The ONNX graph that goes into TensorRT.

The plain export (:func:`mpv_srunet.onnx_export.export_onnx`) takes float RGB in
[-1, 1]; a player would then spend CPU time converting every decoded frame to
float RGB and copying four bytes per sample to the GPU. The engine graph folds
that work into the network so the GPU does it:

* ``rgb``        float32 NCHW in [-1, 1] -> float32 NCHW (the backend protocol).
* ``rgb24``      uint8 NHWC RGB -> uint8 NHWC RGB (normalisation folded in).
* ``yuv420p``    three uint8 planes Y (1,1,H,W), U and V (1,1,H/2,W/2), as decoded
                 -> uint8 NHWC RGB. Colour conversion in the graph.
* ``yuv420p10``  the same for 10-bit video; the planes carry the integer code
                 values (0..1023) as float16, which holds them exactly and which
                 TensorRT accepts as an I/O type (it has no uint16).

:class:`YUV420FrameGraph` goes one step further for the torch-CUDA backend (not
exported): yuv420p planes in, the upscaled frame's yuv420p planes out
(:class:`RGBToYUV420` converts back on the GPU).

Colour conversion: BT.709 / BT.601 / BT.2020 (non-constant luminance) matrices,
limited ("MPEG") or full ("JPEG") range, 8 or 10 bits, exactly the textbook
equations (ITU-R BT.709-6 section 3, BT.601-7 section 2.5), clamped to [0, 1].
4:2:0 chroma is upsampled 2x, bilinearly, at one of three sitings:

* ``left`` (default): chroma co-sited with the even luma columns and centred
  between luma rows -- the MPEG-2/H.264/HEVC default (chroma_sample_loc_type 0),
  and what swscale (so PyAV and the Python path of the filter) assumes for
  yuv420p. Measured against PyAV on real decoded frames: mean 0.4 levels,
  p99 2 levels (tests/test_engine.py).
* ``center``: chroma centred in its 2x2 luma block (MPEG-1/JPEG siting).
* ``nearest``: each chroma sample covers its 2x2 block (no interpolation).

Edges are replicated in all three.

Precision: ``fp16`` exports an FP16 graph (weights and activations in half,
casts at the ends, colour conversion and rounding in fp32). That is what
TensorRT 11 needs (it removed the FP16 builder flag; precision comes from the
graph, networks are strongly typed) and it gives the same engine on TensorRT 10
built as a strongly typed network.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..fsutil import write_bytes_atomic
from ..highdepth import MATRICES, levels  # (Kr, Kb) of each matrix; code-value levels
from ..model import SRUNet, reparameterize_model

INPUT_FORMATS = ("rgb", "rgb24", "yuv420p", "yuv420p10")
PRECISIONS = ("fp16", "fp32")
RANGES = ("limited", "full")
CHROMA_UPSAMPLING = ("left", "center", "nearest")


def _check_choice(what: str, value: str, valid: tuple[str, ...] | dict) -> None:
    if value not in valid:
        raise ConfigError(f"srunet.trt: unknown {what} {value!r}; choose one of {', '.join(valid)}")


@dataclass(frozen=True)
class ColourSpec:
    """How YUV planes map to RGB (used only by the YUV input formats)."""

    matrix: str = "bt709"  # see MATRICES
    range: str = "limited"  # limited (16-235/240) or full (0-255)
    chroma: str = "left"  # 4:2:0 chroma siting/upsampling, see module docstring

    def __post_init__(self) -> None:
        _check_choice("colour matrix", self.matrix, MATRICES)
        _check_choice("colour range", self.range, RANGES)
        _check_choice("chroma upsampling", self.chroma, CHROMA_UPSAMPLING)


@dataclass(frozen=True)
class GraphSpec:
    """Everything that changes the engine graph (and so the engine cache key)."""

    input_format: str = "rgb"
    precision: str = "fp16"
    colour: ColourSpec = field(default_factory=ColourSpec)

    def __post_init__(self) -> None:
        _check_choice("input format", self.input_format, INPUT_FORMATS)
        _check_choice("precision", self.precision, PRECISIONS)

    @property
    def is_yuv(self) -> bool:
        return self.input_format.startswith("yuv")

    @property
    def bit_depth(self) -> int:
        return 10 if self.input_format == "yuv420p10" else 8

    @property
    def input_names(self) -> list[str]:
        return ["y", "u", "v"] if self.is_yuv else ["input"]

    @property
    def multiple_of(self) -> int:
        """Input (luma) height/width multiple: the network's 8; 4:2:0 needs even, 8 covers it."""
        return SRUNet.multiple_of

    def tag(self) -> str:
        """Short readable id for file names, e.g. ``yuv420p-bt709-limited-left``."""
        if not self.is_yuv:
            return self.input_format
        c = self.colour
        return f"{self.input_format}-{c.matrix}-{c.range}-{c.chroma}"

    def to_dict(self) -> dict:
        return asdict(self)

    def input_shapes(self, height: int, width: int, batch: int = 1) -> dict[str, tuple[int, ...]]:
        """Input tensor shapes for a (padded) luma size."""
        if self.input_format == "rgb":
            return {"input": (batch, 3, height, width)}
        if self.input_format == "rgb24":
            return {"input": (batch, height, width, 3)}
        c = (batch, 1, height // 2, width // 2)
        return {"y": (batch, 1, height, width), "u": c, "v": c}

    def input_dtypes(self) -> dict[str, torch.dtype]:
        if self.input_format == "rgb":
            return {"input": torch.float32}
        if self.input_format in ("rgb24", "yuv420p"):
            return {n: torch.uint8 for n in self.input_names}
        return {n: torch.float16 for n in self.input_names}


class YUV420ToRGB(nn.Module):
    """Planar 4:2:0 code values -> RGB float32 NCHW in [0, 1] (textbook equations)."""

    def __init__(self, colour: ColourSpec, bit_depth: int = 8) -> None:
        super().__init__()
        self.colour = colour
        kr, kb = MATRICES[colour.matrix]
        kg = 1.0 - kr - kb
        self.y_off, self.y_scale, self.c_off, self.c_scale = levels(bit_depth, colour.range == "full")
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


def _to_uint8_nhwc(y: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float NCHW -> uint8 NHWC, rounded half to even (ONNX Round)."""
    y = torch.round((y.clamp(-1.0, 1.0) + 1.0) * 127.5)
    return y.permute(0, 2, 3, 1).to(torch.uint8)


class EngineGraph(nn.Module):
    """SR-UNet with its input/output conversions folded in (see the module docstring)."""

    def __init__(self, model: SRUNet, spec: GraphSpec) -> None:
        super().__init__()
        model = model if model.deploy else reparameterize_model(model)
        model = copy.deepcopy(model).eval().float()
        self.half = spec.precision == "fp16"
        self.model = model.half() if self.half else model
        self.spec = spec
        self.to_rgb = YUV420ToRGB(spec.colour, spec.bit_depth) if spec.is_yuv else None

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        """float32 [-1, 1] -> float32 [-1, 1]; the FP16 part sits between two casts."""
        if self.half:
            return self.model(x.half()).float()
        return self.model(x)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        fmt = self.spec.input_format
        if fmt == "rgb":
            return self._net(inputs[0])
        if fmt == "rgb24":
            x = inputs[0].permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0
        else:
            x = self.to_rgb(*inputs) * 2.0 - 1.0
        return _to_uint8_nhwc(self._net(x))


class RGBToYUV420(nn.Module):
    """RGB float NCHW in [0, 1] -> uint8 planes Y (N,1,H,W), U and V (N,1,H/2,W/2).

    The inverse of :class:`YUV420ToRGB` (8-bit, same textbook equations). Chroma is
    downsampled as swscale does it for RGB -> yuv420p (the renderer's float path):
    pairs of columns averaged, rows filtered [1 3 3 1]/8 (bilinear, centred between
    two luma rows), edges replicated. Measured against swscale on a real photo: luma
    within 1 level, chroma mean below 0.1 level (tests/test_engine.py)."""

    def __init__(self, colour: ColourSpec) -> None:
        super().__init__()
        self.kr, self.kb = MATRICES[colour.matrix]
        self.kg = 1.0 - self.kr - self.kb
        self.y_off, self.y_scale, self.c_off, self.c_scale = levels(8, colour.range == "full")

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

    def __init__(self, model: SRUNet, colour: ColourSpec, precision: str = "fp16", bit_depth: int = 8) -> None:
        super().__init__()
        _check_choice("precision", precision, PRECISIONS)
        if bit_depth not in (8, 10):
            raise ConfigError(f"srunet.trt: {bit_depth}-bit input; expected 8 or 10")
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


def dummy_inputs(spec: GraphSpec, height: int = 64, width: int = 64) -> tuple[torch.Tensor, ...]:
    """Example inputs of the right dtypes (mid-grey) for tracing and tests."""
    shapes, dtypes = spec.input_shapes(height, width), spec.input_dtypes()
    fill = {torch.float32: 0.0, torch.uint8: 128, torch.float16: 512.0}
    return tuple(torch.full(shapes[n], fill[dtypes[n]], dtype=dtypes[n]) for n in spec.input_names)


def _dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    if spec.input_format == "rgb":
        return {"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "out_height", 3: "out_width"}}
    out = {"output": {1: "out_height", 2: "out_width"}}
    if spec.input_format == "rgb24":
        return {"input": {1: "height", 2: "width"}, **out}
    half = {2: "half_height", 3: "half_width"}
    return {"y": {2: "height", 3: "width"}, "u": half, "v": half, **out}


def export_engine_onnx(
    model: SRUNet,
    path: str | os.PathLike,
    spec: GraphSpec,
    *,
    static_hw: tuple[int, int] | None = None,
    opset: int = 17,
) -> Path:
    """Write the engine graph of ``model`` to ``path`` atomically, checked by onnx.checker.

    Height and width are dynamic axes (one engine, one optimization profile, many
    resolutions) unless ``static_hw`` = (height, width) fixes every axis to one
    padded luma size.
    """
    if static_hw is not None:
        m = spec.multiple_of
        if static_hw[0] % m or static_hw[1] % m:
            raise ConfigError(
                f"srunet.trt: static size {static_hw[1]}x{static_hw[0]} must be a multiple of {m}; pad it first"
            )
    return _export(model, Path(path), spec, static_hw, opset=opset)


def _export(model: SRUNet, path: Path, spec: GraphSpec, static_hw: tuple[int, int] | None, *, opset: int) -> Path:
    import onnx

    graph = EngineGraph(model, spec).eval()
    h, w = static_hw or (64, 64)
    args = dummy_inputs(spec, h, w)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notices
        torch.onnx.export(
            graph, args, buf, dynamo=False, opset_version=opset,
            input_names=spec.input_names, output_names=["output"],
            dynamic_axes=None if static_hw else _dynamic_axes(spec), do_constant_folding=True,
        )
    proto = onnx.load_from_string(buf.getvalue())
    proto.doc_string = f"mpv-srunet engine graph {spec.tag()} {spec.precision}"
    onnx.checker.check_model(proto)
    return write_bytes_atomic(path, proto.SerializeToString())
