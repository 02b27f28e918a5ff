"""Reference material in: videos, single images or folders of images, as RGB frames.

Every reference is brought to the target size (default 1920x1080): larger ones are
Lanczos-downscaled (to cover, then centre-cropped when the aspect differs); smaller
ones are refused, since upscaling a reference would invent the very detail we measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import MediaError, UsageError
from ..colour import frame_to_rgb24

#: The ground truth is held in memory (every candidate is compared with it): refuse beyond this.
MAX_BYTES = 8 << 30
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Reference:
    """Ground-truth frames of one reference, at the target size."""

    name: str
    source: str
    frames: list[np.ndarray]  # uint8 HxWx3 RGB, all the same size
    fps: float
    is_video: bool  # False for images: no temporal metric


def parse_size(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080); both multiples of 4 (the 2x-down frame must be 4:2:0-even)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {text!r}: expected WIDTHxHEIGHT such as 1920x1080") from None
    if w < 64 or h < 64 or w % 4 or h % 4:
        raise UsageError(f"--size {text}: width and height must be multiples of 4 and at least 64")
    return w, h


def fit_to_size(rgb: np.ndarray, size: tuple[int, int] | None, source: str) -> np.ndarray:
    """Lanczos-downscale (cover + centre crop) to ``size``; refuse anything smaller. None: as is."""
    from PIL import Image

    if size is None:
        return rgb
    tw, th = size
    h, w = rgb.shape[:2]
    if w < tw or h < th:
        raise MediaError(
            f"{source}: reference is {w}x{h}, smaller than the {tw}x{th} target (2x the {tw // 2}x{th // 2} "
            "low-resolution input); use a larger reference or a smaller --size"
        )
    if (w, h) == (tw, th):
        return rgb
    s = max(tw / w, th / h)
    sw, sh = max(tw, round(w * s)), max(th, round(h * s))
    img = Image.fromarray(rgb).resize((sw, sh), Image.LANCZOS)
    x0, y0 = (sw - tw) // 2, (sh - th) // 2
    return np.asarray(img.crop((x0, y0, x0 + tw, y0 + th)))


def load_reference(path: str, size: tuple[int, int] | None, max_frames: int | None = None) -> Reference:
    """Read a video, an image or a folder of images as a :class:`Reference` (``size`` None: native)."""
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{path}: no such file or folder")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise MediaError(f"{path}: folder holds no images ({', '.join(IMAGE_EXTS)})")
        frames = [fit_to_size(_read_image(f), size, str(f)) for f in files[:max_frames]]
        return Reference(p.name, str(p), frames, 1.0, False)
    if p.suffix.lower() in IMAGE_EXTS:
        return Reference(p.stem, str(p), [fit_to_size(_read_image(p), size, str(p))], 1.0, False)
    frames, fps = [], 24.0
    for rgb, fps in _decode_video(p, max_frames):
        frames.append(fit_to_size(rgb, size, str(p)))
        if len(frames) * frames[0].nbytes > MAX_BYTES:
            raise MediaError(f"{path}: more than {MAX_BYTES >> 30} GiB of frames at {frames[0].shape[1]}x"
                             f"{frames[0].shape[0]} ({len(frames)} frames); evaluate a part with --frames N")
    if not frames:
        raise MediaError(f"{path}: no decodable video frames")
    return Reference(p.stem, str(p), frames, fps, len(frames) > 1)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise MediaError(f"{path}: cannot read as an image ({e})") from None


def _decode_video(path: Path, max_frames: int | None) -> Iterator[tuple[np.ndarray, float]]:
    """Yield (RGB uint8 frame, fps), converting with each frame's own matrix and range."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{path}: cannot open as video ({e})") from None
    with container:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video stream")
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        fps = float(vs.average_rate or vs.guessed_rate or 24)
        n = 0
        for frame in container.decode(vs):
            if max_frames is not None and n >= max_frames:
                break
            yield frame_to_rgb24(frame), fps
            n += 1


