"""Shared fixtures: real photos, real H.265 clips made with PyAV, small weights."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

# Children start as from a terminal: a hang-up ends them. Under `nohup pytest` (or any parent that
# ignores SIGHUP) they would inherit "ignored", which mpv keeps and our commands honour
# (mpv_srunet.signals.exit_signals), and every SIGHUP test would wait for a process that lives on.
# Tests of the nohup case start their process with nohup themselves.
if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

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


@pytest.fixture(scope="session", autouse=True)
def _no_real_mpv_config(tmp_path_factory) -> Iterator[None]:
    """No test reads or changes the user's own mpv config: mpv, python-mpv and `mpv-script` get an
    empty temporary MPV_HOME (tests that need a config make their own)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPV_HOME", str(tmp_path_factory.mktemp("mpv_home")))
        yield


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


# --------------------------------------------------------------------------- mpv GPU rendering
# mpv's GPU paths (``--vf=gpu``, ``--vo=gpu``/``gpu-next``) under Xvfb + Mesa llvmpipe fail now and
# then on a loaded machine: "Could not initialize EGL / Could not create offscreen ra context"
# (non-zero exit), or a black or sheared frame with exit 0 and nothing in the log. Every test that
# renders with mpv's GPU goes through :func:`mpv_gpu_render`: a private Xvfb and HOME per attempt,
# the rendered picture validated against what the test expects, bounded retries; the test then
# asserts exactly what it asserted before on a valid picture. The black runs come from float
# intermediate textures (about half of all runs with 6 busy processes on 2 cores; see
# mpv_srunet.evaluation.mpv_scalers.SOFTWARE_BUILTIN_ARGS), which our shader needs: 6 attempts
# make a red test from that alone < 1 % at that load and far less at CI's usual load.

GPU_RENDER_ATTEMPTS = 6


class InvalidRender(Exception):
    """mpv's GPU output is not a rendering of the picture (start failure, no output, black, sheared)."""


@contextlib.contextmanager
def own_xvfb(workdir: Path, screen: str = "640x480x24", timeout: float = 60) -> Iterator[dict[str, str]]:
    """A private Xvfb and private HOME / XDG dirs (the product's own helper, which eval's mpv
    candidates use); yields the environment to run mpv in. A start failure is an :class:`InvalidRender`."""
    from mpv_srunet.evaluation.mpv_scalers import XvfbError, private_display

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not found: install Debian xvfb (./install.sh --dev)")
    try:
        with private_display(workdir, screen, timeout) as env:
            yield env
    except XvfbError as e:  # only the start can raise it
        raise InvalidRender(str(e)) from None


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])


def render_problem(img: np.ndarray, reference: np.ndarray, min_corr: float = 0.9, max_row_levels: float = 32) -> str | None:
    """Why ``img`` cannot be a rendering of ``reference`` (the same picture computed on the CPU), or None.

    Loose on purpose: it tells a failed GPU render (black, flat, sheared or torn rows) from a
    rendering; the test's own assertion then judges the rendering at its usual precision.
    """
    if img.shape != reference.shape:
        return f"size {img.shape[1]}x{img.shape[0]}, expected {reference.shape[1]}x{reference.shape[0]}"
    y, ref = _luma(img), _luma(reference)
    if y.std() < max(1.0, 0.25 * ref.std()):
        return f"flat frame (mean {y.mean():.1f}, std {y.std():.2f} levels; the reference has std {ref.std():.1f})"
    corr = float(np.corrcoef(y.ravel(), ref.ravel())[0, 1])
    if not corr >= min_corr:
        return f"correlation {corr:.3f} with the reference (< {min_corr})"
    rows = np.abs(y - ref).mean(axis=1)
    if rows.max() > max_row_levels:
        return f"row {int(rows.argmax())} off by {rows.max():.1f} levels on average (sheared or torn)"
    return None


def read_first_frame(path: Path) -> np.ndarray:
    """The first picture of an image (PNG screenshot) or a video file, as uint8 RGB."""
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"))
    import av

    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def mpv_gpu_render(args: Sequence[str], out: Path, reference: np.ndarray, *, env: dict[str, str] | None = None,
                   screen: str = "640x480x24", timeout: float = 600, attempts: int = GPU_RENDER_ATTEMPTS) -> np.ndarray:
    """Run ``mpv ARGS`` (GPU rendering, writing ``out``: a ``--o`` video or a screenshot) in its own
    Xvfb and HOME, and return the first picture of ``out``. A start failure, a missing output or a
    picture that :func:`render_problem` rejects against ``reference`` is retried, ``attempts`` in all."""
    mpv = shutil.which("mpv")
    if mpv is None:
        pytest.skip("mpv not found: install Debian mpv (./install.sh --dev)")
    problems = []
    for attempt in range(1, attempts + 1):
        out.unlink(missing_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"mpv-gpu-{attempt}-", dir=out.parent))
        try:
            with own_xvfb(work, screen) as xenv:
                r = subprocess.run([mpv, *args], env={**xenv, **(env or {})}, capture_output=True, text=True,
                                   timeout=timeout, stdin=subprocess.DEVNULL)
            if r.returncode != 0 or not out.exists() or out.stat().st_size == 0:
                raise InvalidRender(f"mpv rc {r.returncode}, output {'written' if out.exists() else 'missing'}: "
                                    f"{(r.stderr or r.stdout).strip()[-600:]}")
            try:
                img = read_first_frame(out)
            except Exception as e:  # half-written or empty output
                raise InvalidRender(f"unreadable output: {type(e).__name__}: {e}") from None
            why = render_problem(img, reference)
            if why is None:
                return img
            problems.append(f"attempt {attempt}: invalid picture: {why}")
        except InvalidRender as e:
            problems.append(f"attempt {attempt}: {e}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if attempt < attempts:  # visible in pytest's warnings summary: how often the GPU path flakes here
            warnings.warn(f"mpv GPU render retried: {problems[-1]}", RetriedRender, stacklevel=2)
    pytest.fail(f"mpv's GPU rendering failed {attempts} times:\n" + "\n".join(problems))


class RetriedRender(UserWarning):
    """A GPU render of mpv was invalid and ran again."""
