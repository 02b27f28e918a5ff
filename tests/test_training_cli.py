"""`mpv-srunet train` and `mpv-srunet finetune` end to end, on real photos and a real H.265 clip."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from mpv_srunet.cli import main

PHOTOS = Path("/usr/share/backgrounds")


def _two_photos(tmp_path: Path) -> tuple[Path, Path]:
    cands = sorted(PHOTOS.glob("*.jpg"))
    if len(cands) < 2:
        pytest.skip("needs real photos: install Debian lomiri-wallpapers-16.04 (./install.sh --dev)")
    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir()
    val.mkdir()
    shutil.copy(cands[0], train)
    shutil.copy(cands[1], val)
    return train, val


def test_cli_prepare_run_export(tmp_path: Path, capsys, tiny_weights: Path) -> None:
    import torch

    from mpv_srunet.weights import load_model

    train, val = _two_photos(tmp_path)
    data, run, out = tmp_path / "pairs", tmp_path / "run", tmp_path / "w.safetensors"
    assert main(["train", "prepare", str(train), "--val", str(val), "--out", str(data), "--crf", "23,30",
                 "--gt-width", "384", "--x265-preset", "ultrafast", "--no-progress"]) == 0
    assert "2 training pairs from 1 sources, 1 validation pairs" in capsys.readouterr().out
    assert main(["train", "run", "--data", str(data), "--out", str(run), "--preset", "lite", "--steps", "3",
                 "--batch", "2", "--patch", "32", "--val-crop", "64", "--no-progress", "--bf16"]) == 0
    assert "val PSNR-Y" in capsys.readouterr().out
    for name in ("checkpoint.pt", "log.csv", "val.csv", "run.json", "plot.png"):
        assert (run / name).is_file(), name
    # --resume takes the run's own options (preset, batch, patch, data, bf16); only --steps is new
    assert main(["train", "run", "--out", str(run), "--resume", "--steps", "4", "--warm-lr", "5e-4", "--no-progress"]) == 0
    assert ": step 4," in capsys.readouterr().out
    import json

    cfg = json.loads((run / "run.json").read_text())["config"]
    assert (cfg["preset"], cfg["batch"], cfg["patch"], cfg["bf16"], cfg["data"]) == ("lite", 2, 32, True, str(data))
    card = tmp_path / "CARD.md"
    assert main(["train", "export", str(run), str(out), "--eval", "--compare", str(tiny_weights), "--card", str(card)]) == 0
    printed = capsys.readouterr().out
    assert "this model: PSNR-Y" in printed and f"{tiny_weights}: PSNR-Y" in printed
    text = card.read_text()
    assert "| **this model** |" in text and tiny_weights.name in text and "4 steps of batch 2" in text
    model, info = load_model(out)
    assert info.form == "deploy" and info.cfg.n_filters == 32
    assert info.metadata["training"]["steps"] == 4
    assert info.metadata["training"]["lr_schedule"] == [{"lr": 1e-4, "until_step": 3}, {"lr": 5e-4, "until_step": 4}]
    assert "Adam lr 0.0001 to step 3, then 0.0005 to step 4" in text
    v = info.metadata["validation"]
    assert v["n"] == 1 and np.isfinite(v["psnr_y"]) and np.isfinite(v["bicubic_psnr_y"])
    # a second stage started from the first run's generator records the chain
    run2, out2 = tmp_path / "run2", tmp_path / "w2.safetensors"
    assert main(["train", "run", "--data", str(data), "--out", str(run2), "--preset", "lite", "--steps", "1",
                 "--batch", "2", "--patch", "32", "--val-crop", "64", "--no-progress", "--init", str(run / "checkpoint.pt")]) == 0
    assert main(["train", "export", str(run2), str(out2)]) == 0
    meta = load_model(out2)[1].metadata
    stage = meta["provenance"]["earlier_stages"][0]
    assert meta["training"]["total_steps"] == 5 and stage["steps"] == 4
    assert (stage["phase"], stage["lr"]) == ("warm", 5e-4)  # the first run never left its warm start
    # provenance paths are relative to the folder holding the runs, not this machine's absolute ones
    assert meta["provenance"]["init"] == "run/checkpoint.pt" and meta["provenance"]["earlier_stages"][0]["data"] == "pairs"
    # network interpolation with the run it started from; alpha 0 gives that run's weights back
    out3 = tmp_path / "w3.safetensors"
    assert main(["train", "export", str(run2), str(out3), "--blend", str(run), "--alpha", "0", "--card", str(card)]) == 0
    first, blended = load_model(out)[0].state_dict(), load_model(out3)
    assert all(np.allclose(first[k].numpy(), v.numpy(), atol=1e-6) for k, v in blended[0].state_dict().items())
    assert blended[1].metadata["provenance"]["interpolation"]["alpha"] == 0.0
    assert "network interpolation" in card.read_text()
    # --endpoints: one detail-strength file; strength 0 is the first run, 1 the second, default alpha
    out4 = tmp_path / "w4.safetensors"
    assert main(["train", "export", str(run2), str(out4), "--blend", str(run), "--alpha", "0.3", "--endpoints", "--eval"]) == 0
    second = load_model(out2)[0].state_dict()
    at0, at1, at_default = load_model(out4, strength=0.0), load_model(out4, strength=1.0), load_model(out4)
    assert all(torch.equal(first[k], v) for k, v in at0[0].state_dict().items())
    assert all(torch.equal(second[k], v) for k, v in at1[0].state_dict().items())
    assert at_default[1].strength == 0.3 and at_default[1].metadata["validation"]["n"] == 1
    assert "endpoints" in at_default[1].metadata["provenance"]["interpolation"]
    # --blend a weights file: a two-endpoint file lends its fidelity endpoint (a new perceptual run next to
    # a shipped file's fidelity end); the blend is made in the fused form
    out6 = tmp_path / "w6.safetensors"
    assert main(["train", "export", str(run2), str(out6), "--blend", str(out4), "--alpha", "0.5", "--endpoints"]) == 0
    at0, at1 = load_model(out6, strength=0.0), load_model(out6, strength=1.0)
    assert all(torch.equal(first[k], v) for k, v in at0[0].state_dict().items())
    assert all(torch.equal(second[k], v) for k, v in at1[0].state_dict().items())
    assert at0[1].metadata["provenance"]["interpolation"]["with"] == "w4.safetensors"  # relative to the project folder
    from mpv_srunet.training.export import full_validation
    from mpv_srunet.weights import file_sha256, read_endpoints

    rec = at0[1].metadata["provenance"]["blend_file"]  # the blended file's history stays in the new one
    assert rec["sha256"] == file_sha256(out4) and rec["training"]["steps"] == 1 and rec["srunet.default_strength"] == 0.3
    out7 = tmp_path / "w7.safetensors"
    assert main(["train", "export", str(run2), str(out7), "--blend", str(out), "--alpha", "0.5"]) == 0  # one-set file
    half = load_model(out7)[0].state_dict()
    assert all(torch.allclose(half[k], (first[k] + second[k]) / 2, atol=1e-6) for k in half)
    # --into FILE --endpoint NAME: one endpoint of a two-endpoint file replaced by a run (a longer-trained
    # fidelity end next to a shipped perceptual end); the other is kept bit for bit, and the file's history
    capsys.readouterr()
    out8 = tmp_path / "w8.safetensors"
    assert main(["train", "export", str(run2), str(out8), "--into", str(out4), "--endpoint", "fidelity",
                 "--strength", "0.6"]) == 0
    assert "fidelity endpoint replaced" in capsys.readouterr().out
    (old_ends, _, _), (new_ends, _, _) = read_endpoints(out4), read_endpoints(out8)
    assert all(torch.equal(second[k], new_ends.fidelity[k]) for k in second)
    assert all(torch.equal(old_ends.perceptual[k], new_ends.perceptual[k]) for k in old_ends.perceptual)
    assert new_ends.default_strength == 0.6
    meta8 = load_model(out8)[1].metadata
    rec = meta8["endpoints"]["fidelity"]
    assert rec["replaces"]["sha256"] == file_sha256(out4) and rec["training"]["steps"] == 1
    assert rec["validation"]["n"] == 1 and rec["provenance"]["init"] == "run/checkpoint.pt"
    assert meta8["provenance"]["interpolation"]["alpha"] == 0.3  # w4's own history stays
    assert meta8["validation"]["psnr_y"] == pytest.approx(full_validation(load_model(out8)[0], data)["psnr_y"])
    for bad, why in ((["--into", str(out4)], "go together"), (["--into", str(out), "--endpoint", "fidelity"], "one set of weights"),
                     (["--into", str(out4), "--endpoint", "fidelity", "--blend", str(run)], "drop --blend"),
                     (["--into", str(out4), "--endpoint", "fidelity", "--strength", "2"], "strength 2")):
        assert main(["train", "export", str(run2), str(tmp_path / "bad.safetensors"), *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert why in err and len(err.splitlines()) == 1 and not (tmp_path / "bad.safetensors").exists()
    assert main(["train", "export", str(run2), str(out4), "--endpoints"]) == 2
    assert "--endpoints needs --blend" in capsys.readouterr().err
    assert main(["train", "export", str(run2), str(out3), "--blend", str(run), "--alpha", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "alpha" in err and len(err.splitlines()) == 1
    # a missing --compare file stops the export before anything is written
    out5 = tmp_path / "w5.safetensors"
    assert main(["train", "export", str(run2), str(out5), "--compare", str(tmp_path / "nope.pth")]) != 0
    err = capsys.readouterr().err.strip()
    assert "nope.pth" in err and len(err.splitlines()) == 1 and not out5.exists()


def test_cli_prepare_video_frames_and_stride_set_the_video_pairs(tmp_path: Path, capsys) -> None:
    """A real H.265 clip among the sources: --video-frames 6 --video-stride 2 keeps frames 0, 2, 4."""
    import json

    from conftest import make_h265_clip

    _, val = _two_photos(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    make_h265_clip(src / "clip.mkv", 256, 192, frames=10, audio=False)
    data = tmp_path / "pairs"
    assert main(["train", "prepare", str(src), "--val", str(val), "--out", str(data), "--crf", "23,30", "--gt-width", "384",
                 "--x265-preset", "ultrafast", "--video-frames", "6", "--video-stride", "2", "--no-progress"]) == 0
    assert "6 training pairs from 1 sources" in capsys.readouterr().out  # 3 frames x 2 CRFs
    meta = json.loads((data / "meta.json").read_text())
    assert [(s["kind"], s["pairs"]) for s in meta["sources"] if s["split"] == "train"] == [("video", 6)]
    assert (meta["options"]["video_max_frames"], meta["options"]["video_stride"]) == (6, 2)
    assert main(["train", "prepare", str(src), "--out", str(tmp_path / "o"), "--video-stride", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--video-stride 0" in err and len(err.splitlines()) == 1 and not (tmp_path / "o").exists()


def test_cli_train_errors_are_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["train", "prepare", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mpv-srunet: error: srunet: no images or videos found") and err.count("\n") == 1
    assert main(["train", "run", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "not a prepared data folder" in capsys.readouterr().err
    assert main(["finetune", str(tmp_path / "missing.mkv")]) == 2
    assert "no such video file" in capsys.readouterr().err
    assert main(["finetune", str(tmp_path / "missing.mkv"), "--patience", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--patience >= 0" in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_ctrl_c_checkpoints_between_steps_and_resume_continues(tmp_path: Path, sig) -> None:
    """A real Ctrl-C (SIGINT) or hang-up to a running `train run`: exit 130 / 129 and a checkpoint
    that resumes."""
    import os
    import subprocess
    import sys
    import time

    from mpv_srunet.training.checkpoint import load_checkpoint

    train, val = _two_photos(tmp_path)
    data, run = tmp_path / "pairs", tmp_path / "run"
    assert main(["train", "prepare", str(train), "--val", str(val), "--out", str(data), "--gt-width", "384",
                 "--x265-preset", "ultrafast", "--no-progress"]) == 0
    args = [sys.executable, "-m", "mpv_srunet.cli", "train", "run", "--data", str(data), "--out", str(run), "--preset",
            "lite", "--batch", "1", "--patch", "32", "--log-every", "1", "--val-every", "0", "--val-crop", "64",
            "--ckpt-every", "100000", "--ckpt-minutes", "1000", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(args + ["--steps", "100000"], env=env, stderr=subprocess.PIPE, text=True)
    log = run / "log.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not log.exists() or log.read_text().count("\n") < 3):
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert f"interrupted by {sig.name}" in err and "Traceback" not in err
    step = int(load_checkpoint(run / "checkpoint.pt")["step"])
    assert step >= 2
    done = subprocess.run(args + ["--steps", str(step + 2), "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(load_checkpoint(run / "checkpoint.pt")["step"]) == step + 2


def test_cli_settle_refits_only_the_perceptual_output_layer(tmp_path: Path, capsys) -> None:
    """`train settle` on a two-endpoint file: the fidelity endpoint and the perceptual body are kept
    bit for bit, the perceptual endpoint's conv_last is re-fitted, provenance says how; the default
    strength is re-picked on validation (these random endpoints beat bicubic at no strength, so the
    file's is kept, and said), kept, or given; bad input is one line and exit 2, an existing output is
    not replaced without --overwrite."""
    import torch

    from mpv_srunet.metrics import MetricUnavailable
    from mpv_srunet.metrics.lpips import LPIPS
    from mpv_srunet.model import create_model, reparameterize_model
    from mpv_srunet.weights import load_model, read_endpoints, save_endpoints

    try:
        LPIPS("vgg")
    except MetricUnavailable as e:
        pytest.skip(str(e))
    train, val = _two_photos(tmp_path)
    data = tmp_path / "pairs"
    assert main(["train", "prepare", str(train), "--val", str(val), "--out", str(data), "--crf", "23",
                 "--gt-width", "384", "--x265-preset", "ultrafast", "--no-progress"]) == 0
    torch.manual_seed(0)
    fid, perc = (reparameterize_model(create_model("lite").eval()) for _ in range(2))
    src, out = tmp_path / "ends.safetensors", tmp_path / "settled.safetensors"
    save_endpoints(src, fid, perc, 0.8, {"note": "test endpoints", "default_strength_note": "0.8: why",
                                         "endpoints": {"perceptual": {"what": "a GAN run", "validation": {"n": 0}}}})
    capsys.readouterr()
    assert main(["train", "settle", str(src), str(out), "--data", str(data), "--steps", "3", "--batch", "2",
                 "--patch", "32", "--threads", "1", "--no-progress"]) == 0
    printed, err = capsys.readouterr()
    assert "output layer settled in 3 steps" in printed and "grid" in printed
    assert "strength 0.5:" in printed and "default strength 0.80 (kept)" in printed
    assert "no strength passes the rule (no blend beats H.265 + bicubic" in err
    (a, _, _), (b, _, _) = read_endpoints(src), read_endpoints(out)
    assert b.default_strength == 0.8
    assert all(torch.equal(a.fidelity[k], b.fidelity[k]) for k in a.fidelity)
    changed = {k for k in a.perceptual if not torch.equal(a.perceptual[k], b.perceptual[k])}
    assert changed and changed <= {"conv_last.weight", "conv_last.bias"}, changed
    _, info = load_model(out)
    assert info.metadata["note"] == "test endpoints" and info.metadata["default_strength_note"] == "0.8: why"
    assert info.metadata["settled"][-1]["steps"] == 3 and "nyquist_blur" in info.metadata["settled"][-1]["what"]
    assert info.metadata["settled"][-1]["validation"]["n"] == 1
    # the perceptual endpoint's record now describes the settled tensors
    assert info.metadata["endpoints"]["perceptual"] == {"what": "a GAN run", "validation": info.metadata["settled"][-1]["validation"]}
    pick = info.metadata["default_strength_pick"]
    assert pick["picked"] is None and [r["strength"] for r in pick["sweep"]] == [round(0.1 * i, 1) for i in range(11)]
    assert "grid share" in pick["rule"]
    # settling again keeps the first run's provenance; a given strength is the new default; --layers
    # re-fits the last decoder stage too, and nothing else
    again = tmp_path / "again.safetensors"
    assert main(["train", "settle", str(out), str(again), "--data", str(data), "--steps", "2", "--batch", "2",
                 "--patch", "32", "--threads", "1", "--strength", "0.5", "--layers", "dconv_up1,conv_last",
                 "--min-grain", "0.01", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "default strength 0.50 (given)" in printed and "dconv_up1 + conv_last settled in 2 steps" in printed
    c = read_endpoints(again)[0]
    assert c.default_strength == 0.5
    changed = {k.split(".")[0] for k in b.perceptual if not torch.equal(b.perceptual[k], c.perceptual[k])}
    assert changed == {"conv_last", "dconv_up1"}, changed
    assert all(torch.equal(b.fidelity[k], c.fidelity[k]) for k in b.fidelity)
    meta = load_model(again)[1].metadata
    assert [r["steps"] for r in meta["settled"]] == [3, 2]
    assert meta["settled"][0]["layers"] == ["conv_last"] and meta["settled"][1]["layers"] == ["dconv_up1", "conv_last"]
    assert "dconv_up1 + conv_last re-fitted" in meta["settled"][1]["what"]
    assert "min_grain" not in meta["settled"][0] and meta["settled"][1]["min_grain"] == 0.01
    assert meta["settled"][1]["sources"] == 1  # the one training photo (real photos carry grain)
    # "validation" is what the file gives at its (new) default strength; the old default's note is gone
    assert meta["validation"]["n"] == 1 and "default_strength_note" not in meta
    again_model = load_model(again)[0]
    from mpv_srunet.training.export import full_validation
    assert full_validation(again_model, data)["psnr_y"] == pytest.approx(meta["validation"]["psnr_y"])

    before = out.read_bytes()
    assert main(["train", "settle", str(src), str(out), "--data", str(data), "--steps", "1"]) == 2
    assert main(["train", "settle", str(src), str(tmp_path / "x.safetensors"), "--data", str(tmp_path / "nope")]) == 2
    assert main(["train", "settle", str(tmp_path / "missing.safetensors"), str(tmp_path / "y.safetensors"),
                 "--data", str(data)]) == 2
    assert main(["train", "settle", str(src), str(tmp_path / "z.safetensors"), "--data", str(data), "--strength", "2"]) == 2
    assert main(["train", "settle", str(src), str(tmp_path / "z.safetensors"), "--data", str(data), "--layers", "to_rgb"]) == 2
    assert main(["train", "settle", str(src), str(tmp_path / "z.safetensors"), "--data", str(data), "--min-grain", "-1"]) == 2
    assert main(["train", "settle", str(src), str(tmp_path / "z.safetensors"), "--data", str(data), "--min-grain", "nan"]) == 2
    err = capsys.readouterr().err
    assert "exists; pass --overwrite" in err and "not a folder made by" in err and "Traceback" not in err
    assert "strength 2" in err and "--layers to_rgb: expected" in err and not (tmp_path / "z.safetensors").exists()
    assert out.read_bytes() == before and not (tmp_path / "x.safetensors").exists() and not (tmp_path / "y.safetensors").exists()
