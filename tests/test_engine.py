"""The TensorRT path without a GPU: the engine graph (checked with onnx and run with
onnxruntime), its in-graph colour conversion against PyAV on real decoded frames,
the engine cache (keys, staleness, atomic writes, the build lock) and the
no-TensorRT error paths through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import load_photo_rgb
from mpv_srunet.errors import BackendUnavailable, ConfigError
from mpv_srunet.colour import Colour, float_to_yuv420, frame_to_float
from mpv_srunet.filter import Upscaler
from mpv_srunet.gpu.frames import RGBToYUV420, YUV420FrameGraph, YUV420ToRGB, pad_yuv420, unpack_yuv420
from mpv_srunet.weights import load_model
from mpv_srunet.model import create_model
from mpv_srunet.trt.builder import engine_problems, probe_machine, unavailable_reason
from mpv_srunet.trt.cache import (
    EngineKey,
    MachineInfo,
    ShapeProfile,
    build_lock,
    list_engines,
    make_profile,
    read_key,
    stale_reasons,
    write_engine,
)
from mpv_srunet.trt.graph import INPUT_FORMATS, EngineGraph, GraphSpec, dummy_inputs, export_engine_onnx
from mpv_srunet.video import mux

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return create_model("default", n_filters=16, deploy=True).eval()


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _feeds(spec: GraphSpec, arrays) -> dict[str, np.ndarray]:
    return {n: np.ascontiguousarray(a) for n, a in zip(spec.input_names, arrays)}


# --------------------------------------------------------------------------- the engine graph


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("fmt", INPUT_FORMATS)
def test_engine_graph_valid_with_dynamic_height_width(tiny_model, tmp_path, fmt, precision):
    spec = GraphSpec(fmt, precision)
    path = export_engine_onnx(tiny_model, tmp_path / f"{fmt}.onnx", spec)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert list(dims) == spec.input_names
    for name, d in dims.items():
        hw = d[2:4] if fmt != "rgb24" else d[1:3]
        assert all(isinstance(v, str) and v for v in hw), f"{name}: height/width must be dynamic, got {d}"
    sess = _session(path)
    for h, w in ((48, 64), (64, 40)):  # one graph, two resolutions
        out = sess.run(None, _feeds(spec, [t.numpy() for t in dummy_inputs(spec, h, w)]))[0]
        expect = (1, 3, 2 * h, 2 * w) if fmt == "rgb" else (1, 2 * h, 2 * w, 3)
        assert out.shape == expect
        assert out.dtype == (np.float32 if fmt == "rgb" else np.uint8)


def test_rgb_graph_equals_torch(tiny_model, tmp_path):
    spec = GraphSpec("rgb", "fp32")
    sess = _session(export_engine_onnx(tiny_model, tmp_path / "rgb.onnx", spec))
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 40, 56)).astype(np.float32)  # dynamic batch too
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], ref, atol=1e-4)


def test_fp16_graph_is_fp16_and_close_to_fp32(tiny_model, tmp_path):
    x = (load_photo_rgb(64, 48).transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1.0)
    outs = {}
    for prec in ("fp32", "fp16"):
        path = export_engine_onnx(tiny_model, tmp_path / f"{prec}.onnx", GraphSpec("rgb", prec))
        outs[prec] = _session(path).run(None, {"input": x})[0]
        conv_w = {n.input[1] for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"}
        types = {t.data_type for t in onnx.load(str(path)).graph.initializer if t.name in conv_w}
        want = onnx.TensorProto.FLOAT16 if prec == "fp16" else onnx.TensorProto.FLOAT
        assert types == {want}, f"{prec} graph: conv weight types {types}"
    assert outs["fp16"].dtype == np.float32  # I/O stays fp32, FP16 inside
    err = np.abs(outs["fp16"] - outs["fp32"])
    assert err.max() < 3e-2 and err.mean() < 3e-3, (err.max(), err.mean())


def test_rgb24_graph_folds_normalisation(tiny_model, tmp_path):
    spec = GraphSpec("rgb24", "fp32")
    sess = _session(export_engine_onnx(tiny_model, tmp_path / "rgb24.onnx", spec))
    rgb = load_photo_rgb(64, 48)
    out = sess.run(None, {"input": rgb[None]})[0][0]
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(rgb.transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1.0))[0]
    ref = np.clip(np.rint((ref.numpy().transpose(1, 2, 0) + 1.0) * 127.5), 0, 255)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_static_export_and_bad_static_size(tiny_model, tmp_path):
    spec = GraphSpec("yuv420p", "fp32")
    path = export_engine_onnx(tiny_model, tmp_path / "s.onnx", spec, static_hw=(48, 64))
    dims = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in onnx.load(str(path)).graph.input]
    assert dims == [[1, 1, 48, 64], [1, 1, 24, 32], [1, 1, 24, 32]]
    with pytest.raises(ConfigError, match="multiple of 8"):
        export_engine_onnx(tiny_model, tmp_path / "bad.onnx", spec, static_hw=(50, 64))
    with pytest.raises(ConfigError, match="colour matrix"):
        Colour(matrix="bt470")


# --------------------------------------------------------------------------- colour conversion


def _decoded_frames(tmp_path: Path, pix_fmt: str, matrix: str, rng: str, n: int = 2, w: int = 128,
                    h: int = 96) -> list:
    """Encode a real photo with libx265 in the given format and colour, decode it back."""
    src = load_photo_rgb(w + 4, h)
    path = tmp_path / f"{pix_fmt}_{matrix}_{rng}.mkv"
    cs, cr = Colour(matrix, rng).sws_matrix, Colour(matrix, rng).sws_range
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx265", rate=24)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        vs.options = {"crf": "20", "preset": "ultrafast", "x265-params": "log-level=error"}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(src[:, 2 * i: 2 * i + w]), format="rgb24")
            f = f.reformat(format=pix_fmt, dst_colorspace=cs, dst_color_range=cr)
            f.pts, f.time_base = i, Fraction(1, 24)
            mux(out, vs.encode(f))
        mux(out, vs.encode())
    with av.open(str(path)) as c:
        return [f for f in c.decode(video=0)]


def _planes(frame) -> list[np.ndarray]:
    dt = np.uint16 if frame.format.name.endswith("10le") else np.uint8
    out = []
    for p in frame.planes:
        a = np.frombuffer(bytes(p), dtype=dt).reshape(p.height, p.line_size // dt().itemsize)[:, : p.width]
        out.append(a)
    return out


def _upsample_reference(c: np.ndarray, chroma: str) -> np.ndarray:
    """4:2:0 chroma to full size by explicit sample positions (independent of the graph code)."""
    c = c.astype(np.float64)
    if chroma == "nearest":
        return c.repeat(2, 0).repeat(2, 1)
    h, w = c.shape
    # luma row r sits at chroma row (r - 0.5) / 2 for both sitings (vertically centred);
    # luma column x at chroma column x / 2 ("left", co-sited) or (x - 0.5) / 2 ("center").
    ys = (np.arange(2 * h) - 0.5) / 2
    xs = np.arange(2 * w) / 2 if chroma == "left" else (np.arange(2 * w) - 0.5) / 2

    def weights(pos, n):
        pos = np.clip(pos, 0, n - 1)
        i0 = np.floor(pos).astype(int)
        i1 = np.minimum(i0 + 1, n - 1)
        return i0, i1, pos - i0

    y0, y1, fy = weights(ys, h)
    x0, x1, fx = weights(xs, w)
    rows = c[y0] * (1 - fy)[:, None] + c[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx)[None] + rows[:, x1] * fx[None]


def _reference_rgb(planes, matrix: str, rng: str, bits: int, chroma: str) -> np.ndarray:
    """Textbook BT.709/601 Y'CbCr -> R'G'B' in float64 (independent of the graph code)."""
    kr, kb = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}[matrix]
    m = 2 ** (bits - 8)
    y = planes[0].astype(np.float64)
    u, v = (_upsample_reference(c, chroma) for c in planes[1:])
    if rng == "limited":
        y, u, v = (y - 16 * m) / (219 * m), (u - 128 * m) / (224 * m), (v - 128 * m) / (224 * m)
    else:
        y, u, v = y / (255 * m), (u - 128 * m) / (255 * m), (v - 128 * m) / (255 * m)
    r, b = y + 2 * (1 - kr) * v, y + 2 * (1 - kb) * u
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.stack([r, g, b], -1), 0, 1)


def _graph_rgb(tmp_path: Path, planes, colour: Colour, bits: int) -> np.ndarray:
    """Run the in-graph conversion as ONNX (exported from the module the engine graph uses)."""
    conv = YUV420ToRGB(colour, bits).eval()
    dt = torch.float16 if bits == 10 else torch.uint8
    args = tuple(torch.from_numpy(p.astype(np.float16 if bits == 10 else np.uint8))[None, None] for p in planes)
    path = tmp_path / "colour.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, as export_engine_onnx uses
        torch.onnx.export(conv, args, str(path), dynamo=False, opset_version=17, input_names=["y", "u", "v"],
                          output_names=["rgb"])
    assert all(a.dtype == dt for a in args)
    return _session(path).run(None, {n: a.numpy() for n, a in zip("yuv", args)})[0][0].transpose(1, 2, 0)


CASES = [("yuv420p", "bt709", "limited"), ("yuv420p", "bt601", "full"), ("yuv420p", "bt601", "limited"),
         ("yuv420p10le", "bt709", "limited")]


@pytest.mark.parametrize("pix_fmt,matrix,rng", CASES)
def test_in_graph_colour_conversion_matches_python_path(tmp_path, pix_fmt, matrix, rng):
    bits = 10 if pix_fmt.endswith("10le") else 8
    frame = _decoded_frames(tmp_path, pix_fmt, matrix, rng)[1]
    planes = _planes(frame)
    python = (frame_to_float(frame, Colour(matrix, rng)) + 1.0) * 127.5
    # (mean, p99) bounds in 8-bit levels vs PyAV/swscale, which sites 4:2:0 chroma "left"
    bounds = {"left": (1.0, 3.0), "center": (1.2, 6.0), "nearest": (1.6, 10.0)}
    for chroma, (mean_max, p99_max) in bounds.items():
        graph = _graph_rgb(tmp_path, planes, Colour(matrix, rng, chroma), bits)
        np.testing.assert_allclose(graph, _reference_rgb(planes, matrix, rng, bits, chroma), atol=1e-5)
        d = np.abs(graph * 255.0 - python)
        assert d.mean() < mean_max and np.percentile(d, 99) < p99_max, (chroma, d.mean(), np.percentile(d, 99))


def test_yuv_engine_graph_equals_torch_on_decoded_frame(tiny_model, tmp_path):
    """The whole YUV graph (conversion + FP32 net + rounding) through onnxruntime equals torch."""
    frame = _decoded_frames(tmp_path, "yuv420p", "bt709", "limited", n=1)[0]
    planes = _planes(frame)
    spec = GraphSpec("yuv420p", "fp32", Colour("bt709", "limited", "left"))
    out = _session(export_engine_onnx(tiny_model, tmp_path / "yuv.onnx", spec)).run(
        None, _feeds(spec, [p[None, None] for p in planes]))[0]
    with torch.no_grad():
        ref = EngineGraph(tiny_model, spec)(*(torch.from_numpy(p.copy())[None, None] for p in planes))
    assert out.shape == (1, 192, 256, 3)
    assert np.abs(out.astype(int) - ref.numpy().astype(int)).max() <= 1


# --------------------------------------------------------------------------- GPU frame path (torch-cuda)


def _python_path_yuv420(model, frame, colour: Colour) -> np.ndarray:
    """What the mpv renderer does with a float backend: swscale to RGB, the net, swscale to yuv420p."""
    with Upscaler(model=model, backend="torch-cpu", precision="fp32") as up:
        x = np.ascontiguousarray(frame_to_float(frame, colour).transpose(2, 0, 1)[None])
        return float_to_yuv420(up.upscale_float(x)[0], colour, (2 * frame.width, 2 * frame.height))


def _yuv_diff(a: np.ndarray, b: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray]:
    """|a - b| of two (h*3/2, w) yuv420p arrays, split into luma and chroma."""
    d = np.abs(a.astype(int) - b.astype(int))
    return d[:h], d[h:]


def test_rgb_to_yuv420_matches_swscale_on_a_photo():
    """The GPU's RGB -> 4:2:0 conversion against swscale's (the renderer's float path)."""
    rgb = load_photo_rgb(320, 180)
    # full range: swscale's default (not ACCURATE_RND) path truncates chroma, about -0.5 level
    for matrix, rng, chroma_mean in (("bt709", "limited", 0.15), ("bt601", "full", 0.7)):
        colour = Colour(matrix, rng)
        ref = float_to_yuv420(rgb.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0, colour, (320, 180))
        t = torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None].float() / 255.0
        y, u, v = (p.numpy() for p in RGBToYUV420(Colour(matrix, rng))(t))
        assert y.dtype == np.uint8 and y.shape == (1, 1, 180, 320) and u.shape == v.shape == (1, 1, 90, 160)
        dy, dc = _yuv_diff(np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(270, 320), ref, 180)
        assert dy.max() <= 1 and dy.mean() < 0.05, (matrix, dy.max(), dy.mean())
        assert dc.max() <= 1 and dc.mean() < chroma_mean, (matrix, dc.max(), dc.mean())


