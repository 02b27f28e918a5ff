"""The paper's degradation: downscale, then H.265 (libx265 through PyAV) at a CRF.

Frames are converted to 4:2:0 BT.709 limited range (what HD streams carry) with
explicit matrix and range on both ways, so colour never drifts between the
reference and what the candidates see.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from ..colour import Colour, frame_to_rgb24, rgb24_to_yuv420
from ..errors import MediaError
from ..video import mux

#: the clips' colour: encoded, tagged and decoded as BT.709 limited range
BT709_LIMITED = Colour("bt709", "limited")


@dataclass(frozen=True)
class Encoded:
    path: Path
    frames: int
    bytes: int  # video packet payload, no container overhead
    fps: float

    @property
    def bitrate_kbps(self) -> float:
        return self.bytes * 8 / (self.frames / self.fps) / 1000.0


def resize_frames(frames: Sequence[np.ndarray], size: tuple[int, int], method: str = "bicubic") -> list[np.ndarray]:
    """Resize uint8 RGB frames with PIL (antialiased when shrinking); ``method``: bicubic|lanczos."""
    from PIL import Image

    resample = {"bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}[method]
    return [np.asarray(Image.fromarray(f).resize(size, resample)) for f in frames]


def encode_h265(
    frames: Sequence[np.ndarray], path: Path, crf: int, fps: float, preset: str = "medium"
) -> Encoded:
    """Encode uint8 RGB frames as H.265 (yuv420p, BT.709 limited) into ``path`` (.mkv)."""
    import av

    h, w = frames[0].shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    total = 0
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx265", rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.colorspace, vs.codec_context.color_range = BT709_LIMITED.avcol_spc, BT709_LIMITED.avcol_range
        vs.options = {"crf": str(crf), "preset": preset, "x265-params": "log-level=error"}
        for i, rgb in enumerate(frames):
            f = rgb24_to_yuv420(rgb, BT709_LIMITED)
            f.pts, f.time_base = i, 1 / rate
            total += mux(out, vs.encode(f))
        total += mux(out, vs.encode())
    return Encoded(path, len(frames), total, float(fps))


def decode_rgb(path: Path, expect: int) -> list[np.ndarray]:
    """Decode every frame back to full-range RGB (BT.709 limited in); check the count."""
    import av

    with av.open(str(path)) as c:
        frames = [frame_to_rgb24(f, BT709_LIMITED) for f in c.decode(video=0)]
    if len(frames) != expect:
        raise MediaError(f"{path}: decoded {len(frames)} frames, expected {expect} (encoder dropped frames?)")
    return frames
