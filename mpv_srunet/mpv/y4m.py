"""The virtual y4m file that carries upscaled frames to mpv.

mpv opens it like any file (over loopback HTTP from the Lua script, or through a
libmpv stream callback in ``mpv-srunet play``). Every frame record has the same
size, so a byte offset maps to a frame index by division: this is what makes
mpv's seeks frame-exact (a seek outside mpv's cache becomes a ``Range:
bytes=<offset>-`` request). A live source has no size: mpv plays it through and
refuses forward seeks.

Pixels are 8-bit 4:2:0 planar; the colour matrix and range are the source's and
are passed to mpv separately (y4m has no field for the matrix). The sample aspect
ratio travels in the header's ``A`` field (FFmpeg's y4m demuxer reads it): 720x480
at 8:9 or 1440x1080 at 4:3 show with the source's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

FRAME_TAG = b"FRAME\n"


@dataclass(frozen=True)
class Y4MLayout:
    """Byte layout of a virtual y4m file of ``frames`` frames (``None``: live, unbounded)."""

    width: int
    height: int
    fps: Fraction
    frames: int | None
    full_range: bool = False
    #: sample aspect ratio (the source's: a 2x upscale keeps it), so anamorphic video plays with its shape
    sar: Fraction = Fraction(1)

    @property
    def header(self) -> bytes:
        rng = "FULL" if self.full_range else "LIMITED"
        return (
            f"YUV4MPEG2 W{self.width} H{self.height} F{self.fps.numerator}:{self.fps.denominator} "
            f"Ip A{self.sar.numerator}:{self.sar.denominator} C420mpeg2 XYSCSS=420MPEG2 XCOLORRANGE={rng}\n"
        ).encode("ascii")

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame's pixels (Y plane + two quarter-size chroma planes)."""
        cw, ch = (self.width + 1) // 2, (self.height + 1) // 2
        return self.width * self.height + 2 * cw * ch

    @property
    def record_bytes(self) -> int:
        return len(FRAME_TAG) + self.frame_bytes

    @property
    def size(self) -> int | None:
        """Total file size, or ``None`` for a live (unbounded) stream."""
        if self.frames is None:
            return None
        return len(self.header) + self.frames * self.record_bytes

    def locate(self, offset: int) -> tuple[int, int]:
        """Frame index and offset inside that frame's record for a byte offset past the header."""
        rel = offset - len(self.header)
        if rel < 0:
            raise ValueError(f"offset {offset} is inside the header")
        return rel // self.record_bytes, rel % self.record_bytes