@pytest.mark.parametrize("pix_fmt,matrix,rng", [("yuv420p", "bt709", "limited"), ("yuv420p", "bt601", "full"),
                                                 ("yuv420p10le", "bt709", "limited")])
def test_yuv420_frame_graph_matches_the_python_path(tmp_path, pix_fmt, matrix, rng):
    """Planes in, 8-bit planes out, in one torch graph (what torch-cuda runs on the GPU), against
    the renderer's float path, on a real H.265 frame whose size needs padding (132x100 -> 136x104)."""
    frame = _decoded_frames(tmp_path, pix_fmt, matrix, rng, n=1, w=132, h=100)[0]
    colour = Colour(matrix, rng)
    model = load_model(None, deploy=True)[0]
    ref = _python_path_yuv420(model, frame, colour)
    bits = 10 if pix_fmt.endswith("10le") else 8
    planes = pad_yuv420(*(p.astype(np.int16 if bits == 10 else np.uint8) for p in _planes(frame)), 8)
    assert planes[0].shape == (1, 1, 104, 136)
    with torch.no_grad():
        flat = YUV420FrameGraph(model, colour, "fp32", bits)(*(torch.from_numpy(p) for p in planes))
    out = unpack_yuv420(flat.numpy(), (208, 272), (200, 264))
    assert out.shape == ref.shape == (300, 264) and out.dtype == np.uint8
    dy, dc = _yuv_diff(out, ref, 200)
    # luma: the two paths differ only in 4:2:0 chroma upsampling/rounding (swscale vs the textbook)
    # measured: luma mean 0.22-0.25, p99 1; chroma mean 0.22 limited, 0.61 full (swscale's truncation).
    # 10-bit: luma mean 0.11, chroma 0.20 (both paths apply the textbook equations to 10-bit codes)
    assert dy.mean() < 0.4 and np.percentile(dy, 99) <= 2, (dy.mean(), np.percentile(dy, 99))
    assert dc.mean() < 0.8 and np.percentile(dc, 99) <= 2, (dc.mean(), np.percentile(dc, 99))
    with pytest.raises(ConfigError):
        unpack_yuv420(flat.numpy(), (208, 272), (202, 264))  # 4:2:0 rows of a y4m frame need h % 4 == 0


