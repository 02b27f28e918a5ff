"""`mpv-srunet export-glsl`: the fused model as an mpv GLSL user shader (docs/glsl.md)."""

from __future__ import annotations

import argparse

from . import options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-glsl",
        help="write the model as an mpv user shader (--glsl-shaders=...; any GPU, no Python at play time)",
        description="Generate an mpv GLSL user shader that runs SR-UNet 2x inside mpv (vo=gpu / vo=gpu-next). "
        "Per-video weights: --weights VIDEO.srunet.safetensors.",
    )
    p.add_argument("-o", "--output", required=True, help="output .glsl (e.g. ~/.config/mpv/shaders/srunet.glsl)")
    options.add_weights(p)
    options.add_model(p, "model preset when no --weights (default auto: `default`, the best quality; `lite` costs "
                      "a quarter of the GPU time, docs/glsl.md)")
    options.add_strength(p)
    p.add_argument(
        "--min-scale", type=float, default=1.4,
        help="run only when mpv upscales by more than this factor on both axes (default 1.4)",
    )
    p.add_argument(
        "--variant", choices=("compute", "fragment"), default="compute",
        help="compute (default): 16 channels per invocation, ~4x fewer texture fetches, needs compute "
        "shaders (GL 4.3, Vulkan, D3D11); fragment: one pass per 4 channels, runs everywhere (e.g. macOS OpenGL)",
    )
    p.add_argument(
        "--max-binds", type=int, default=15,
        help="textures bound per pass (default 15: mpv's usable limit; lower only for testing)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import UsageError
    from ..glsl import (
        MAX_BINDS,
        VO_GPU_PASS_BUDGET,
        GlslOptions,
        export_glsl,
        shader_summary,
        thrash_warning,
        write_text_atomic,
    )
    from ..weights import load_model

    out = Path(args.output).expanduser()
    if out.is_dir():
        raise UsageError(f"-o {args.output}: is a directory; expected a file name such as {out / 'srunet.glsl'}")
    if not 1.0 <= args.min_scale <= 4.0:
        raise UsageError(f"--min-scale {args.min_scale}: expected a factor between 1.0 and 4.0 (default 1.4)")
    if not 2 <= args.max_binds <= MAX_BINDS:
        raise UsageError(f"--max-binds {args.max_binds}: expected 2..{MAX_BINDS} (mpv fails silently above {MAX_BINDS})")
    options.checked_strength(args)
    model, info = load_model(options.weights_for_file(args), deploy=True, strength=args.strength)
    shader = export_glsl(model, info, GlslOptions(max_binds=args.max_binds, min_scale=args.min_scale, variant=args.variant))
    write_text_atomic(out, shader.text)
    print(f"{out}: {shader_summary(shader)}")
    if len(shader.passes) > VO_GPU_PASS_BUDGET:
        print(thrash_warning(shader))
    print(f"use: mpv --glsl-shaders={out} VIDEO   (active when mpv upscales by > {args.min_scale}x)")
    return 0
