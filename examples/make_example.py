#!/usr/bin/env python3
"""Make examples/pan_540p_h265.mkv: a real 540p H.265 clip for the README's main command.

Content: a slow pan (2 px per frame at 1080p) across "aitzgorri" by Aitzol Berasategi
(CC-BY-4.0), from Debian's lomiri-wallpapers-16.04. Each 1920x1080 view is taken from
the photo Lanczos-scaled to cover the pan, downscaled by 2 (Lanczos) to 960x540 and
encoded with libx265 at CRF 23 (the paper's setting), 72 frames at 24 fps.
Only PyAV is needed:  .venv/bin/python examples/make_example.py
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

PHOTO = Path("/usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg")


def load_scaled(path: Path, min_width: int, height: int) -> np.ndarray:
    """The photo Lanczos-scaled to cover min_width x height, centre-cropped to ``height`` lines."""
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
    s = max(height / frame.height, min_width / frame.width)
    w, h = round(frame.width * s), round(frame.height * s)
    rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="LANCZOS").to_ndarray()
    y0 = (h - height) // 2
    return rgb[y0: y0 + height]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", type=Path, default=PHOTO)
    ap.add_argument("-o", "--output", type=Path, default=Path(__file__).with_name("pan_540p_h265.mkv"))
    ap.add_argument("--frames", type=int, default=72)
    ap.add_argument("--crf", type=int, default=23)
    args = ap.parse_args()

    big = load_scaled(args.photo, 1920 + 2 * args.frames, 1080)
    x0 = (big.shape[1] - 1920 - 2 * args.frames) // 2
    with av.open(str(args.output), "w") as out:
        vs = out.add_stream("libx265", rate=24)
        vs.width, vs.height, vs.pix_fmt = 960, 540, "yuv420p"
        vs.codec_context.colorspace, vs.codec_context.color_range = 1, 1  # BT.709, limited
        vs.options = {"crf": str(args.crf), "preset": "slow", "x265-params": "log-level=error"}
        for i in range(args.frames):
            view = np.ascontiguousarray(big[:, x0 + 2 * i: x0 + 2 * i + 1920])
            f = av.VideoFrame.from_ndarray(view, format="rgb24").reformat(
                width=960, height=540, format="yuv420p", interpolation="LANCZOS",
                dst_colorspace="itu709", dst_color_range="MPEG")
            f.pts, f.time_base = i, Fraction(1, 24)
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    print(f"{args.output}: {args.frames} frames 960x540 H.265 CRF {args.crf}, {args.output.stat().st_size} bytes")


if __name__ == "__main__":
    main()