def test_frame_path_only_where_the_backend_has_one(tmp_path, tiny_model):
    frame = _decoded_frames(tmp_path, "yuv420p", "bt709", "limited", n=1)[0]
    with Upscaler(model=tiny_model, backend="torch-cpu") as up:
        assert up.upscale_yuv420(frame) is None  # CPU backends keep the float path
    assert Colour("bt709", "limited").on_gpu and Colour("bt601", "full").on_gpu
    assert not Colour("smpte240m", "limited").on_gpu  # FCC and SMPTE 240M stay on the CPU path


# --------------------------------------------------------------------------- engine cache


MACHINE = MachineInfo("10.9.0.34", "NVIDIA GeForce RTX 4090", "8.9")


def _key(**changes) -> EngineKey:
    base = dict(graph_tag="yuv420p-bt709-limited-left", precision="fp16",
                profile=ShapeProfile((360, 640), (544, 960), (1080, 1920)), onnx_sha256="ab" * 32,
                trt_version=MACHINE.trt_version, gpu_name=MACHINE.gpu_name,
                compute_capability=MACHINE.compute_capability, builder=(("opt_level", None),))
    base.update(changes)
    return EngineKey(**base)


@pytest.mark.parametrize("field,value", [
    ("graph_tag", "rgb"), ("precision", "fp32"), ("profile", ShapeProfile((360, 640), (544, 960), (2160, 3840))),
    ("profile", ShapeProfile((544, 960), (544, 960), (544, 960))), ("onnx_sha256", "cd" * 32),
    ("trt_version", "11.0.0"), ("gpu_name", "NVIDIA H100"), ("compute_capability", "9.0"),
    ("builder", (("opt_level", 5),)),
])
def test_cache_key_changes_with_each_input(field, value):
    a, b = _key(), _key(**{field: value})
    assert a.digest() != b.digest()
    assert a.file_name() != b.file_name()
    assert EngineKey.from_dict(json.loads(json.dumps(b.to_dict()))) == b  # survives the sidecar


