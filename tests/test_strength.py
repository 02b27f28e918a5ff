"""Detail strength: two endpoints of one network blended at load time and live.

Unit level: the blend is exact at 0 and 1 and the parameter average at 0.5, fused
blending equals blending before fusion, single-endpoint files refuse a strength in
one line, and an Upscaler swaps its weights in place. End to end: the real mpv with
the Lua script, whose ``strength`` option and keys change the frames the server
serves; ``upscale``, ``play`` and ``export-glsl`` take ``--strength``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_h265_clip
from test_mpv_helpers import MPV, decode_yuv, mpv_cmd, run_mpv, srunet_env

from mpv_srunet.cli import main
from mpv_srunet.mpv import script_dir
from mpv_srunet.errors import WeightsError
from mpv_srunet.model import create_model, reparameterize_model
from mpv_srunet.weights import ENDPOINTS, load_model, read_weights, save_endpoints

W, H, FRAMES = 160, 96, 48
BACKEND = "onnxruntime"  # fp32, deterministic across processes (as tests/test_mpv.py)


def _random(seed: int, *, deploy: bool = True, n_filters: int = 16):
    torch.manual_seed(seed)
    m = create_model("default", n_filters=n_filters)
    for p in m.parameters():  # make the two endpoints far apart, so their outputs clearly differ
        p.data.add_(0.05 * torch.randn_like(p))
    return (reparameterize_model(m) if deploy else m).eval()


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory) -> tuple[Path, dict, dict]:
    """A tiny (F=16) two-endpoint file and the endpoints' state dicts."""
    fid, perc = _random(1), _random(2)
    path = save_endpoints(tmp_path_factory.mktemp("ends") / "ends.safetensors", fid, perc, 0.7,
                          {"provenance": "random init (tests)"})
    return path, fid.state_dict(), perc.state_dict()


def test_strength_0_and_1_are_the_endpoints_and_05_the_average(endpoints) -> None:
    path, fid, perc = endpoints
    for s, want in ((0.0, fid), (1.0, perc), (0.5, {k: (fid[k] + perc[k]) * 0.5 for k in fid})):
        sd, _, form, meta = read_weights(path, strength=s)
        assert form == "deploy" and meta["srunet.strength"] == s
        assert set(sd) == set(want)
        for k in want:
            assert torch.equal(sd[k], want[k]), (s, k)
    model, info = load_model(path)  # the file's default
    assert info.strength == 0.7
    for k, v in model.state_dict().items():
        assert torch.allclose(v, 0.3 * fid[k] + 0.7 * perc[k], atol=1e-7, rtol=0)


def test_blending_fused_weights_equals_fusing_blended_weights(tmp_path) -> None:
    """No normalisation layers: fusion is linear, so a deploy-form endpoint file blends like the train form."""
    a, b = _random(3, deploy=False), _random(4, deploy=False)
    train = save_endpoints(tmp_path / "train.safetensors", a, b, 0.5)
    fused = save_endpoints(tmp_path / "fused.safetensors", reparameterize_model(a), reparameterize_model(b), 0.5)
    for s in (0.0, 0.3, 1.0):
        m_train, _ = load_model(train, strength=s)  # blended in train form, then fused
        m_fused, _ = load_model(fused, strength=s)
        for k, v in m_fused.state_dict().items():
            assert torch.allclose(v, m_train.state_dict()[k], atol=1e-6, rtol=1e-5), (s, k)


def test_shipped_weights_hold_both_endpoints() -> None:
    from mpv_srunet.weights import default_weights_path, read_endpoints

    path = default_weights_path()
    if not path.exists():
        pytest.skip(f"{path} not present")
    ends, cfg, form = read_endpoints(path)
    assert form == "deploy" and cfg.n_filters == 64 and ends.default_strength == 1.0
    _, info = load_model(path)
    assert info.strength == 1.0
    assert list(read_weights(path)[3]["srunet.endpoints"]) == list(ENDPOINTS)


