"""The frame filter: padding, colour, backends agreeing, the Python API."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from mpv_srunet import Upscaler
from mpv_srunet.backends import AUTO_ORDER, available_backends, create_backend
from mpv_srunet.errors import BackendError, MediaError
from mpv_srunet.colour import Colour, float_to_frame, frame_colour, frame_to_float, frame_to_rgb24, sws_flags
from mpv_srunet.model import create_model
from mpv_srunet.weights import load_model

_RANGE = {"MPEG": "limited", "JPEG": "full"}  # swscale's range names -> ours


@pytest.fixture(scope="module")
def up32(tiny_weights):
    return Upscaler(tiny_weights, backend="torch-cpu", precision="fp32")


@pytest.mark.parametrize("h,w", [(2, 2), (1079 // 8, 1919 // 8), (17, 9), (64, 64)])
def test_odd_sizes_pad_by_edge_and_crop(up32, tiny_weights, h, w):
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = up32.upscale(rgb)
    assert out.shape == (2 * h, 2 * w, 3) and out.dtype == np.uint8
    # equals running the model on the edge-replicated frame and cropping
    model, _ = load_model(tiny_weights)
    ph, pw = (-h) % 8, (-w) % 8
    x = torch.from_numpy(np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        ref = model(x)[0, :, : 2 * h, : 2 * w].permute(1, 2, 0).numpy()
    ref8 = np.clip(np.rint((ref + 1) * 127.5), 0, 255)
    assert np.abs(out.astype(int) - ref8).max() <= 1


def test_real_photo_through_each_cpu_backend(tiny_weights, photo_rgb_540p):
    crop = photo_rgb_540p[100:172, 200:296]
    outs = {}
    for name, opts in [("torch-cpu", {"precision": "fp32"}), ("torch-cpu", {"precision": "bf16"}), ("onnxruntime", {})]:
        with Upscaler(tiny_weights, backend=name, **opts) as up:
            outs[up.backend_name] = up.upscale(crop).astype(int)
    ref = outs.pop("torch-cpu (fp32)")
    for name, o in outs.items():
        diff = np.abs(o - ref)
        assert diff.mean() < 0.5 and diff.max() <= 3, name  # bf16: < 1 level on average
    assert np.abs(outs["onnxruntime (CPU)"] - ref).max() <= 1


def test_batch_equals_single(up32, photo_rgb_540p):
    crops = [photo_rgb_540p[i * 40: i * 40 + 40, :56] for i in range(3)] + [photo_rgb_540p[:24, :24]]
    up32.batch_size = 3
    batch = up32.upscale_batch(crops)
    for c, b in zip(crops, batch):
        assert np.array_equal(up32.upscale(c), b)


@pytest.mark.parametrize("fmt", ["yuv420p", "yuv420p10le", "nv12", "gray", "rgb24", "yuvj420p"])
@pytest.mark.parametrize("matrix,rng", [("itu709", "MPEG"), ("itu601", "JPEG")])
def test_colour_round_trip(photo_rgb_540p, fmt, matrix, rng):
    """RGB -> frame (tagged) -> our float RGB -> frame -> RGB stays put (chroma subsampling aside)."""
    rgb = np.ascontiguousarray(photo_rgb_540p[:64, :96])
    f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt, dst_colorspace=matrix, dst_color_range=rng)
    if fmt not in ("rgb24",):
        f.colorspace = {"itu709": 1, "itu601": 6}[matrix]
        f.color_range = {"MPEG": 1, "JPEG": 2}[rng] if fmt != "yuvj420p" else 2
    c = frame_colour(f)
    assert not c.guessed
    x = frame_to_float(f, c)
    back = float_to_frame(x, f, c)
    assert back.format.name == fmt and (back.colorspace, back.color_range) == (f.colorspace, f.color_range)
    if "10" in fmt:  # swscale's rgb48 reading of 10-bit is 0.4 % dark (see the tests below)
        b = (frame_to_float(back, c) + 1) * 127.5
    else:
        b = frame_to_rgb24(back, c)
    ours = np.rint((x + 1) * 127.5)
    assert np.abs(ours - b).mean() < 1.0  # frame -> float -> frame -> RGB is stable
    if fmt != "gray":  # and close to the RGB the frame was made from (4:2:0 loses some chroma)
        assert np.abs(ours - rgb).mean() < (1.0 if fmt in ("rgb24",) else 2.0)


def test_ten_bit_keeps_precision(photo_rgb_540p):
    rgb16 = (photo_rgb_540p[:32, :32].astype(np.uint16) * 257)
    f = av.VideoFrame.from_ndarray(rgb16, format="rgb48le").reformat(format="yuv420p10le", dst_colorspace="itu709",
                                                                      dst_color_range="MPEG")
    f.colorspace, f.color_range = 1, 1
    x = frame_to_float(f)
    levels = np.unique(np.rint((x + 1) * 32767.5) % 257)
    assert len(levels) > 8  # not just 8-bit values scaled up


def _planes16(frame: av.VideoFrame) -> list[np.ndarray]:
    """Writable (h, samples) views of a 16-bit frame's planes (p010's chroma plane holds U and V)."""
    per = [sum(c.plane == i for c in frame.format.components) for i in range(len(frame.planes))]
    return [np.frombuffer(p, np.uint16).reshape(p.height, -1)[:, : p.width * n] for p, n in zip(frame.planes, per)]


@pytest.mark.parametrize("fmt,bits,shift", [("yuv420p10le", 10, 0), ("p010le", 10, 6), ("yuv422p12le", 12, 0),
                                            ("gray10le", 10, 0), ("yuv444p16le", 16, 0)])
@pytest.mark.parametrize("rng", ["MPEG", "JPEG"])
def test_high_depth_white_is_white(fmt, bits, shift, rng):
    """> 8-bit YUV: code-value white and black read as exactly 1 and -1 (swscale's rgb48 puts
    10-bit limited white at 65283/65535, 0.4 % dark), and float -> frame gives the codes back."""
    m = 1 << (bits - 8)
    white, black = (235 * m, 16 * m) if rng == "MPEG" else ((1 << bits) - 1, 0)
    f = av.VideoFrame(32, 16, fmt)
    y, *chroma = _planes16(f)
    y[:, :16], y[:, 16:] = white << shift, black << shift
    for a in chroma:
        a[:] = (128 * m) << shift
    c = Colour("bt709", _RANGE[rng])
    x = frame_to_float(f, c)
    assert np.allclose(x[:, :16], 1.0, atol=1e-6) and np.allclose(x[:, 16:], -1.0, atol=1e-6)
    back = float_to_frame(x, f, c)
    assert back.format.name == fmt
    assert all(np.array_equal(a, b) for a, b in zip(_planes16(f), _planes16(back)))


@pytest.mark.parametrize("rng", ["MPEG", "JPEG"])
def test_ten_bit_reads_like_eight_bit(photo_rgb_540p, rng):
    """A 10-bit frame holding the same values as an 8-bit one (codes x4 in limited range,
    x1023/255 in full range) reads as the same RGB: no brightness bias between depths."""
    c = Colour("bt709", _RANGE[rng])
    f8 = av.VideoFrame.from_ndarray(photo_rgb_540p, format="rgb24").reformat(
        format="yuv420p", dst_colorspace="itu709", dst_color_range=rng, interpolation=sws_flags())
    f10 = av.VideoFrame(f8.width, f8.height, "yuv420p10le")
    for i, (p, dst) in enumerate(zip(f8.planes, _planes16(f10))):
        a = np.frombuffer(p, np.uint8).reshape(p.height, -1)[:, : p.width].astype(np.float64)
        if rng == "MPEG":
            dst[:] = a * 4
        else:
            dst[:] = np.rint(a * (1023 / 255) if i == 0 else 512 + (a - 128) * (1023 / 255))
    d = (frame_to_float(f10, c) - frame_to_float(f8, c)) * 127.5
    # measured: bias -0.01 levels, mean |d| 0.26-0.29 (chroma upsampling at 8 vs 10 bits);
    # swscale's rgb48 reading was 0.7 levels dark (limited) on a bright photo
    assert abs(d.mean()) < 0.1 and np.abs(d).mean() < 0.5, (d.mean(), np.abs(d).mean())


def test_untagged_frames_follow_mpv_rule():
    sd = av.VideoFrame(64, 480, "yuv420p")
    hd = av.VideoFrame(64, 720, "yuv420p")
    assert (frame_colour(sd).sws_matrix, frame_colour(sd).sws_range, frame_colour(sd).guessed) == ("itu601", "MPEG", True)
    assert frame_colour(hd).sws_matrix == "itu709"


def test_videoframe_in_videoframe_out(up32, h265_540p_clip):
    with av.open(str(h265_540p_clip)) as c:
        frame = next(c.decode(video=0))
        small = frame.reformat(width=96, height=56)
        small.pts, small.colorspace, small.color_range = 7, 1, 1
    out = up32.upscale(small)
    assert isinstance(out, av.VideoFrame)
    assert (out.width, out.height, out.format.name, out.pts) == (192, 112, "yuv420p", 7)
    assert (out.colorspace, out.color_range) == (1, 1)


def test_bad_calls(tiny_weights, up32):
    with pytest.raises(BackendError, match="unknown backend 'cuda9'"):
        Upscaler(tiny_weights, backend="cuda9")
    with pytest.raises(BackendError, match="precision"):
        Upscaler(tiny_weights, backend="torch-cpu", precision="int4")
    with pytest.raises(MediaError, match="HxWx3 uint8"):
        up32.upscale(np.zeros((8, 8), np.uint8))
    with pytest.raises(MediaError, match="larger than"):
        up32.upscale_float(np.zeros((1, 3, 4000, 4000), np.float32))


def test_registry_reports_availability():
    av_ = available_backends()
    assert av_["torch-cpu"] == "ok" and av_["onnxruntime"] == "ok"
    b = create_backend("auto", create_model("default", n_filters=16, deploy=True).eval())
    try:  # the first runnable one in AUTO_ORDER: torch-cpu here, torch-cuda or tensorrt on a GPU machine
        assert b.name.startswith(next(n for n in AUTO_ORDER if av_[n] == "ok"))
    finally:
        b.close()
