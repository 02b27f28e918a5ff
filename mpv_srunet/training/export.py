"""Export a training run as deploy-form weights with provenance and metrics metadata."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..model import SRUNet, SRUNetCfg, reparameterize_model
from ..weights import save_weights
from .checkpoint import CHECKPOINT_NAME, load_checkpoint
from .data import PairStore
from .evaluate import evaluate
from .loop import hardware_string


def generator_from_checkpoint(path: Path) -> tuple[SRUNet, dict[str, Any]]:
    """(train-form generator in eval mode, checkpoint dict) of a run folder or checkpoint file."""
    st = load_checkpoint(path)
    model = SRUNet(SRUNetCfg.from_dict(st["model_cfg"]), deploy=False)
    model.load_state_dict(st["generator"])
    return model.eval(), st


def full_validation(model: torch.nn.Module, data: str | Path, *, lpips: bool = True) -> dict[str, Any]:
    """Full-frame validation metrics (+ LPIPS-alex when its weights are installed)."""
    store = PairStore(Path(data), "val")
    if len(store) == 0:
        return {}
    lp = None
    if lpips:
        from ..metrics import MetricUnavailable
        from ..metrics.lpips import LPIPS

        try:
            lp = LPIPS("alex")
        except MetricUnavailable:
            lp = None
    res = evaluate(model, store, crop=0, lpips_alex=lp).as_dict()
    res["crf"] = sorted({store.crf(i) for i in range(len(store))})
    res["sources"] = sorted({Path(store.source(i)).name for i in range(len(store))})
    return res


def export_run(run: Path, out: Path, *, evaluate_full: bool = False, half: bool = False, threads: int = 1) -> dict[str, Any]:
    """Fuse the run's generator and write it to ``out`` (safetensors, atomic) with metadata."""
    if out.suffix != ".safetensors":
        raise UsageError(f"{out}: expected a .safetensors output path")
    torch.set_num_threads(max(1, threads))
    run_dir = run if run.is_dir() else run.parent
    model, st = generator_from_checkpoint(run if run.is_file() else run / CHECKPOINT_NAME)
    cfg = st["config"]
    deploy = reparameterize_model(model).eval()
    data_meta = _data_meta(Path(cfg["data"]))
    meta: dict[str, Any] = {
        "provenance": {
            "trained_by": "mpv-srunet train (mpv_srunet.training)",
            "data": data_meta,
            "init": cfg.get("init"),
            "loss": "L1 + (1-SSIM) warm start" + ("" if cfg["warm_steps"] >= st["step"] else ", then LPIPS(VGG) + (1-SSIM) + 1e-3 BCE"),
        },
        "training": {
            "steps": int(st["step"]),
            "seconds": round(float(st["elapsed"]), 1),
            "batch": cfg["batch"],
            "patch": cfg["patch"],
            "lr": cfg["warm_lr"],
            "bf16": cfg.get("bf16", False),
            "hardware": hardware_string(torch.device(cfg.get("device") if cfg.get("device") in ("cpu", "cuda") else "cpu"), cfg["threads"]),
        },
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if evaluate_full:
        meta["validation"] = full_validation(deploy, cfg["data"])
    save_weights(out, deploy, meta, half=half)
    (run_dir / "export.json").write_text(json.dumps(meta, indent=1))
    return meta


def _data_meta(folder: Path) -> dict[str, Any]:
    try:
        m = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return {"folder": str(folder)}
    return {
        "pairs": m.get("pairs"),
        "crfs": m.get("options", {}).get("crfs"),
        "val_crf": m.get("options", {}).get("val_crf"),
        "degradation": m.get("degradation"),
        "sources": {"train": sum(s["split"] == "train" for s in m["sources"]), "val": [Path(s["path"]).name for s in m["sources"] if s["split"] == "val"]},
    }
