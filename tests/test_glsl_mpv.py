"""The generated shader in the real mpv (Xvfb + Mesa llvmpipe) against the torch fused model.

mpv renders with ``--vf=gpu`` into an ffv1 ``bgr0`` file (no YUV round trip,
``--dither-depth=no``); we compare with ``clamp(model(pad_replicate(x)))`` cropped,
which is what the Python filter computes. llvmpipe is slow, so the fast tests use
reduced models (F=8/16: the same op types, split sums forced with a low bind
limit); the full F=64 model is a slow test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mpv_srunet.glsl import GlslOptions, export_glsl
from mpv_srunet.model import SRUNet, SRUNetCfg, reparameterize_model

from conftest import SHARED_ANCHORS, load_photo_rgb, make_h265_clip, mpv_gpu_render

pytestmark = pytest.mark.mpv


@pytest.fixture(scope="module")
def mpv_env(tmp_path_factory) -> dict[str, str]:
    """Extra environment for mpv (each run gets its own Xvfb and HOME on top), with Mesa's shader cache in a temp dir."""
    for tool in ("mpv", "Xvfb"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not found: install Debian mpv and xvfb (./install.sh --dev)")
    cache = tmp_path_factory.mktemp("mesa_cache")
    return {"MESA_SHADER_CACHE_DIR": str(cache), "MESA_GLSL_CACHE_DIR": str(cache)}


def write_ffv1(path: Path, rgb: np.ndarray) -> Path:
    """One lossless RGB frame (ffv1 bgr0 in mkv), so mpv's MAIN is exactly these pixels."""
    import av

    h, w, _ = rgb.shape
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=24)
        s.width, s.height, s.pix_fmt = w, h, "bgr0"
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="bgr0")
        f.pts = 0
        for p in s.encode(f):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def render(
    env: dict[str, str], shader: Path | None, video: Path, size: tuple[int, int], *extra: str,
    expect: np.ndarray, timeout: int = 600,
) -> np.ndarray:
    """Render ``video`` scaled to ``size`` (W, H) with the shader (None: none); the first frame as uint8 RGB.

    ``expect``: the picture the test expects (its CPU reference): a failed GPU render (EGL start
    failure, black or sheared frame) is told from a rendering by it and retried (conftest).
    """
    out = video.with_name(f"{video.stem}_{shader.stem if shader else 'plain'}_{size[0]}x{size[1]}.mkv")
    args = [
        "--no-config", "--msg-level=all=warn", "--demuxer=lavf",
        f"--vf=gpu=w={size[0]}:h={size[1]}", *([f"--glsl-shaders={shader}"] if shader else []), "--dither-depth=no",
        f"--o={out}", "--ovc=ffv1", *extra, str(video),
    ]
    return mpv_gpu_render(args, out, expect, env=env, timeout=timeout)