def test_file_name_is_readable():
    name = _key().file_name()
    assert name.startswith("srunet_yuv420p-bt709-limited-left_fp16_640x360-960x544-1920x1080_trt10.9.0.34_")
    assert "nvidia-geforce-rtx-4090-sm8.9" in name and name.endswith(".engine")


def test_make_profile_pads_and_validates():
    p = make_profile("640x360", "960x540", "1920x1080", 8)
    assert (p.min_hw, p.opt_hw, p.max_hw) == ((360, 640), (544, 960), (1080, 1920))
    assert p.contains(544, 960) and not p.contains(2160, 3840)
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        make_profile("1920x1080", "960x540", "640x360", 8)
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        make_profile("960", "960x540", "1920x1080", 8)


def test_stale_engine_detection(tmp_path):
    key = _key()
    path = write_engine(tmp_path / key.file_name(), b"serialized-engine-bytes", key, {})
    assert read_key(path) == key
    assert engine_problems(path, key, MACHINE) == []
    other_trt = MachineInfo("11.0.0", MACHINE.gpu_name, MACHINE.compute_capability)
    other_gpu = MachineInfo(MACHINE.trt_version, "NVIDIA H100 80GB HBM3", "9.0")
    assert any("TensorRT 10.9.0.34" in r for r in engine_problems(path, key, other_trt))
    assert any("RTX 4090" in r for r in engine_problems(path, key, other_gpu))
    no_gpu = MachineInfo(None, None, None)
    assert len(stale_reasons(key, no_gpu)) == 2
    assert engine_problems(path, _key(onnx_sha256="ee" * 32), MACHINE) == ["built from different inputs: onnx_sha256"]
    path.write_bytes(b"serialized-engine-bytez")  # replaced behind the cache's back
    assert "checksum" in engine_problems(path, key, MACHINE)[0]
    path.with_suffix(".json").unlink()
    assert engine_problems(path, key, MACHINE) == ["no readable metadata sidecar"]
    listed = list(list_engines(tmp_path, MACHINE))
    assert [e.path for e in listed] == [path] and not listed[0].usable


