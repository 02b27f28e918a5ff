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

Colour conversion for the YUV formats is :class:`mpv_srunet.gpu.frames.YUV420ToRGB`
(the same module the torch-CUDA frame path runs), with a :class:`mpv_srunet.colour.Colour`.

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
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..colour import Colour
from ..errors import ConfigError
from ..fsutil import write_bytes_atomic
from ..gpu.frames import PRECISIONS, YUV420ToRGB, check_gpu_colour
from ..model import SRUNet, reparameterize_model

INPUT_FORMATS = ("rgb", "rgb24", "yuv420p", "yuv420p10")


def _check_choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"srunet.trt: unknown {what} {value!r}; choose one of {', '.join(valid)}")


@dataclass(frozen=True)
class GraphSpec:
    """Everything that changes the engine graph (and so the engine cache key)."""

    input_format: str = "rgb"
    precision: str = "fp16"
    colour: Colour = field(default_factory=Colour)  # used by the YUV input formats

    def __post_init__(self) -> None:
        _check_choice("input format", self.input_format, INPUT_FORMATS)
        _check_choice("precision", self.precision, PRECISIONS)
        if self.is_yuv:
            check_gpu_colour(self.colour)

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
        c = self.colour
        return {"input_format": self.input_format, "precision": self.precision,
                "colour": {"matrix": c.matrix, "range": c.range, "chroma": c.chroma}}

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