def cpu_scaled(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic ``rgb`` at ``size`` (W, H): the cheap CPU reference of a plain mpv scale."""
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize(size, Image.BICUBIC)).astype(np.float64)


def torch_reference(model: SRUNet, rgb: np.ndarray) -> np.ndarray:
    """The fused model as the Python filter runs it: edge-replicate to a multiple of 8, crop."""
    h, w, _ = rgb.shape
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    x = F.pad(x, (0, -w % 8, 0, -h % 8), mode="replicate")
    with torch.no_grad():
        y = model(x)[..., : 2 * h, : 2 * w]
    return ((y[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255)


def bicubic_reference(rgb: np.ndarray) -> np.ndarray:
    """The residual branch alone (what the shader would output with a zero network)."""
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    y = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1)
    return ((y[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255)


def fused(n_filters: int, seed: int = 0) -> SRUNet:
    torch.manual_seed(seed)
    return reparameterize_model(SRUNet(SRUNetCfg(n_filters=n_filters), deploy=False)).eval()


def h265_frame(tmp: Path, w: int, h: int) -> np.ndarray:
    """A w x h crop of frame 0 of a real 160x96 H.265 clip (a real photo, CRF 23), decoded by PyAV.

    (x265 refuses frames as small as the test sizes, hence the crop.)
    """
    import av

    clip = make_h265_clip(tmp / "clip.mkv", 160, 96, frames=2, audio=False)
    with av.open(str(clip)) as c:
        rgb = next(c.decode(video=0)).to_ndarray(format="rgb24")
    return np.ascontiguousarray(rgb[:h, :w])


def assert_close(out: np.ndarray, ref: np.ndarray, max_levels: float, what: str) -> None:
    assert out.shape == ref.shape, (out.shape, ref.shape)
    d = np.abs(out.astype(np.float64) - ref)
    assert d.max() <= max_levels and d.mean() < 0.5, f"{what}: max {d.max()} mean {d.mean():.3f} levels"


@pytest.mark.parametrize(
    "variant, size, n_filters, max_binds, source",
    [
        ("fragment", (64, 40), 8, 15, "h265"),  # multiple of 8
        ("fragment", (71, 37), 8, 3, "photo"),  # odd size; bind limit 3 forces split sums in every decoder conv
        ("fragment", (70, 38), 16, 15, "photo"),  # F=16: 8 textures per decoder input
        ("compute", (64, 40), 8, 15, "h265"),
        ("compute", (71, 37), 16, 15, "photo"),  # 2- and 4-group packed textures
        ("compute", (70, 38), 24, 15, "photo"),  # F=24: 3- and 2-group packs, two invocations per layer
    ],
)
def test_mpv_output_matches_torch(mpv_env, tmp_path, variant, size, n_filters, max_binds, source):
    w, h = size
    rgb = h265_frame(tmp_path, w, h) if source == "h265" else load_photo_rgb(w, h)
    model = fused(n_filters)
    shader = tmp_path / f"srunet_{variant}_f{n_filters}_b{max_binds}.glsl"
    shader.write_text(export_glsl(model, options=GlslOptions(max_binds=max_binds, variant=variant)).text)
    ref = torch_reference(model, rgb)
    out = render(mpv_env, shader, write_ffv1(tmp_path / "in.mkv", rgb), (2 * w, 2 * h), expect=ref)
    # The net must matter here, or the test would only check the bicubic residual.
    assert np.abs(ref - bicubic_reference(rgb)).mean() > 2
    assert_close(out, ref, 2, f"{variant} F={n_filters} {w}x{h} (rgba16f)")


@pytest.mark.parametrize("variant", ["fragment", "compute"])
def test_mpv_rgba32f_is_within_one_level(mpv_env, tmp_path, variant):
    rgb = load_photo_rgb(70, 38)
    model = fused(8, seed=1)
    shader = tmp_path / f"srunet_{variant}_f8.glsl"
    shader.write_text(export_glsl(model, options=GlslOptions(variant=variant)).text)
    ref = torch_reference(model, rgb)
    out = render(mpv_env, shader, write_ffv1(tmp_path / "in.mkv", rgb), (140, 76), "--fbo-format=rgba32f", expect=ref)
    assert_close(out, ref, 1, "F=8 70x38 (rgba32f)")


@pytest.mark.parametrize("variant", ["fragment", "compute"])
def test_when_condition_disables_shader_at_1x(mpv_env, tmp_path, variant):
    rgb = load_photo_rgb(64, 40)
    shader = tmp_path / f"srunet_{variant}_f8.glsl"
    shader.write_text(export_glsl(fused(8), options=GlslOptions(variant=variant)).text)
    video = write_ffv1(tmp_path / "in.mkv", rgb)
    out = render(mpv_env, shader, video, (64, 40), expect=rgb.astype(np.float64))
    assert_close(out, rgb.astype(np.float64), 1, "1x with the shader loaded")
    # 1.25x (below --min-scale 1.4): mpv's own scaler only, as without the shader (up to the
    # rgba16f copy of MAIN that mpv makes once a shader hooks it).
    plain = render(mpv_env, None, video, (80, 50), expect=cpu_scaled(rgb, (80, 50))).astype(np.float64)
    assert_close(render(mpv_env, shader, video, (80, 50), expect=plain), plain, 1, "1.25x")


_SCREENSHOT_LUA = """\
-- Take one window screenshot once the paused first frame is shown, then quit.
local done = false
mp.register_event("playback-restart", function()
    if done then return end
    done = true
    mp.add_timeout(0.5, function()
        mp.commandv("screenshot-to-file", mp.get_opt("shot"), "window")
        mp.command("quit")
    end)
end)
"""


# ids avoid the bare word "gpu": conftest skips items with that keyword (the CUDA marker).
@pytest.mark.parametrize("variant", ["fragment", "compute"])
@pytest.mark.parametrize("vo", ["gpu", "gpu-next"], ids=["vo-gpu", "vo-gpu-next"])
def test_playback_window_matches_torch(mpv_env, tmp_path, vo, variant):
    """Real playback (vo=gpu and vo=gpu-next): a window screenshot at exactly 2x."""
    rgb = load_photo_rgb(64, 40)
    model = fused(8, seed=2)
    shader = tmp_path / f"srunet_{variant}_f8.glsl"
    shader.write_text(export_glsl(model, options=GlslOptions(variant=variant)).text)
    video = write_ffv1(tmp_path / "in.mkv", rgb)
    lua, shot = tmp_path / "shot.lua", tmp_path / "shot.png"
    lua.write_text(_SCREENSHOT_LUA)
    args = [
        "--no-config", "--demuxer=lavf",
        f"--vo={vo}", "--gpu-sw", "--pause", "--geometry=128x80", "--no-border", "--osd-level=0",
        "--no-osc", f"--glsl-shaders={shader}", "--dither-depth=no", "--screenshot-format=png",
        f"--script={lua}", f"--script-opts=shot={shot}", str(video),
    ]
    ref = torch_reference(model, rgb)
    out = mpv_gpu_render(args, shot, ref, env=mpv_env, screen="640x480x24", timeout=300)
    assert np.abs(ref - bicubic_reference(rgb)).mean() > 2
    assert_close(out, ref, 2, f"vo={vo} {variant} F=8 64x40")


@pytest.mark.slow
@pytest.mark.timeout(2400)  # a cold compile took 9.4 min on 2 cores shared with 5 other jobs
@pytest.mark.parametrize("variant", ["compute", "fragment"])
def test_full_size_model_matches_torch(mpv_env, tmp_path, variant):
    """The full F=64 network in mpv. Cold llvmpipe compile: about 2.3 CPU-minutes for
    the compute variant (93 passes), 4.3 for the fragment one (585 passes).

    Uses the authors' real 2x weights when ../shared has them (real activations),
    else the shipped default weights, else a random F=64 model.
    """
    from mpv_srunet.weights import default_weights_path, load_model

    authors = SHARED_ANCHORS / "srunet_2x_crf23.pth"
    path = authors if authors.exists() else default_weights_path()
    model, info = load_model(path) if path.exists() else (fused(64), None)
    rgb = load_photo_rgb(64, 40)
    shader = tmp_path / f"srunet_full_{variant}.glsl"
    shader.write_text(export_glsl(model, info, GlslOptions(variant=variant)).text)
    ref = torch_reference(model, rgb)
    out = render(mpv_env, shader, write_ffv1(tmp_path / "in.mkv", rgb), (128, 80), expect=ref, timeout=1100)
    assert_close(out, ref, 2, f"{variant} F=64 ({path.name if info else 'random'}) 64x40")