def test_write_engine_leaves_no_temporaries(tmp_path):
    key = _key()
    write_engine(tmp_path / key.file_name(), b"x" * 1000, key, {"note": "test"})
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".engine", ".json"]
    assert json.loads((tmp_path / key.file_name()).with_suffix(".json").read_text())["note"] == "test"


def test_build_lock_excludes_a_second_process(tmp_path):
    from filelock import Timeout

    engine = tmp_path / "e.engine"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from mpv_srunet.trt.cache import build_lock\n"
         "from pathlib import Path\nwith build_lock(Path(sys.argv[1])):\n print('held', flush=True); time.sleep(30)",
         str(engine)], stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Timeout):
            with build_lock(engine, timeout_s=0.2):
                pass
    finally:
        holder.kill()
        holder.wait()
    with build_lock(engine, timeout_s=5):  # released when the holder died
        pass


# --------------------------------------------------------------------------- no TensorRT / no GPU


needs_no_trt = pytest.mark.skipif(probe_machine().can_build, reason="TensorRT and a GPU are present here")


def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPV_SRUNET_ENGINE_DIR": str(tmp_path / "engines")}
    env.pop("MPV_SRUNET_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "mpv_srunet.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)


@needs_no_trt
def test_build_engine_without_tensorrt_is_one_line_and_nonzero(tmp_path, tiny_weights):
    r = _cli("build-engine", "--weights", str(tiny_weights), tmp_path=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("mpv-srunet: error:") and ("TensorRT" in lines[0] or "CUDA" in lines[0])
    assert not (tmp_path / "engines").exists() or not any((tmp_path / "engines").glob("*.engine"))


@needs_no_trt
def test_tensorrt_and_torch_cuda_backends_unavailable_here(tiny_model):
    from mpv_srunet.backends import available_backends, create_backend

    status = available_backends()
    assert status["tensorrt"] != "ok" and unavailable_reason(probe_machine()) == status["tensorrt"]
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        create_backend("tensorrt", tiny_model)
    if status["torch-cuda"] != "ok":
        with pytest.raises(BackendUnavailable, match="torch-cuda"):
            create_backend("torch-cuda", tiny_model)
    assert not create_backend("auto", tiny_model).name.startswith("tensorrt")


def test_build_engine_list_and_onnx_out_without_tensorrt(tmp_path, tiny_weights):
    key = _key()
    write_engine(tmp_path / "engines" / key.file_name(), b"engine", key, {})
    r = _cli("build-engine", "--list", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert key.file_name() in r.stdout
    if not probe_machine().can_build:
        assert "stale: built with TensorRT 10.9.0.34, this machine has none" in r.stdout
    if not probe_machine().can_build:
        r = _cli("build-engine", "--list", "--prune", tmp_path=tmp_path)
        assert r.returncode == 2 and "nothing deleted" in r.stderr
        assert (tmp_path / "engines" / key.file_name()).exists()
    out = tmp_path / "g.onnx"
    r = _cli("build-engine", "--weights", str(tiny_weights), "--format", "yuv420p10", "--matrix", "bt2020",
             "--onnx-out", str(out), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    onnx.checker.check_model(onnx.load(str(out)))
    r = _cli("build-engine", "--min", "1920x1080", "--max", "640x360", tmp_path=tmp_path)
    assert r.returncode == 2 and "min <= opt <= max" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- GPU only


@pytest.mark.gpu
def test_torch_cuda_backend_matches_torch_cpu(tiny_model):
    from mpv_srunet.backends import create_backend

    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(x)).numpy()
    b = create_backend("torch-cuda", tiny_model)
    try:
        y = b.infer(x)
        ys = list(b.infer_iter([x, x, x]))
    finally:
        b.close()
    assert np.abs(y - ref).max() < 3e-2
    assert all(np.array_equal(v, ys[0]) for v in ys)


@pytest.mark.gpu
def test_tensorrt_engine_build_and_inference(tiny_model, tmp_path):
    if not probe_machine().can_build:
        pytest.skip(f"needs TensorRT: {unavailable_reason(probe_machine())}")
    from mpv_srunet.backends import create_backend
    from mpv_srunet.backends.tensorrt_backend import TensorRTFrameEngine

    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(x)).numpy()
    b = create_backend("tensorrt", tiny_model, min_size="64x64", opt_size="96x64", max_size="128x128",
                       cache_dir=str(tmp_path))
    try:
        assert np.abs(b.infer(x) - ref).max() < 3e-2
        t0 = time.perf_counter()
        n = sum(1 for _ in b.infer_iter([x] * 20))
        print(f"tensorrt tiny model 96x64: {(time.perf_counter() - t0) / n * 1e3:.2f} ms/frame")
    finally:
        b.close()
    frame = _decoded_frames(tmp_path, "yuv420p", "bt709", "limited", n=1)[0]
    eng = TensorRTFrameEngine(tiny_model, "yuv420p", min_size="64x64", opt_size="128x96", max_size="128x128",
                              cache_dir=str(tmp_path))
    try:
        out = eng.upscale_yuv420(*_planes(frame))
    finally:
        eng.close()
    spec = GraphSpec("yuv420p", "fp32")
    with torch.no_grad():
        ref8 = EngineGraph(tiny_model, spec)(*(torch.from_numpy(p.copy())[None, None] for p in _planes(frame)))[0]
    assert out.shape == (192, 256, 3) and np.abs(out.astype(int) - ref8.numpy().astype(int)).mean() < 2.0


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch-cuda", "tensorrt"])
def test_cuda_graphs_survive_alternating_frame_sizes(tiny_model, tmp_path, backend):
    """A, B, A frame sizes with CUDA graphs on: each result equals the graph-free run.

    TensorRT runs every shape on one execution context, so a capture at B must not
    leave A's graph replaying against B's shapes (GraphReplay(one_shape=True))."""
    from mpv_srunet.backends import create_backend

    opts: dict = {"cuda_graphs": True}
    if backend == "tensorrt":
        if not probe_machine().can_build:
            pytest.skip(f"needs TensorRT: {unavailable_reason(probe_machine())}")
        opts |= dict(min_size="64x64", opt_size="96x64", max_size="128x128", cache_dir=str(tmp_path))
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(-1, 1, (1, 3, h, w)).astype(np.float32) for h, w in ((64, 96), (96, 128)))
    plain, graphed = create_backend(backend, tiny_model, **(opts | {"cuda_graphs": False})), create_backend(backend, tiny_model, **opts)
    try:
        for x in (a, b, a, b):
            np.testing.assert_array_equal(graphed.infer(x), plain.infer(x))
    finally:
        plain.close()
        graphed.close()


