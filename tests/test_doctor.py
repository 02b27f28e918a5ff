"""`mpv-srunet doctor`: checks with reasons, a measured table, JSON, the per-machine cache, and the
decisions the frame server takes from it (policy=auto's speed, model=auto's preset)."""

from __future__ import annotations

import json
import sys

import pytest

from mpv_srunet import doctor
from mpv_srunet.cli import main

# small frames keep the CPU measurement short; the default sizes are 540p/720p/1080p
ARGS = ["doctor", "--sizes", "64x48,96x64", "--presets", "default", "--backends", "torch-cpu", "--frames", "1"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private cache and mpv config (no installed script), never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("MPV_HOME", raising=False)
    return tmp_path


@pytest.fixture
def without_lite_weights(tmp_path, monkeypatch):
    """An engines folder that ships only the default weights (``lite`` has none)."""
    from mpv_srunet import weights

    monkeypatch.setenv(weights.ENV_WEIGHTS, str(weights.default_weights_path()))
    (tmp_path / "engines").mkdir()
    monkeypatch.setattr(weights, "repo_engines_dir", lambda: tmp_path / "engines")


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _check(report, name):
    return next(c for c in report["checks"] if c["name"] == name)


def test_doctor_measures_caches_and_rereads(home, capsys):
    first = _json(capsys, ARGS + ["--json"])
    assert first["from_cache"] is False
    rows = first["rows"]
    assert {(r["backend"], r["size"]) for r in rows} == {("torch-cpu", "64x48"), ("torch-cpu", "96x64")}
    for r in rows:
        assert r["ms"] > 0 and r["preset"] == "default" and r["weights"].startswith("shipped")
        assert r["realtime"] == [f for f in (24, 30, 60) if r["ms"] <= 1000 / f]
    cache = home / "cache" / "mpv-srunet" / "doctor"
    files = list(cache.glob("*.json"))
    assert len(files) == 1 and first["cache"] == str(files[0])
    saved = json.loads(files[0].read_text())
    assert saved["rows"] == rows and saved["key"]["torch"] and saved["key"]["weights"] != "none"
    assert "tensorrt" in saved["skipped"] or "torch-cuda" in saved["skipped"] or not saved["skipped"]

    second = _json(capsys, ARGS + ["--json"])  # read back, not measured again
    assert second["from_cache"] is True and second["rows"] == rows

    assert main(ARGS) == 0  # the table, from the cache
    out = capsys.readouterr().out
    assert "Checks:" in out and "ms per frame" in out and "64x48" in out and "96x64" in out
    assert "torch-cpu" in out and "cached" in out
    for r in rows:
        assert f"{r['ms']:.1f}" in out

    third = _json(capsys, ARGS + ["--json", "--refresh"])
    assert third["from_cache"] is False and len(third["rows"]) == 2


def test_doctor_reports_missing_mpv_script_and_onnxruntime(home, capsys, monkeypatch, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no mpv (nor a C++ compiler) on PATH
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    rep = _json(capsys, ["doctor", "--json", "--sizes", "64x48", "--presets", "default", "--frames", "1"])
    mpv = _check(rep, "mpv")
    assert not mpv["ok"] and "mpv not found on PATH" in mpv["detail"]
    ort = _check(rep, "ONNX Runtime")
    assert not ort["ok"] and "not installed" in ort["detail"]
    assert "not installed" in rep["skipped"]["onnxruntime"]
    assert not _check(rep, "mpv script")["ok"] and "mpv-script --install" in _check(rep, "mpv script")["detail"]
    assert not _check(rep, "CUDA")["ok"] or _check(rep, "CUDA")["detail"]
    assert {r["backend"] for r in rep["rows"]} <= {"torch-cpu", "torch-cuda", "tensorrt"}
    assert main(["doctor", "--sizes", "64x48", "--presets", "default", "--frames", "1"]) == 0
    out = capsys.readouterr().out
    assert "NO  mpv" in out and "NO  ONNX Runtime" in out


def test_doctor_bad_arguments(home, capsys):
    assert main(["doctor", "--sizes", "huge"]) == 2
    assert "size 'huge'" in capsys.readouterr().err
    assert main(["doctor", "--presets", "giant"]) == 2
    assert main(["doctor", "--backends", "nope"]) == 2


def test_decisions_come_from_the_cache(home, capsys):
    """estimate_ms / choose_preset / pick_model / cached_ms on a real measurement of this machine."""
    from mpv_srunet.filter import Upscaler

    rep = _json(capsys, ARGS + ["--json"])
    small, big = (next(r for r in rep["rows"] if r["size"] == s) for s in ("64x48", "96x64"))
    runtime = small["runtime"]
    assert doctor.estimate_ms(rep, runtime, "default", 64, 48) == pytest.approx(small["ms"])
    # another size: the nearest measured one, scaled by pixel count
    assert doctor.estimate_ms(rep, "torch-cpu", "default", 192, 128) == pytest.approx(big["ms"] * 4)
    assert doctor.estimate_ms(rep, "tensorrt", "default", 64, 48) is None
    assert doctor.estimate_ms(None, runtime, "default", 64, 48) is None

    slow_fps = 0.5 * 1000 / big["ms"]  # half the rate it sustains: real time
    assert doctor.choose_preset(rep, runtime, 96, 64, slow_fps, ["default"])[0] == "default"
    fast_fps = 4 * 1000 / big["ms"]
    preset, why = doctor.choose_preset(rep, runtime, 96, 64, fast_fps, ["default"])
    assert preset is None and "no preset keeps" in why
    assert doctor.choose_preset(rep, "onnxruntime", 96, 64, 24, ["default"]) == (None, "no doctor measurement for onnxruntime")

    # the frame server's path: model=auto with this cache (default keeps up: picked, lite or not)
    preset, why = doctor.pick_model("auto", "auto", 96, 64, slow_fps)
    assert preset == "default" and "doctor cache" in why
    assert doctor.pick_model("lite", "auto", 96, 64, 24) == ("lite", "asked for")
    with Upscaler(backend="torch-cpu") as up:
        if up.backend_name == runtime:
            assert doctor.cached_ms(up, 96, 64) == pytest.approx(big["ms"])
    assert doctor.preset_of(up.cfg) == "default"


def test_frame_server_takes_its_speed_from_the_cache(home, capsys, h265_small_clip):
    """open_media (the frame server's and `play`'s registration): the doctor's number when this
    machine has one, else two frames timed; model=lite opens the shipped lite weights."""
    from mpv_srunet.mpv.media import UpscalerPool, open_media

    pool = UpscalerPool()
    media, ms = open_media("1", str(h265_small_clip), pool, backend="torch-cpu", use_sidecar=False)
    assert media.speed_source == "probe" and ms > 0 and media.describe()["speed_source"] == "probe"
    media.close()

    rep = _json(capsys, ARGS + ["--json"])
    media, ms = open_media("2", str(h265_small_clip), pool, backend="torch-cpu", use_sidecar=False, model="auto")
    try:
        assert media.speed_source == "doctor"
        runtime = media.upscaler.backend_name
        assert ms == pytest.approx(doctor.estimate_ms(rep, runtime, "default", 160, 96))
    finally:
        media.close()
    media, _ = open_media("3", str(h265_small_clip), pool, backend="torch-cpu", use_sidecar=False, model="lite")
    try:  # the shipped lite weights
        assert media.upscaler.cfg.n_filters == 32 and media.upscaler.weights_info.name == "srunet_lite.safetensors"
    finally:
        media.close()


def test_a_preset_without_weights_is_never_picked_nor_played(home, capsys, h265_small_clip, without_lite_weights):
    """model=auto skips a preset whose weights do not ship; model=lite then stops with one clear error."""
    from mpv_srunet.errors import SRUNetError
    from mpv_srunet.mpv.media import UpscalerPool, open_media

    rep = _json(capsys, ARGS + ["--json"])
    big = next(r for r in rep["rows"] if r["size"] == "96x64")
    preset, why = doctor.pick_model("auto", "auto", 96, 64, 0.5 * 1000 / big["ms"])
    assert preset == "default" and "lite: no shipped weights" in why
    with pytest.raises(SRUNetError, match="lite.*no trained weights ship"):
        open_media("3", str(h265_small_clip), UpscalerPool(), backend="torch-cpu", use_sidecar=False, model="lite")


def test_auto_falls_back_to_the_shipped_lite_weights(home, capsys, monkeypatch):
    """model=auto: `default` when it keeps real time, else the shipped `lite` when the cache says it does.

    The default rows are this machine's measurement; the lite row is that measurement at a quarter
    (lite's share of the MACs) so that the decision does not hang on this CPU's timing."""
    rep = _json(capsys, ARGS + ["--json"])
    big = next(r for r in rep["rows"] if r["size"] == "96x64")
    rep["rows"].append(dict(big, preset="lite", ms=big["ms"] / 4))
    monkeypatch.setattr(doctor, "cached_report_quietly", lambda: rep)
    assert doctor.pick_model("auto", "torch-cpu", 96, 64, 0.5 * 1000 / big["ms"])[0] == "default"
    preset, why = doctor.pick_model("auto", "torch-cpu", 96, 64, 2 * 1000 / big["ms"])
    assert preset == "lite" and "doctor cache" in why and "no shipped weights" not in why
