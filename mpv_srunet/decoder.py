"""How `upscale` and the frame server decode video: threaded, and keeping damaged frames.

libavcodec drops every frame it flags corrupt (a reference lost to a damaged packet) unless
asked; with H.265's long GOPs one bad packet then costs every frame up to the next keyframe.
``output_corrupt`` keeps them, as players show them; ``Frame.is_corrupt`` still tells which.
"""

from __future__ import annotations

from typing import Any

from .errors import MediaError

DECODER_OPTIONS = {"flags": "output_corrupt"}


def configure_decoder(stream: Any) -> None:
    """Set up a PyAV video stream's decoder before its first packet."""
    if stream.codec_context is None:
        raise MediaError("no decoder for its video stream (an unknown codec, or a damaged header)")
    stream.thread_type = "AUTO"
    stream.codec_context.options = dict(DECODER_OPTIONS)


#: A frame timestamp further than this after the previous frame's is damage, not a pause.
MAX_PTS_JUMP_S = 10.0


class PtsRepair:
    """Presentation timestamps that increase, as muxers and frame indexes need them.

    Damaged input carries impossible ones (zzuf over a Matroska block: 16.9 s between frames of
    0.42 and 0.54 s). A frame without a timestamp, one not after the previous frame's, or one more
    than ``MAX_PTS_JUMP_S`` beyond it, gets the previous one plus one frame duration at ``rate``.
    """

    def __init__(self, rate: Any) -> None:
        self.rate = rate
        self.last: int | None = None

    def __call__(self, pts: int | None, time_base: Any) -> int | None:
        if not time_base or not self.rate or (pts is None and self.last is None):
            return pts
        if self.last is not None and (pts is None or pts <= self.last
                                      or (pts - self.last) * time_base > MAX_PTS_JUMP_S):
            pts = self.last + max(1, round(1 / (self.rate * time_base)))
        self.last = pts
        return pts
