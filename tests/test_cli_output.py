"""What the commands print: readable `info` (and `--json`), and `play` saying when it falls back (issue 17)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_mpv_helpers import MPV, srunet_env

from mpv_srunet.cli import main

METADATA = {
    "provenance": {"trained_by": "tests", "data": {"pairs": {"train": 309, "val": 8}, "crfs": [20, 23, 26]},
                   "earlier_stages": [{"checkpoint": f"runs/stage{i}/checkpoint.pt", "steps": 1000 + i, "lr": 1e-4}
                                      for i in range(4)]},
    "validation": {"n": 8, "psnr_y": 40.21893737270907,
                   "per_image": [{"source": f"photo_{i}_by_someone.jpg", "psnr_y": 39.8 + i / 7, "ssim_y": 0.97}
                                 for i in range(8)]},
}


@pytest.fixture(scope="module")
def weights_with_metadata(tmp_path_factory):
    import torch

    from mpv_srunet.model import create_model
    from mpv_srunet.weights import save_weights

    torch.manual_seed(0)
    return save_weights(tmp_path_factory.mktemp("w") / "meta.safetensors", create_model("default", n_filters=8,
                        deploy=True), METADATA)


def test_info_renders_provenance_and_metrics_readably(weights_with_metadata, capsys) -> None:
    assert main(["info", str(weights_with_metadata)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(ln) for ln in lines) < 120, max(lines, key=len)  # was one JSON blob per key
    assert "provenance:" in lines and "  trained_by: tests" in lines and "    crfs: 20, 23, 26" in lines
    assert "  psnr_y: 40.2189" in lines
    table = lines[lines.index("  per_image:") + 1:][:9]
    assert table[0].split() == ["source", "psnr_y", "ssim_y"] and table[1].split()[0] == "photo_0_by_someone.jpg"
    assert "{" not in out  # no JSON left


def test_info_json_is_for_machines(weights_with_metadata, capsys) -> None:
    assert main(["info", "--json", str(weights_with_metadata)]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["metadata"] == METADATA
    assert rep["config"]["n_filters"] == 8 and rep["form"] == "deploy" and len(rep["sha256"]) == 64


@pytest.mark.mpv
@pytest.mark.skipif(MPV is None, reason="mpv binary not installed")
def test_play_says_on_stderr_when_it_plays_the_original(tmp_path, h265_small_clip) -> None:
    """Without -v: one line on stderr, not only an OSD message a headless or busy user never sees."""
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    cmd = [sys.executable, "-m", "mpv_srunet.cli", "play", str(h265_small_clip), "--no-config", "--weights", str(bad),
           "--mpv-opt", "vo=null", "--mpv-opt", "ao=null"]
    r = subprocess.run(cmd, env=srunet_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    said = [ln for ln in r.stderr.splitlines() if ln.startswith("mpv-srunet: ")]
    assert len(said) == 1 and "off for this file" in said[0] and "broken.safetensors" in said[0], r.stderr
    assert "Traceback" not in r.stderr