def test_strength_errors_are_one_line(tiny_weights, endpoints, tmp_path, capsys) -> None:
    with pytest.raises(WeightsError, match="one set of weights"):
        load_model(tiny_weights, strength=0.5)
    with pytest.raises(WeightsError, match="from 0 .fidelity. to 1"):
        load_model(endpoints[0], strength=1.5)
    img = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    for args, what in (
        (["upscale", str(img), str(tmp_path / "o.png"), "--weights", str(tiny_weights), "--strength", "0.5"], "one set of weights"),
        (["upscale", str(img), str(tmp_path / "o.png"), "--weights", str(endpoints[0]), "--strength", "1.5"], "from 0"),
        (["export-glsl", "-o", str(tmp_path / "x.glsl"), "--weights", str(endpoints[0]), "--strength", "-0.1"], "from 0"),
        (["play", "x.mkv", "--strength", "nan"], "from 0"),
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert what in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "x.glsl").exists()


@pytest.mark.parametrize("backend,options", [("torch-cpu", {"precision": "fp32"}), ("onnxruntime", {})])
def test_upscaler_set_strength_swaps_weights(endpoints, backend, options, photo_rgb_540p) -> None:
    from mpv_srunet.filter import Upscaler

    rgb = np.ascontiguousarray(photo_rgb_540p[:64, :96])
    with Upscaler(endpoints[0], backend=backend, strength=1.0, **options) as ref1:
        want1 = ref1.upscale(rgb)
    with Upscaler(endpoints[0], backend=backend, strength=0.0, **options) as up:
        want0 = up.upscale(rgb)
        assert np.abs(want0.astype(int) - want1.astype(int)).mean() > 2  # the endpoints really differ
        before = up._backend
        assert up.set_strength(1.0) == 1.0 and up.strength == 1.0
        assert np.array_equal(up.upscale(rgb), want1)
        if backend == "torch-cpu":
            assert up._backend is before  # swapped in place, no new runtime
        up.set_strength(0.0)
        assert np.array_equal(up.upscale(rgb), want0)


def test_export_glsl_strength_matches_the_blend(endpoints, tmp_path) -> None:
    from mpv_srunet.glsl import export_glsl

    out = tmp_path / "s.glsl"
    assert main(["export-glsl", "--weights", str(endpoints[0]), "--strength", "0.3", "-o", str(out)]) == 0
    text = out.read_text()
    model, _ = load_model(endpoints[0], strength=0.3)
    body = export_glsl(model).text
    assert "detail strength 0.3" in text[:3000]
    assert text[text.index("//!DESC"):] == body[body.index("//!DESC"):]
    other = export_glsl(load_model(endpoints[0], strength=0.4)[0]).text
    assert other[other.index("//!DESC"):] != body[body.index("//!DESC"):]


# --------------------------------------------------------------------------- real mpv

mpv_only = pytest.mark.skipif(MPV is None, reason="mpv binary not installed (apt install mpv; ./install.sh --dev)")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_h265_clip(tmp_path_factory.mktemp("strength") / "pan.mkv", W, H, frames=FRAMES)


def _reference(clip: Path, weights: Path, strength: float, out: Path) -> list[np.ndarray]:
    subprocess.run([sys.executable, "-m", "mpv_srunet.cli", "upscale", str(clip), str(out), "--codec", "ffv1",
                    "--weights", str(weights), "--backend", BACKEND, "--strength", str(strength), "--no-progress"],
                   check=True, env=srunet_env(), timeout=180, capture_output=True)
    frames, _ = decode_yuv(out)
    assert len(frames) == FRAMES
    return frames


@pytest.fixture(scope="module")
def references(clip, endpoints, tmp_path_factory) -> dict[float, list[np.ndarray]]:
    d = tmp_path_factory.mktemp("ref")
    refs = {s: _reference(clip, endpoints[0], s, d / f"ref{s}.mkv") for s in (0.9, 1.0)}
    assert np.abs(refs[0.9][0].astype(int) - refs[1.0][0].astype(int)).mean() > 2
    return refs


def _nearest(frame: np.ndarray, refs: dict[float, list[np.ndarray]]) -> tuple[float, int]:
    """(strength, index) of the reference frame this frame is (checked to be close to it)."""
    dist = {(s, k): np.abs(frame.astype(int) - r.astype(int)).mean() for s, rs in refs.items() for k, r in enumerate(rs)}
    best = min(dist, key=dist.get)
    assert dist[best] < 0.5, (best, dist[best])
    return best


