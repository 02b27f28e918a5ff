"""Training pairs: ground truth and its x2-downscaled, H.265-encoded, decoded input.

The paper (Vaccaro et al. 2021, sec. 4) trains on frames whose input is the ground
truth downscaled by 2 and compressed with H.265 at CRF 23. We build the same pairs
from any folder of real images and videos:

* **ground truth**: the source frame, Lanczos-downscaled to at most ``gt_width``
  pixels wide (many photos are large JPEGs; downscaling hides their own block
  artifacts) and cropped to a multiple of 16;
* **input**: RGB -> YUV 4:2:0 BT.709 limited range with a bicubic x2 downscale in
  one swscale call (what ``ffmpeg -vf scale`` does before an encoder), encoded by
  libx265 through PyAV at each requested CRF, decoded and converted back with the
  same matrix. Images become one-frame clips (I-frames); videos are encoded as
  clips, so their pairs also carry P/B-frame artifacts.

Storage (one folder, see :class:`PairStore`): per split, ``gt.npy`` and ``lr.npy``
are flat ``uint8`` arrays (memory-mapped when training, so tens of 1080p frames cost
no RAM) and ``pairs.npy`` is an ``int64`` table with one row per pair:
``gt_offset, gt_h, gt_w, lr_offset, crf, source_id``. ``meta.json`` records sources,
splits, CRFs, skipped files and options. Nothing is stored as JPEG: it would add
its own artifacts.

The validation split is chosen per *source* by a hash of its name (variants such as
``Elephants_3840x2160.jpg`` hash together), so training never sees a validation
picture, not even at another resolution.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from fractions import Fraction
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import MediaError, UsageError
from ..colour import Colour, frame_to_rgb24, rgb24_to_yuv420
from ..video import mux

log = logging.getLogger(__name__)

STORE_VERSION = 1
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_EXTS = frozenset({".avi", ".mp4", ".mkv", ".mov", ".webm", ".y4m", ".ts", ".m4v", ".mpg", ".mpeg"})
#: Ground-truth sizes are cropped to this multiple: the input (half size) then stays a
#: multiple of 8, which the network and 4:2:0 chroma both need.
GT_MULTIPLE = 16
SPLITS = ("train", "val")


@dataclass(frozen=True)
class PrepareOptions:
    """How ``train prepare`` builds pairs."""

    crfs: tuple[int, ...] = (23,)  # training CRFs; the paper uses 23, a range (18..30) adds robustness
    val_crf: int = 23  # the validation split is encoded at this CRF only (the paper's setting)
    gt_width: int = 1920  # wider sources are Lanczos-downscaled to this width
    min_downscale: float = 1.0  # training images are downscaled at least this much (1.5: averages away JPEG blocks)
    val_fraction: float = 0.15  # share of sources (by name hash) kept for validation
    val_max_gt: tuple[int, int] = (1920, 1080)  # validation GT is centre-cropped to at most W x H (1080p)
    min_gt: int = 192  # sources smaller than this (a 96x96 input patch) are skipped
    preset: str = "medium"  # x265 preset (ffmpeg's default)
    video_max_frames: int = 96  # frames decoded per video
    video_stride: int = 4  # keep every Nth pair of a video (neighbours are near-duplicates)

    def __post_init__(self) -> None:
        for c in (*self.crfs, self.val_crf):
            if not 0 <= int(c) <= 51:
                raise UsageError(f"CRF {c} out of range; expected 0..51 (x265), e.g. --crf 23 or --crf 18,23,28")
        if not self.crfs:
            raise UsageError("no CRF given; expected e.g. --crf 23 or --crf 18,23,28")
        if self.video_max_frames < 1 or self.video_stride < 1:
            raise UsageError(f"--video-frames {self.video_max_frames} / --video-stride {self.video_stride}: expected whole numbers >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UsageError(f"--val-fraction {self.val_fraction} out of range; expected 0 <= f < 1")


@dataclass
class PrepareReport:
    """What ``train prepare`` did: counts per split and the files it skipped (with why)."""

    out: Path
    pairs: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    sources: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    skipped: list[tuple[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------- sources


def find_sources(roots: list[Path]) -> list[Path]:
    """All image and video files under ``roots`` (recursive, sorted), or a clear error."""
    found: list[Path] = []
    for root in roots:
        if not root.exists():
            raise UsageError(f"{root}: no such file or folder; expected a folder of images/videos")
        if root.is_file():
            found.append(root)
            continue
        try:
            files = sorted(p for p in root.rglob("*") if p.is_file())
        except OSError as e:
            raise UsageError(f"{root}: cannot read folder ({e.strerror}); check its permissions") from None
        found += [p for p in files if p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS]
    if not found:
        exts = " ".join(sorted(IMAGE_EXTS | VIDEO_EXTS))
        raise UsageError(f"no images or videos found in {', '.join(map(str, roots))}; expected files ending in {exts}")
    return found


def source_group(path: Path) -> str:
    """Name shared by resolution variants of one picture (``Elephants_3840x2160`` -> ``elephants``)."""
    return re.sub(r"[_-]?\d{3,5}x\d{3,5}$", "", path.stem).lower()


def split_of(path: Path, val_fraction: float) -> str:
    """Deterministic train/val assignment by a hash of the source group."""
    h = int.from_bytes(hashlib.sha1(source_group(path).encode()).digest()[:4], "big")
    return "val" if (h / 2**32) < val_fraction else "train"


# --------------------------------------------------------------------------- frames


def crop_multiple(rgb: np.ndarray, multiple: int = GT_MULTIPLE, max_wh: tuple[int, int] | None = None) -> np.ndarray:
    """Centre-crop to a multiple of ``multiple`` (and to at most ``max_wh``)."""
    h, w = rgb.shape[:2]
    if max_wh is not None:
        w, h = min(w, max_wh[0]), min(h, max_wh[1])
    w, h = w - w % multiple, h - h % multiple
    y0, x0 = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
    return np.ascontiguousarray(rgb[y0 : y0 + h, x0 : x0 + w])


def fit_width(rgb: np.ndarray, gt_width: int) -> np.ndarray:
    """Lanczos-downscale to ``gt_width`` wide when wider (never upscale)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    if w <= gt_width:
        return rgb
    nh = round(h * gt_width / w)
    return np.asarray(Image.fromarray(rgb).resize((gt_width, nh), Image.Resampling.LANCZOS))


