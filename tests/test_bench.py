"""`mpv-srunet bench` on CPU backends with a tiny model (F=16) and tiny frames.

Nothing here asserts a time: only that every requested case was measured, the
statistics are consistent, the JSON is a valid report, and --compare reads it back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_photo_rgb
from mpv_srunet.bench import (
    SCHEMA,
    AuthorsStyle,
    BenchSettings,
    Case,
    compare_reports,
    format_table,
    load_report,
    make_bench_clip,
    parse_cases,
    run_bench,
)
from mpv_srunet.errors import BackendUnavailable, UsageError
from mpv_srunet.model import create_model, macs_per_pixel, reparameterize_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_train():
    torch.manual_seed(0)
    m = create_model("default", n_filters=16).eval()
    with torch.no_grad():  # non-trivial 1x1 branches, so fusion matters
        for blk in m.blocks():
            blk.conv_adapter.weight.normal_(0, 0.05)
    return m


@pytest.fixture(scope="module")
def tiny_report(tiny_train):
    model = reparameterize_model(tiny_train)
    settings = BenchSettings(width=64, height=48, frames=2, warmup=1, threads=1)
    cases = [Case("authors-style"), Case("torch-cpu:fp32"), Case("torch-cpu:bf16"), Case("onnxruntime")]
    return run_bench(model, cases, settings)


def test_report_has_every_case_and_mode(tiny_report):
    got = {(r["case"], r["mode"]) for r in tiny_report["results"]}
    want = {(c, m) for c in ("authors-style", "torch-cpu:fp32", "torch-cpu:bf16", "onnxruntime") for m in ("model", "e2e")}
    assert got == want
    assert tiny_report["schema"] == SCHEMA and tiny_report["skipped"] == []
    json.loads(json.dumps(tiny_report))  # plain JSON


def test_statistics_are_consistent(tiny_report):
    cfg = create_model("default", n_filters=16).cfg
    for r in tiny_report["results"]:
        ms = r["ms"]
        assert r["frames"] == 2 == len(r["samples_ms"])
        assert 0 < ms["min"] <= ms["p50"] <= ms["p95"] <= ms["p99"] <= ms["max"]
        assert r["fps"] == pytest.approx(1000.0 / ms["p50"])
        authors = r["case"] == "authors-style"
        # 64x48: padded to 48 rows for the network's 8, to 48 for the authors' 16 too; width 64 either way
        assert r["padded"] == [48, 64]
        macs = macs_per_pixel(cfg, deploy=not authors)
        assert r["gflops"] == pytest.approx(2 * macs * 48 * 64 / (ms["p50"] * 1e-3) / 1e9)
        if authors:
            assert r["speedup_vs_authors"] == pytest.approx(1.0)
        else:
            assert r["speedup_vs_authors"] > 0


def test_authors_style_matches_fused_model_without_padding(tiny_train):
    """The reference really is the same network: train form == fused form where no padding is involved."""
    x = load_photo_rgb(64, 48).transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1.0
    ref = AuthorsStyle(tiny_train).infer(x)
    with torch.no_grad():
        fused = reparameterize_model(tiny_train)(torch.from_numpy(x)).numpy()
    assert ref.shape == (1, 3, 96, 128)
    np.testing.assert_allclose(ref, fused, atol=1e-4)


def test_authors_style_pads_with_zeros_to_16(tiny_train):
    x = np.zeros((1, 3, 40, 56), np.float32)
    y = AuthorsStyle(tiny_train).infer(x)
    assert y.shape == (1, 3, 80, 112)


def test_bench_clip_is_real_h265(tmp_path):
    import av

    clip = make_bench_clip(tmp_path / "c.mkv", 64, 48, 3)
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        frames = list(c.decode(video=0))
    assert s.codec_context.name == "hevc" and len(frames) == 3
    assert (frames[0].width, frames[0].height, frames[0].format.name) == (64, 48, "yuv420p")


def test_parse_cases():
    assert [c.spec for c in parse_cases("torch-cpu:bf16, onnxruntime,authors-style")] == [
        "torch-cpu:bf16", "onnxruntime", "authors-style"]
    assert Case("torch-cpu:bf16").options(2) == {"precision": "bf16", "threads": 2}
    assert Case("tensorrt:fp16").options(2) == {"precision": "fp16"}
    default = [c.spec for c in parse_cases(None)]
    assert default[:4] == ["authors-style", "torch-cpu:fp32", "torch-cpu:bf16", "onnxruntime"]
    with pytest.raises(UsageError, match="unknown backend"):
        parse_cases("tensorflow")


def test_unavailable_cases_are_skipped_with_reason(tiny_train):
    from mpv_srunet.backends import available_backends

    if available_backends()["tensorrt"] == "ok":
        pytest.skip("TensorRT runs here")
    model = reparameterize_model(tiny_train)
    settings = BenchSettings(width=32, height=32, frames=1, warmup=0, modes=("model",))
    rep = run_bench(model, [Case("torch-cpu:fp32"), Case("tensorrt:fp16")], settings)
    assert [r["case"] for r in rep["results"]] == ["torch-cpu:fp32"]
    assert rep["skipped"][0]["case"] == "tensorrt:fp16" and "TensorRT" in rep["skipped"][0]["reason"]
    assert "skipped" in format_table(rep)
    with pytest.raises(BackendUnavailable, match="none of the requested backends"):
        run_bench(model, [Case("tensorrt:fp16")], settings)


def test_compare_reports(tiny_report, tmp_path):
    faster = json.loads(json.dumps(tiny_report))
    for r in faster["results"]:
        r["ms"]["p50"] /= 2
    faster["results"].append({**faster["results"][0], "case": "torch-cuda:fp16"})
    rows = compare_reports(tiny_report, faster)
    paired = [r for r in rows if "speed_ratio" in r]
    assert len(paired) == len(tiny_report["results"])
    assert all(r["speed_ratio"] == pytest.approx(2.0) for r in paired)
    assert [r["only_in"] for r in rows if "only_in" in r] == ["b"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(UsageError, match="not an mpv-srunet bench report"):
        load_report(bad)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MPV_SRUNET_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "mpv_srunet.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_cli_json_output_and_compare(tmp_path, tiny_weights):
    out = tmp_path / "a.json"
    r = _cli("bench", "--weights", str(tiny_weights), "--backend", "torch-cpu:fp32,authors-style", "--size",
             "64x48", "--frames", "2", "--warmup", "0", "--threads", "1", "--json", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # with -o the report goes to the file only (issue 17)
    rep = json.loads(out.read_text())
    assert {(e["case"], e["mode"]) for e in rep["results"]} == {
        ("torch-cpu:fp32", "model"), ("torch-cpu:fp32", "e2e"), ("authors-style", "model"), ("authors-style", "e2e")}
    assert rep["settings"]["weights_sha256"] and rep["settings"]["size"] == "64x48"
    r = _cli("bench", "--compare", str(out), str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "torch-cpu:fp32" in r.stdout and "1.00x" in r.stdout


def test_cli_errors_are_one_line(tmp_path, tiny_weights):
    for args, needle in [
        (("--size", "64by48"), "--size"),
        (("--frames", "0"), "--frames"),
        (("--backend", "nonesuch"), "unknown backend"),
        (("--compare", str(tmp_path / "missing.json"), str(tmp_path / "missing.json")), "cannot read"),
    ]:
        r = _cli("bench", "--weights", str(tiny_weights), *args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr and "Traceback" not in r.stderr


def test_cli_tensorrt_only_fails_cleanly_without_it(tmp_path, tiny_weights):
    from mpv_srunet.backends import available_backends

    if available_backends()["tensorrt"] == "ok":
        pytest.skip("TensorRT runs here")
    r = _cli("bench", "--weights", str(tiny_weights), "--backend", "tensorrt", "--size", "32x32", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "TensorRT" in r.stderr