@pytest.mark.gpu
@pytest.mark.parametrize("pix_fmt,cuda_graphs", [("yuv420p", False), ("yuv420p", True), ("yuv420p10le", False)],
                         ids=["eager", "cuda-graphs", "10-bit"])
def test_torch_cuda_frame_path_matches_the_python_path(tmp_path, pix_fmt, cuda_graphs):
    """Upscaler(torch-cuda): yuv420p (or 10-bit) frames in, yuv420p out, on the GPU, against
    the CPU float path."""
    frames = _decoded_frames(tmp_path, pix_fmt, "bt709", "limited", n=2, w=132, h=100)
    colour = Colour("bt709", "limited")
    model = load_model(None, deploy=True)[0]
    with Upscaler(model=model, backend="torch-cuda", cuda_graphs=cuda_graphs) as up:
        assert all(up.has_frame_path(f) for f in frames)
        outs = [up.upscale_yuv420(f, colour) for f in frames + frames]
        as_frame, own_colour = up.upscale(frames[0]), up.upscale_yuv420(frames[0])  # the frame's own (guessed) colour
    for f, out in zip(frames + frames, outs):
        dy, dc = _yuv_diff(out, _python_path_yuv420(model, f, colour), 200)
        assert dy.mean() < 0.5 and np.percentile(dy, 99) <= 2, (dy.mean(), np.percentile(dy, 99))
        assert dc.mean() < 0.6 and np.percentile(dc, 99) <= 2, (dc.mean(), np.percentile(dc, 99))
    assert np.array_equal(outs[0], outs[2]) and np.array_equal(outs[1], outs[3])
    assert as_frame.format.name == pix_fmt and (as_frame.width, as_frame.height) == (264, 200)
    assert as_frame.pts == frames[0].pts
    if pix_fmt == "yuv420p":  # 10-bit frames keep their depth in upscale(): the float path
        assert np.array_equal(as_frame.to_ndarray(), own_colour)