def load_image(path: Path) -> np.ndarray:
    """Decode an image to RGB uint8 (alpha dropped); MediaError when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise MediaError(f"{path}: not a readable image ({e})") from None


def iter_video_frames(path: Path, max_frames: int) -> Iterator[np.ndarray]:
    """Decode up to ``max_frames`` RGB frames of a video; MediaError when unreadable."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(c.decode(stream)):
                if i >= max_frames:
                    break
                yield frame_to_rgb24(frame)  # the player's reading of the frame
    except av.FFmpegError as e:
        raise MediaError(f"{path}: not a readable video ({e})") from None


# --------------------------------------------------------------------------- degradation


#: the pairs' coding colour (the player reads it back with the same flags: swscale's default
#: 4:2:0 -> RGB path darkens real photos by 1-2 levels, and pairs made with it would teach the
#: model to brighten every frame)
_CODED = Colour("bt709", "limited")


def _to_yuv_half(rgb: np.ndarray):  # -> av.VideoFrame
    """RGB -> x2 bicubic-downscaled YUV 4:2:0, BT.709 limited range, in one swscale call."""
    h, w = rgb.shape[:2]
    return rgb24_to_yuv420(rgb, _CODED, (w // 2, h // 2))


def _yuv_to_rgb(frame) -> np.ndarray:
    return frame_to_rgb24(frame, _CODED)


def plain_downscale(rgb: np.ndarray) -> np.ndarray:
    """The input without compression (same scaler and 4:2:0 round trip); for tests and ablations."""
    return _yuv_to_rgb(_to_yuv_half(rgb))


def x265_roundtrip(frames: list[np.ndarray], crf: int, preset: str = "medium", fps: int = 25) -> list[np.ndarray]:
    """Downscale x2, encode with libx265 at ``crf``, decode: the paper's degraded inputs.

    ``frames`` are same-sized RGB uint8 ground-truth frames (H, W multiples of 4);
    one call is one clip, so frames after the first may be P/B frames. A failed
    encode is reported as a MediaError so ``prepare`` skips and counts that source.
    """
    import av

    try:
        return _x265_once(frames, crf, preset, fps)
    except av.FFmpegError as e:
        raise MediaError(f"libx265 round trip failed at CRF {crf} ({e})") from None


def _x265_once(frames: list[np.ndarray], crf: int, preset: str, fps: int) -> list[np.ndarray]:
    """One encode/decode through an in-memory raw HEVC (Annex B) stream: no muxer timestamps."""
    import av
    from av.video.reformatter import ColorRange, Colorspace

    h, w = frames[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, "w", format="hevc") as out:
        stream = out.add_stream("libx265", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w // 2, h // 2, "yuv420p"
        stream.codec_context.colorspace = Colorspace.ITU709
        stream.codec_context.color_range = ColorRange.MPEG
        stream.options = {"crf": str(int(crf)), "preset": preset, "x265-params": "log-level=error"}
        for i, rgb in enumerate(frames):
            yuv = _to_yuv_half(rgb)
            yuv.pts, yuv.time_base = i, Fraction(1, fps)
            mux(out, stream.encode(yuv))
        mux(out, stream.encode())
    buf.seek(0)
    with av.open(buf, format="hevc") as inp:
        decoded = [_yuv_to_rgb(f) for f in inp.decode(video=0)]
    if len(decoded) != len(frames):
        raise MediaError(f"x265 round trip returned {len(decoded)} frames for {len(frames)}")
    return decoded


# --------------------------------------------------------------------------- writing


def _raw_to_npy(raw: Path, npy: Path) -> None:
    """Wrap a raw uint8 file in an .npy header (so np.load(mmap_mode="r") maps it)."""
    n = raw.stat().st_size
    with open(npy, "wb") as dst, open(raw, "rb") as src:
        np.lib.format.write_array_header_1_0(dst, {"descr": "|u1", "fortran_order": False, "shape": (n,)})
        shutil.copyfileobj(src, dst, 16 << 20)
    raw.unlink()


class _SplitWriter:
    """Appends frames of one split to raw files; :meth:`close` turns them into .npy."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        self._gt = open(folder / "gt.raw", "wb")
        self._lr = open(folder / "lr.raw", "wb")
        self.rows: list[tuple[int, int, int, int, int, int]] = []

    def add_gt(self, gt: np.ndarray) -> tuple[int, int, int]:
        off = self._gt.tell()
        self._gt.write(np.ascontiguousarray(gt, dtype=np.uint8).tobytes())
        return off, gt.shape[0], gt.shape[1]

    def add_pair(self, gt_ref: tuple[int, int, int], lr: np.ndarray, crf: int, source_id: int) -> None:
        off, h, w = gt_ref
        if lr.shape != (h // 2, w // 2, 3):
            raise MediaError(f"input {lr.shape} does not match ground truth {(h, w, 3)} / 2")
        lr_off = self._lr.tell()
        self._lr.write(np.ascontiguousarray(lr, dtype=np.uint8).tobytes())
        self.rows.append((off, h, w, lr_off, int(crf), source_id))

    def close(self) -> int:
        self._gt.close()
        self._lr.close()
        for name in ("gt", "lr"):
            _raw_to_npy(self.folder / f"{name}.raw", self.folder / f"{name}.npy")
        np.save(self.folder / "pairs.npy", np.asarray(self.rows, dtype=np.int64).reshape(-1, 6))
        return len(self.rows)


def _gt_frames(path: Path, split: str, opts: PrepareOptions) -> tuple[str, list[np.ndarray]]:
    """(kind, ground-truth frames) of one source; MediaError when unreadable or too small."""
    max_wh = opts.val_max_gt if split == "val" else None
    width = opts.gt_width
    if path.suffix.lower() in IMAGE_EXTS:
        kind, frames = "image", [load_image(path)]
        if split == "train":  # validation stays at the 1080p protocol
            width = min(width, int(frames[0].shape[1] / max(opts.min_downscale, 1.0)))
    else:
        kind, frames = "video", list(iter_video_frames(path, opts.video_max_frames))
        if not frames:
            raise MediaError(f"{path}: no decodable frames")
    frames = [crop_multiple(fit_width(f, width), max_wh=max_wh) for f in frames]
    h, w = frames[0].shape[:2]
    if min(h, w) < opts.min_gt:
        raise MediaError(f"{path}: {w}x{h} is smaller than one {opts.min_gt}x{opts.min_gt} training patch")
    return kind, frames


def _add_source(writer: _SplitWriter, sid: int, kind: str, frames: list[np.ndarray], crfs: tuple[int, ...], opts: PrepareOptions) -> int:
    keep = range(0, len(frames), opts.video_stride if kind == "video" else 1)
    refs = {i: writer.add_gt(frames[i]) for i in keep}
    n = 0
    for crf in crfs:
        decoded = x265_roundtrip(frames, crf, opts.preset)
        for i in keep:
            writer.add_pair(refs[i], decoded[i], crf, sid)
            n += 1
    return n


def prepare(
    roots: list[Path],
    out: Path,
    opts: PrepareOptions,
    *,
    val_roots: list[Path] | None = None,
    force: bool = False,
    progress: bool = True,
) -> PrepareReport:
    """Build the pair store ``out`` from the images/videos under ``roots``.

    With ``val_roots`` the validation split is exactly those files, and files of
    ``roots`` showing the same pictures are left out of training; otherwise the
    split is chosen by :func:`split_of`.

    Written into a temporary sibling folder and renamed at the end, so a failure or
    Ctrl-C never leaves a half-written store. Unreadable or too-small files are
    skipped and counted; no usable file at all is an error.
    """
    from tqdm import tqdm

    if val_roots:
        val = find_sources(val_roots)
        held_out = {source_group(p) for p in val}  # also keeps other resolutions of a val picture out
        train = [p for p in find_sources(roots) if source_group(p) not in held_out]
        sources = [(p, "train") for p in train] + [(p, "val") for p in val]
    else:
        sources = [(p, split_of(p, opts.val_fraction)) for p in find_sources(roots)]
    empty_dir = out.is_dir() and not any(out.iterdir())
    if out.exists() and not empty_dir and not force:
        raise UsageError(f"{out}: already exists; pass --force to replace it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    report = PrepareReport(out=out)
    try:
        writers = {s: _SplitWriter(tmp / s) for s in SPLITS}
        meta_sources = []
        for path, split in tqdm(sources, desc="prepare", unit="file", disable=not progress):
            try:
                kind, frames = _gt_frames(path, split, opts)
                crfs = opts.crfs if split == "train" else (opts.val_crf,)
                n = _add_source(writers[split], len(meta_sources), kind, frames, crfs, opts)
            except MediaError as e:
                log.warning("skipped %s", e)
                report.skipped.append((str(path), str(e)))
                continue
            meta_sources.append({"path": str(path), "split": split, "kind": kind, "size": list(frames[0].shape[1::-1]), "pairs": n})
            report.pairs[split] += n
            report.sources[split].append(str(path))
        for w in writers.values():
            w.close()
        if report.pairs["train"] == 0:
            raise UsageError(f"no usable training pair from {len(sources)} file(s) ({len(report.skipped)} skipped); expected real images >= {opts.min_gt}px")
        _write_meta(tmp, opts, meta_sources, report)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _write_meta(folder: Path, opts: PrepareOptions, sources: list[dict], report: PrepareReport) -> None:
    meta = {
        "version": STORE_VERSION,
        "options": asdict(opts),
        "sources": sources,
        "pairs": report.pairs,
        "skipped": [{"path": p, "why": why} for p, why in report.skipped],
        "degradation": "RGB -> bicubic x2 downscale to YUV420 BT.709 limited (swscale) -> libx265 CRF -> decode",
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``, replacing an old store only once the new one is complete."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- reading


class PairStore:
    """Read side of a prepared folder: memory-mapped frames of one split."""

    def __init__(self, folder: Path, split: str = "train") -> None:
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise UsageError(f"{folder}: not a prepared data folder (no meta.json); run `mpv-srunet train prepare` first")
        try:
            self.meta = json.loads(meta_path.read_text())
            d = folder / split
            self.rows = np.load(d / "pairs.npy")
            self._gt = np.load(d / "gt.npy", mmap_mode="r") if self.rows.size else np.zeros(0, np.uint8)
            self._lr = np.load(d / "lr.npy", mmap_mode="r") if self.rows.size else np.zeros(0, np.uint8)
        except (OSError, ValueError, json.JSONDecodeError) as e:
            raise UsageError(f"{folder}: damaged data folder ({e}); run `mpv-srunet train prepare --force` again") from None
        if self.meta.get("version") != STORE_VERSION:
            raise UsageError(f"{folder}: data format {self.meta.get('version')}, expected {STORE_VERSION}; prepare it again")
        self.folder, self.split = folder, split

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(input HxWx3, ground truth 2Hx2Wx3) uint8 views of pair ``i``."""
        off, h, w, lr_off, _crf, _sid = (int(v) for v in self.rows[i])
        gt = self._gt[off : off + h * w * 3].reshape(h, w, 3)
        lr = self._lr[lr_off : lr_off + (h // 2) * (w // 2) * 3].reshape(h // 2, w // 2, 3)
        return lr, gt

    def crf(self, i: int) -> int:
        return int(self.rows[i, 4])

    def source(self, i: int) -> str:
        return str(self.meta["sources"][int(self.rows[i, 5])]["path"])


# --------------------------------------------------------------------------- grain


def grain_level(rgb: np.ndarray, block: int = 32) -> float:
    """How much fine, camera-like grain a ground-truth frame carries in its flat areas.

    Luma (BT.709 weights) minus its Gaussian blur (sigma 1.5 px) is the fine detail;
    its standard deviation is taken in ``block`` x ``block`` tiles, and the median over
    the flattest fifth of the tiles (lowest mean gradient of the sigma-4 blurred luma)
    is the frame's grain level, in grey levels. Most camera photos and video score about
    0.5-3 (sensor noise, film grain, fine texture that survives everywhere; a few smooth
    photos less); rendered wallpapers, gradients and vector art 0-0.4: what a network
    trained mostly on them learns is that flat stays flat, and it wipes real grain away
    (docs/training.md, "Natural photos: grain"). A frame smaller than one tile, or
    uniform, scores 0.
    """
    from scipy.ndimage import gaussian_filter  # scipy: a dependency of the train extra

    y = np.asarray(rgb, dtype=np.float32)[..., :3] @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    h, w = (y.shape[0] // block) * block, (y.shape[1] // block) * block
    if h == 0 or w == 0:
        return 0.0
    fine = y - gaussian_filter(y, 1.5)
    gy, gx = np.gradient(gaussian_filter(y, 4.0))
    grad = np.hypot(gy, gx)

    def tiles(a: np.ndarray) -> np.ndarray:
        return a[:h, :w].reshape(h // block, block, w // block, block)

    std = tiles(fine).std(axis=(1, 3)).ravel()
    flatness = tiles(grad).mean(axis=(1, 3)).ravel()
    flat = std[flatness <= np.percentile(flatness, 20)]
    return float(np.median(flat)) if flat.size else 0.0


def source_grain(store: PairStore) -> dict[int, float]:
    """:func:`grain_level` of each source's first ground-truth frame in ``store``, by source id."""
    out: dict[int, float] = {}
    for i in range(len(store)):
        sid = int(store.rows[i, 5])
        if sid not in out:
            out[sid] = grain_level(store.pair(i)[1])
    return out


class PatchSampler:
    """Random aligned patch pairs with horizontal flips only (the paper: no rotations).

    Pairs are drawn in proportion to their area, so a big photo gives more patches
    than a small video frame. All randomness comes from ``rng`` (a numpy Generator
    whose state the checkpoint saves), so a resumed run draws the same batches.
    ``min_grain`` > 0 draws only from sources whose :func:`grain_level` reaches it
    (natural photos and video; ``train settle --min-grain``).
    """

    def __init__(self, store: PairStore, patch: int = 96, scale: int = 2, min_grain: float = 0.0) -> None:
        if len(store) == 0:
            raise UsageError(f"{store.folder}: the {store.split} split holds no pairs")
        self.store, self.patch, self.scale = store, patch, scale
        self.sources = sorted(set(int(s) for s in store.rows[:, 5]))
        self.index = np.arange(len(store))  # the pairs drawn from, in the store's order
        if not 0 <= min_grain < float("inf"):
            raise UsageError(f"--min-grain {min_grain}: expected a number >= 0")
        if min_grain > 0:
            grain = source_grain(store)
            self.sources = [s for s in self.sources if grain[s] >= min_grain]
            if not self.sources:
                raise UsageError(f"{store.folder}: no {store.split} source has grain >= {min_grain:g} "
                                 f"(the most is {max(grain.values()):.2f}); lower --min-grain")
            self.index = self.index[np.isin(store.rows[:, 5], self.sources)]
        rows = store.rows[self.index]
        hs, ws = rows[:, 1] // scale, rows[:, 2] // scale
        ok = (hs >= patch) & (ws >= patch)
        if not ok.any():
            raise UsageError(f"{store.folder}: every input frame is smaller than a {patch}x{patch} patch; use a smaller --patch")
        area = np.where(ok, (hs - patch + 1) * (ws - patch + 1), 0).astype(np.float64)
        self.p = area / area.sum()

    def batch(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(inputs n x P x P x 3, targets n x sP x sP x 3) uint8."""
        p, s = self.patch, self.scale
        xs = np.empty((n, p, p, 3), np.uint8)
        ys = np.empty((n, p * s, p * s, 3), np.uint8)
        for k, i in enumerate(rng.choice(len(self.p), size=n, p=self.p)):
            lr, gt = self.store.pair(int(self.index[i]))
            y0 = int(rng.integers(0, lr.shape[0] - p + 1))
            x0 = int(rng.integers(0, lr.shape[1] - p + 1))
            a = lr[y0 : y0 + p, x0 : x0 + p]
            b = gt[y0 * s : (y0 + p) * s, x0 * s : (x0 + p) * s]
            if rng.random() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
            xs[k], ys[k] = a, b
        return xs, ys


class MemoryPairs:
    """In-memory pairs with the read interface of :class:`PairStore` (used by ``finetune``)."""

    def __init__(self, lrs: list[np.ndarray], gts: list[np.ndarray], crf: int, name: str = "memory") -> None:
        self.lrs, self.gts = lrs, gts
        self.rows = np.asarray([(0, g.shape[0], g.shape[1], 0, crf, 0) for g in gts], dtype=np.int64).reshape(-1, 6)
        self.folder, self.split, self.name = Path(name), "train", name

    def __len__(self) -> int:
        return len(self.gts)

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.lrs[i], self.gts[i]

    def crf(self, i: int) -> int:
        return int(self.rows[i, 4])

    def source(self, i: int) -> str:
        return self.name
