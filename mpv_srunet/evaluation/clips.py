"""`eval make-clips`: short 1080p clips with real motion, made from real photos.

No real 1080p video can be downloaded here, and video metrics (VMAF's motion
feature, flicker) need motion. Each clip moves a virtual camera over one photo:
a slow pan or a slow zoom, at most 4 output pixels per frame anywhere in the
picture (the paper's content is natural video, where such motion dominates).
Every frame is resampled from the full-resolution photo with Lanczos (PIL's
``resize(box=...)`` takes sub-pixel boxes), so detail is real, never upscaled.
Stored losslessly: FFV1 in Matroska, RGB (bgr0), so reading back gives the
exact RGB frames with no colour conversion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import MediaError, UsageError

MAX_SPEED = 4.0  # output pixels per frame, anywhere in the frame
DEFAULT_PHOTO_DIR = Path("/usr/share/backgrounds")


@dataclass(frozen=True)
class Motion:
    """A camera path: pan velocity (output px/frame) and zoom growth per frame."""

    name: str
    vx: float = 0.0
    vy: float = 0.0
    zoom: float = 0.0  # relative zoom change per frame (0.001 = +0.1 %/frame)

    def max_speed(self, size: tuple[int, int]) -> float:
        # A zoom moves a pixel at distance d from the centre by d * zoom per frame.
        half_diag = math.hypot(size[0] / 2, size[1] / 2)
        return math.hypot(self.vx, self.vy) + abs(self.zoom) * half_diag


#: The cycle of motions the clips use, all within MAX_SPEED at 1080p.
MOTIONS = (
    Motion("pan-right", vx=2.5),
    Motion("zoom-in", zoom=0.0025),
    Motion("pan-diagonal", vx=2.0, vy=1.0),
    Motion("zoom-out-pan", vx=1.0, zoom=-0.0015),
)


def find_photos(sources: Sequence[Path], min_size: tuple[int, int]) -> list[Path]:
    """Photos for the clips, ``sources`` in the order given: a file as it is (it must be a
    readable image of at least ``min_size``), a folder as its jpg/png photos of at least
    ``min_size``, searched recursively and sorted by path."""
    from PIL import Image, UnidentifiedImageError

    def size_of(p: Path) -> tuple[int, int] | None:
        try:
            with Image.open(p) as im:
                return im.size
        except (UnidentifiedImageError, OSError):
            return None

    def big_enough(wh: tuple[int, int]) -> bool:
        return wh[0] >= min_size[0] and wh[1] >= min_size[1]

    out: list[Path] = []
    for src in sources:
        if src.is_file():
            wh = size_of(src)
            if wh is None:
                raise MediaError(f"--photos {src}: not a readable image")
            if not big_enough(wh):
                raise UsageError(f"--photos {src}: {wh[0]}x{wh[1]}, smaller than the clip size {min_size[0]}x{min_size[1]}")
            out.append(src)
        elif src.is_dir():
            for p in sorted(src.rglob("*")):
                if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
                    wh = size_of(p)
                    if wh is not None and big_enough(wh):
                        out.append(p)
        else:
            raise UsageError(f"--photos {src}: no such file or folder")
    return out


def camera_frames(photo: np.ndarray, motion: Motion, frames: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Frames of ``motion`` over ``photo``; the view stays inside the photo throughout."""
    from PIL import Image

    if motion.max_speed(size) > MAX_SPEED + 1e-9:
        raise UsageError(f"motion {motion.name} moves {motion.max_speed(size):.2f} px/frame, over {MAX_SPEED}")
    img = Image.fromarray(photo)
    w, h = size
    zooms = [(1.0 + motion.zoom) ** t for t in range(frames)]
    # photo pixels per output pixel at zoom 1: the largest that keeps every view inside
    span_x = max(w / z for z in zooms) + abs(motion.vx) * (frames - 1) / min(zooms)
    span_y = max(h / z for z in zooms) + abs(motion.vy) * (frames - 1) / min(zooms)
    k = min(photo.shape[1] / span_x, photo.shape[0] / span_y)
    if k < 1.0:
        raise MediaError(f"photo {photo.shape[1]}x{photo.shape[0]} is too small for {w}x{h} with this motion")
    cx0 = photo.shape[1] / 2 - math.copysign(1, motion.vx or 1) * k * abs(motion.vx) * (frames - 1) / 2
    cy0 = photo.shape[0] / 2 - math.copysign(1, motion.vy or 1) * k * abs(motion.vy) * (frames - 1) / 2
    for t, z in enumerate(zooms):
        cx, cy = cx0 + k * motion.vx * t, cy0 + k * motion.vy * t
        bw, bh = k * w / z, k * h / z
        box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
        yield np.asarray(img.resize((w, h), Image.LANCZOS, box=box))


def write_lossless(frames: Sequence[np.ndarray] | Iterator[np.ndarray], path: Path, fps: int) -> int:
    """FFV1/bgr0 Matroska, written to a temp name and renamed; returns the frame count."""
    import av

    tmp = path.with_name(f".{path.name}.part.mkv")
    n = 0
    try:
        with av.open(str(tmp), "w") as out:
            vs = out.add_stream("ffv1", rate=fps)
            vs.pix_fmt = "bgr0"
            for rgb in frames:
                if n == 0:
                    vs.width, vs.height = rgb.shape[1], rgb.shape[0]
                f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="bgr0")
                f.pts, f.time_base = n, Fraction(1, fps)
                for p in vs.encode(f):
                    out.mux(p)
                n += 1
            for p in vs.encode():
                out.mux(p)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def make_clips(out_dir: Path, photos: Sequence[Path], *, count: int = 4, frames: int = 48, fps: int = 24,
               size: tuple[int, int] = (1920, 1080)) -> list[Path]:
    """``count`` clips, motion i cycling through :data:`MOTIONS` over photo i."""
    from PIL import Image

    if not photos:
        raise MediaError(f"no photos of at least {size[0]}x{size[1]} found; pass --photos FILE|DIR")
    if frames < 2:
        raise UsageError(f"--frames {frames}: a clip needs at least 2 frames")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        photo_path, motion = photos[i % len(photos)], MOTIONS[i % len(MOTIONS)]
        with Image.open(photo_path) as im:
            photo = np.asarray(im.convert("RGB"))
        path = out_dir / f"{i:02d}_{photo_path.stem[:40]}_{motion.name}_{size[1]}p.mkv"
        write_lossless(camera_frames(photo, motion, frames, size), path, fps)
        paths.append(path)
    return paths