@pytest.mark.gpu
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv420p10le"])
def test_mpv_renderer_takes_the_gpu_frame_path(tmp_path, pix_fmt):
    """The frame server's y4m records on torch-cuda are the frame path's planes, byte for byte
    (8-bit records for 10-bit sources too)."""
    from conftest import make_h265_clip
    from mpv_srunet.mpv.media import UpscalerPool, open_media
    from mpv_srunet.mpv.render import FrameRenderer, RenderStats
    from mpv_srunet.mpv.source import FrameSource
    from mpv_srunet.mpv.y4m import FRAME_TAG

    clip = make_h265_clip(tmp_path / "c.mkv", 160, 96, frames=4, audio=False, pix_fmt=pix_fmt)
    media, ms = open_media("1", str(clip), UpscalerPool(), backend="torch-cuda")
    up = media.upscaler
    assert up.backend_name.startswith("torch-cuda") and ms > 0
    src, stats = FrameSource(media.info), RenderStats()
    try:
        renderer = FrameRenderer(src, up, media.layout, media.colour, "sr", stats, threading.Lock())
        records = [renderer.render(i) for i in range(3)]
    finally:
        src.close()
    assert not stats.fallback, stats.error
    with av.open(str(clip)) as c:
        for rec, frame in zip(records, c.decode(video=0)):
            assert frame.format.name == pix_fmt
            assert rec == FRAME_TAG + up.upscale_yuv420(frame, media.colour).tobytes()
    up.close()


def test_pad_yuv420_edge_pads_planes_for_the_engine():
    from mpv_srunet.errors import BackendError

    y = np.arange(60 * 98, dtype=np.uint16).reshape(60, 98) % 1024
    u, v = y[::2, ::2].copy(), y[1::2, 1::2].copy()
    py, pu, pv = pad_yuv420(y, u, v, 8)
    assert py.shape == (1, 1, 64, 104) and pu.shape == pv.shape == (1, 1, 32, 52)
    assert np.array_equal(py[0, 0, :60, :98], y) and np.array_equal(py[0, 0, 63, :98], y[59])
    assert np.array_equal(pu[0, 0, 31, :49], u[29]) and np.array_equal(pv[0, 0, :30, 51], v[:, 48])
    with pytest.raises(BackendError, match="4:2:0"):
        pad_yuv420(y[:59], u, v)