# Pauses once playback is under way, presses Alt+= (strength 0.9 -> 1) and resumes when the
# srunet script reports the server has swapped the weights (script-message), or after 100 s
# (then the test fails on what was recorded). One press: every frame served is then at 0.9
# or 1 (while paused mpv keeps buffering, so intermediate values would be served too).
KEYS_LUA = """
local pressed = false
local function record(v) local f = io.open("{rec}", "a"); f:write(v .. "\\n"); f:close() end
mp.observe_property("time-pos", "number", function(_, t)
  if pressed or not t or t < 0.2 then return end
  pressed = true
  mp.set_property_bool("pause", true)
  mp.commandv("keypress", "Alt+=")
  mp.add_timeout(100, function() record("timeout"); mp.set_property_bool("pause", false) end)
end)
mp.register_script_message("srunet-strength", function(v)
  record(v)
  if tonumber(v) >= 0.999 then mp.set_property_bool("pause", false) end
end)
"""


@mpv_only
@pytest.mark.mpv
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_lua_strength_option_and_keys_change_the_served_frames(tmp_path, clip, endpoints, references) -> None:
    """strength=0.9 (the file's default is 0.7) serves that blend's frames; Alt+= swaps the server's
    weights live (no reload: one continuous stream of all frames) and the frames served after show 1.0."""
    rec, probe, out = tmp_path / "rec.txt", tmp_path / "keys.lua", tmp_path / "out.mkv"
    probe.write_text(KEYS_LUA.replace("{rec}", str(rec)))
    opts = {"weights": str(endpoints[0]), "backend": BACKEND, "policy": "wait", "strength": "0.9",
            "readahead_secs": "0.25"}
    res, left = run_mpv(mpv_cmd(script_dir(), f"--script={probe}", "--o=" + str(out), "--ovc=ffv1", "--oac=pcm_s16le", str(clip),
                                opts=opts), timeout=240)
    log = "\n".join(line for line in res.stdout.splitlines() if "AV:" not in line)
    assert not left and res.returncode == 0, log[-3000:]
    assert rec.read_text().split() == ["1.00"], (rec.read_text(), log[-3000:])
    frames, _ = decode_yuv(out)
    seen = [_nearest(f, references) for f in frames]
    strengths, index = [s for s, _ in seen], [k for _, k in seen]
    assert index[0] == 0 and index[-1] == FRAMES - 1 and index == sorted(index), seen  # one stream, never restarted
    assert len(set(index)) == FRAMES, seen  # every frame shown
    assert strengths[0] == 0.9 and strengths[-1] == 1.0, seen
    switch = strengths.index(1.0)
    assert set(strengths[switch:]) == {1.0}, seen  # once swapped, every later frame


@mpv_only
@pytest.mark.mpv
@pytest.mark.timeout(300)
def test_play_strength_reaches_the_frames(tmp_path, clip, endpoints, references) -> None:
    """`play --strength 1` (python-mpv route) serves the perceptual endpoint's frames."""
    out = tmp_path / "play.mkv"
    cmd = [sys.executable, "-m", "mpv_srunet.cli", "play", str(clip), "--no-config", "--weights", str(endpoints[0]),
           "--backend", BACKEND, "--strength", "1", "--mpv-opt", f"o={out}", "--mpv-opt", "ovc=ffv1"]
    res = subprocess.run(cmd, env=srunet_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    frames, _ = decode_yuv(out)
    assert [_nearest(f, references) for f in frames] == [(1.0, k) for k in range(FRAMES)]


def test_server_strength_request(tmp_path) -> None:
    """The control request alone (the Lua script's key path is tested above with real mpv)."""
    from test_mpv_server import ServerProc

    s = ServerProc(tmp_path)
    try:
        bad = s.request({"op": "strength", "value": 1.5})
        assert not bad["ok"] and "from 0 (fidelity) to 1" in bad["error"]
        ok = s.request({"op": "strength", "value": 0.25})
        assert ok == {"ok": True, "strength": 0.25, "changed": 0}  # nothing loaded yet: applies to what loads next
    finally:
        s.stop()
