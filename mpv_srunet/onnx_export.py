"""ONNX export of the fused SR-UNet (dynamic batch, height and width).

The graph takes ``input``: float NCHW RGB in [-1, 1] (H, W multiples of 8) and gives
``output``: the upscaled NCHW RGB in [-1, 1]. ``fp16=True`` writes an fp16 graph
(weights and activations), the form TensorRT 11 needs for FP16 engines.
We use the TorchScript exporter (``dynamo=False``): it needs no onnxscript and
keeps the Resize ops' scales static while H and W stay dynamic.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch

from .fsutil import atomic_path
from .model import SRUNet, reparameterize_model

INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEFAULT_OPSET = 17


def export_onnx(
    model: SRUNet,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    fp16: bool = False,
    sample_size: tuple[int, int] = (64, 64),
) -> Path:
    """Export ``model`` (fused first if needed) to ``path`` atomically and check the graph."""
    import onnx

    m = reparameterize_model(model) if not model.deploy else copy.deepcopy(model)
    m = m.eval().to("cpu", torch.float16 if fp16 else torch.float32)
    h, w = sample_size
    x = torch.zeros(1, m.cfg.in_channels, h, w, dtype=torch.float16 if fp16 else torch.float32)
    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"}}
    p = Path(path)
    with atomic_path(p, fsync=False) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m, (x,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes=axes if dynamic else None, opset_version=opset, dynamo=False,
        )
        onnx.checker.check_model(onnx.load(str(tmp)))
    return p
