"""`mpv-srunet export-onnx`: the fused model as ONNX (dynamic batch/height/width)."""

from __future__ import annotations

import argparse

from . import options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-onnx", help="export the fused model to ONNX and check it against torch")
    p.add_argument("-o", "--output", required=True, help="output .onnx")
    options.add_weights(p)
    p.add_argument("--fp16", action="store_true", help="fp16 weights and activations")
    p.add_argument("--static", metavar="WxH", help="fixed input size instead of dynamic height/width")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from ..errors import UsageError
    from ..onnx_export import export_onnx
    from ..weights import load_model

    model, info = load_model(args.weights, deploy=True)
    size = (64, 64)
    if args.static:
        try:
            w, h = (int(v) for v in args.static.lower().split("x"))
        except ValueError:
            raise UsageError(f"--static {args.static}: expected WxH, e.g. 960x544") from None
        if w % 8 or h % 8 or w <= 0 or h <= 0:
            raise UsageError(f"--static {args.static}: width and height must be positive multiples of 8")
        size = (h, w)
    path = export_onnx(model, args.output, opset=args.opset, dynamic=not args.static, fp16=args.fp16, sample_size=size)
    err = _check(path, model, size, args.fp16)
    print(f"{path}: exported ({'fp16' if args.fp16 else 'fp32'}, {'static ' + args.static if args.static else 'dynamic HxW'}), "
          f"max |onnxruntime - torch| = {err:.2e} on a {size[1]}x{size[0]} input")
    return 0


def _check(path, model, size, fp16: bool) -> float:
    import numpy as np
    import onnxruntime as ort
    import torch

    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, *size)).astype(np.float16 if fp16 else np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": x})[0].astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x.astype(np.float32))).numpy()
    return float(np.abs(y - ref).max())
