"""Shared fixtures: real photos, real H.265 clips made with PyAV, small weights."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_ANCHORS = REPO.parent / "shared" / "anchors" / "fast-sr-unet"
#: Real photos (Debian lomiri-wallpapers-16.04, CC-BY-4.0 / CC-BY-SA-4.0; install.sh --dev installs them).
PHOTO_DIR = Path("/usr/share/backgrounds")
PHOTO_NAME = "aitzgorri_by_Aitzol_Berasategi.jpg"


def _photo_path() -> Path:
    p = PHOTO_DIR / PHOTO_NAME
    if not p.exists():
        cands = sorted(PHOTO_DIR.glob("*.jpg"))
        if not cands:
            pytest.skip("no real photos: install Debian lomiri-wallpapers-16.04 (./install.sh --dev)")
        p = cands[0]
    return p


@pytest.fixture(scope="session")
def real_photo() -> Path:
    """Path of a real >= 1080p photo."""
    return _photo_path()


def load_photo_rgb(width: int, height: int, path: Path | None = None) -> np.ndarray:
    """A real photo, Lanczos-resized to cover (width, height) and centre-cropped: uint8 HxWx3."""
    from PIL import Image

    img = Image.open(path or _photo_path()).convert("RGB")
    s = max(width / img.width, height / img.height)
    img = img.resize((max(width, round(img.width * s)), max(height, round(img.height * s))), Image.LANCZOS)
    x0, y0 = (img.width - width) // 2, (img.height - height) // 2
    return np.asarray(img.crop((x0, y0, x0 + width, y0 + height)))


@pytest.fixture(scope="session")
def photo_rgb_540p() -> np.ndarray:
    """960x540 uint8 RGB crop of a real photo."""
    return load_photo_rgb(960, 540)


def make_h265_clip(
    path: Path,
    width: int = 960,
    height: int = 540,
    frames: int = 24,
    fps: int = 24,
    crf: int = 23,
    audio: bool = True,
    pix_fmt: str = "yuv420p",
    codec: str = "libx265",
) -> Path:
    """A real H.265 clip: a slow pan (2 px/frame) over a real photo, BT.709 limited,
    with an AAC tone track when ``audio``. Made with PyAV."""
    import av

    from mpv_srunet.video import mux

    src = load_photo_rgb(width + 2 * frames + 2, height)
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        vs.codec_context.colorspace = 1
        vs.codec_context.color_range = 1
        if codec == "libx265":
            vs.options = {"crf": str(crf), "preset": "ultrafast", "x265-params": "log-level=error"}
        a_s = None
        if audio:
            a_s = out.add_stream("aac", rate=48000)
            a_s.layout = "stereo"
        for i in range(frames):
            rgb = np.ascontiguousarray(src[:, 2 * i: 2 * i + width])
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format=pix_fmt, dst_colorspace="itu709", dst_color_range="MPEG")
            f.pts = i
            f.time_base = Fraction(1, fps)
            mux(out, vs.encode(f))
        mux(out, vs.encode())
        if a_s is not None:
            _write_tone(out, a_s, seconds=frames / fps)
    return path


def _write_tone(out, stream, seconds: float) -> None:
    import av

    rate, n = 48000, 1024
    total = int(rate * seconds)
    for start in range(0, total, n):
        t = (np.arange(start, min(start + n, total)) / rate).astype(np.float32)
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.pts = start
        for p in stream.encode(frame):
            out.mux(p)
    for p in stream.encode():
        out.mux(p)


@pytest.fixture(scope="session")
def h265_540p_clip(tmp_path_factory) -> Path:
    """A real 960x540 H.265 mkv (24 frames at 24 fps, CRF 23) with an AAC audio track."""
    return make_h265_clip(tmp_path_factory.mktemp("clips") / "pan_540p.mkv")


@pytest.fixture(scope="session")
def h265_small_clip(tmp_path_factory) -> Path:
    """A real 160x96 H.265 mkv (12 frames) with audio: for end-to-end tests that run the model."""
    return make_h265_clip(tmp_path_factory.mktemp("clips") / "pan_small.mkv", 160, 96, frames=12)


def _save_random(path: Path, **cfg) -> Path:
    import torch

    from mpv_srunet.model import create_model, reparameterize_model
    from mpv_srunet.weights import save_weights

    torch.manual_seed(0)
    m = create_model("default", **cfg)
    return save_weights(path, reparameterize_model(m), {"provenance": "random init (tests)"})


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    """safetensors of a randomly initialised deploy-form `default` (F=64) model."""
    return _save_random(tmp_path_factory.mktemp("w") / "random_default.safetensors")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """safetensors of a random deploy-form F=16 model (fast)."""
    return _save_random(tmp_path_factory.mktemp("w") / "tiny.safetensors", n_filters=16)


@pytest.fixture(scope="session")
def shared_anchors() -> Path:
    """The paper authors' checkpoints (../shared); skips when absent."""
    if not (SHARED_ANCHORS / "srunet_2x_crf23.pth").exists():
        pytest.skip(f"authors' checkpoints not found at {SHARED_ANCHORS}")
    return SHARED_ANCHORS


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests cleanly where torch sees no CUDA device."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
