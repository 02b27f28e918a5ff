"""`mpv-srunet finetune`: per-video weights are written only when they pay.

The rule (mpv_srunet.training.finetune.passes): on the clip's own frames, LPIPS-alex at
least 10 % below the weights it started from, with no PSNR-Y loss and no period-2
texture (grid share at most 1.5x the base's or white noise's). A run that cannot
meet it (no steps, an unreachable margin) writes nothing, says so in one line and exits 3.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mpv_srunet.cli import main
from mpv_srunet.commands.finetune import NO_GAIN_EXIT
from mpv_srunet.metrics.grid import grid_limit, white_noise_share
from mpv_srunet.training.finetune import BestPassing, passes, sidecar_path

SMALL = ["--batch", "2", "--patch", "40", "--max-frames", "6", "--no-progress"]


def test_the_rule() -> None:
    base = (30.0, 0.9, 0.20, 0.003)
    limit = grid_limit(base[3], white_noise_share(1080, 1920), 1.5)
    assert limit == 1.5 * 0.003
    assert passes((30.0, 0.9, 0.18, 0.003), base, 0.10, limit)  # exactly 10 % lower, same PSNR
    assert not passes((30.0, 0.9, 0.181, 0.003), base, 0.10, limit)  # 9.5 %
    assert not passes((29.99, 0.9, 0.10, 0.003), base, 0.10, limit)  # any PSNR-Y loss fails
    assert passes((31.0, 0.8, 0.10, 0.003), base, 0.10, limit)  # SSIM is reported, not judged
    # the example clip's unblurred-LPIPS fit: -14.8 % LPIPS-alex, +0.07 dB, but a 2-pixel texture
    assert not passes((30.07, 0.9, 0.17, 0.100), base, 0.10, limit)
    assert passes((30.0, 0.9, 0.17, limit), base, 0.10, limit)


def test_the_best_passing_checkpoint_is_kept_and_patience_ends_the_run() -> None:
    """Measurements before the first pass never stop the run; after it, ``patience`` measurements in
    a row without a better passing one do; a failing one (the checkerboard) is never kept."""
    base = (30.0, 0.9, 0.20, 0.003)
    best = BestPassing(base, 0.10, 0.0045, patience=2)
    kept = []
    def offer(step: int, lpips: float, grid: float = 0.003) -> bool:
        return best.offer(step, (30.1, 0.9, lpips, grid), lambda: kept.append(step) or {"step": step})
    assert not any(offer(s, 0.19) for s in (50, 100, 150, 200))  # -5 %: no pass, no patience spent
    assert best.state is None and best.step == 0 and best.score == base
    assert not offer(250, 0.178)  # passes: kept
    assert not offer(300, 0.170, grid=0.02)  # lower, but a checkerboard: not kept, one stale
    assert not offer(350, 0.175)  # passes, better than 0.178: kept, patience restarts
    assert not offer(400, 0.176)  # stale 1
    assert offer(450, 0.175)  # stale 2 (equal is not better): stop
    assert kept == [250, 350] and best.step == 350 and best.state == {"step": 350} and best.score[2] == 0.175
    never = BestPassing(base, 0.10, 0.0045, patience=0)
    assert not any(never.offer(s, (30.1, 0.9, 0.17, 0.003), dict) for s in range(50, 2000, 50))


def test_the_grid_limit_has_the_white_noise_floor() -> None:
    """A base smoother than white noise (grid below the noise share) is not held to its own level."""
    floor = white_noise_share(1080, 1920)
    assert grid_limit(0.0, floor) == pytest.approx(1.5 * floor) == pytest.approx(0.00217, abs=1e-5)
    assert grid_limit(0.01, floor) == pytest.approx(0.015)


def _clip(src: Path, tmp_path: Path) -> Path:
    clip = tmp_path / src.name
    shutil.copy(src, clip)
    return clip


def test_no_steps_writes_no_sidecar(h265_small_clip: Path, tmp_path: Path, capsys) -> None:
    """The shipped weights against themselves gain nothing: no file, one line, exit 3."""
    clip = _clip(h265_small_clip, tmp_path)
    assert main(["finetune", str(clip), "--steps", "0", *SMALL]) == NO_GAIN_EXIT == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("srunet.finetune: no sidecar written:") and len(err.splitlines()) == 1, err
    assert "needs >= 10 %" in err and "grid share" in err and "Traceback" not in err
    assert not sidecar_path(clip).exists() and list(tmp_path.iterdir()) == [clip]


def test_an_unreachable_margin_writes_no_sidecar(h265_small_clip: Path, tiny_weights: Path, tmp_path: Path, capsys) -> None:
    """Training runs (LPIPS-VGG + SSIM + L1 steps, periodic checks) but 99 % is out of reach."""
    clip = _clip(h265_small_clip, tmp_path)
    out = tmp_path / "w.safetensors"
    assert main(["finetune", str(clip), "-o", str(out), "--base", str(tiny_weights), "--steps", "2",
                 "--eval-every", "1", "--min-gain", "0.99", *SMALL]) == 3
    err = capsys.readouterr().err
    assert "no sidecar written: after 2 steps" in err and "needs >= 99 %" in err
    assert not out.exists() and not sidecar_path(clip).exists()


@pytest.fixture(scope="module")
def noisy_weights(tmp_path_factory) -> Path:
    """A deliberately bad start (F=16, weights with added noise: its residual swamps the picture)."""
    import torch

    from mpv_srunet.model import create_model, reparameterize_model
    from mpv_srunet.weights import save_weights

    torch.manual_seed(0)
    m = create_model("default", n_filters=16)
    for p in m.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    return save_weights(tmp_path_factory.mktemp("w") / "noisy.safetensors", reparameterize_model(m))


def test_a_sidecar_that_pays_is_written_and_loads(h265_small_clip: Path, noisy_weights: Path, tmp_path: Path, capsys) -> None:
    """From a bad start, fitting the clip beats it by far: the sidecar is written, records its
    measurements, and the player's loader takes it (one endpoint: no strength)."""
    from mpv_srunet import Upscaler
    from mpv_srunet.errors import WeightsError
    from mpv_srunet.weights import load_model, sidecar_weights_for

    clip = _clip(h265_small_clip, tmp_path)
    assert main(["finetune", str(clip), "--base", str(noisy_weights), "--steps", "20", "--eval-every", "5",
                 "--lr", "1e-3", *SMALL]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "% lower" in out and "MB (fp16)" in out
    side = sidecar_weights_for(clip)
    assert side == sidecar_path(clip)
    _, info = load_model(side)
    v = info.metadata["validation"]
    assert v["lpips_alex"] <= 0.9 * v["base_lpips_alex"] and v["psnr_y"] >= v["base_psnr_y"]
    assert v["grid_share"] <= v["max_grid_share"] == pytest.approx(1.5 * max(v["base_grid_share"], white_noise_share(96, 160)))
    prov = info.metadata["provenance"]
    assert prov["finetuned_on"] == clip.name and info.strength is None and 5 <= prov["steps"] <= prov["of_steps"] <= 20
    with pytest.raises(WeightsError, match="one set of weights"):
        load_model(side, strength=0.5)
    with Upscaler(weights=side, backend="torch-cpu") as up:
        assert up.upscale(np.full((48, 80, 3), 100, np.uint8)).shape == (96, 160, 3)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_mid_run_ends_it_cleanly(h265_small_clip: Path, tiny_weights: Path, tmp_path: Path, sig) -> None:
    """SIGTERM / a hang-up while fitting (any command, through the CLI's handler): exit 128 + N,
    one line, no traceback, no sidecar and no temporary file."""
    from test_mpv_helpers import srunet_env

    clip = _clip(h265_small_clip, tmp_path)
    err = tmp_path.parent / f"{tmp_path.name}.stderr"
    with open(err, "w") as ef:
        proc = subprocess.Popen([sys.executable, "-m", "mpv_srunet.cli", "-v", "finetune", str(clip), "--base",
                                 str(tiny_weights), "--steps", "100000", "--eval-every", "1", "--patience", "0", *SMALL],
                                stdout=subprocess.DEVNULL, stderr=ef, env=srunet_env())
    try:
        deadline = time.monotonic() + 180
        while "step 1:" not in err.read_text():  # fitting and measuring
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-2000:]
            time.sleep(0.1)
        proc.send_signal(sig)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err.read_text()
    assert proc.returncode == 128 + sig, text[-2000:]
    assert text.strip().splitlines()[-1] == f"mpv-srunet: interrupted by {sig.name}" and "Traceback" not in text
    assert list(tmp_path.iterdir()) == [clip]
