"""ONNX export of the fused model: valid, dynamic, equal to torch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch

from mpv_srunet.cli import main
from mpv_srunet.model import create_model
from mpv_srunet.onnx_export import export_onnx


def test_dynamic_export_matches_torch(tmp_path):
    torch.manual_seed(0)
    m = create_model("default", n_filters=16).eval()
    path = export_onnx(m, tmp_path / "m.onnx")
    g = onnx.load(str(path))
    onnx.checker.check_model(g)
    dims = [d.dim_param or d.dim_value for d in g.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 40, 64), (2, 3, 72, 24)]:
        x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
        with torch.no_grad():
            ref = m(torch.from_numpy(x)).numpy()
        y = sess.run(None, {"input": x})[0]
        assert y.shape == ref.shape and np.abs(y - ref).max() < 1e-4


def test_export_onnx_cli_fp16_and_static(tmp_path, tiny_weights, capsys):
    assert main(["export-onnx", "--weights", str(tiny_weights), "-o", str(tmp_path / "a.onnx"), "--fp16"]) == 0
    out = capsys.readouterr().out
    err = float(out.rsplit("=", 1)[1].split()[0])
    assert err < 0.05  # fp16 graph vs fp32 torch
    assert main(["export-onnx", "--weights", str(tiny_weights), "-o", str(tmp_path / "b.onnx"), "--static", "96x64"]) == 0
    g = onnx.load(str(tmp_path / "b.onnx"))
    assert [d.dim_value for d in g.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 96]
    assert main(["export-onnx", "--weights", str(tiny_weights), "-o", str(tmp_path / "c.onnx"), "--static", "97x64"]) == 2
    assert "multiples of 8" in capsys.readouterr().err
