"""Per-video fine-tuning (the paper's third experiment, sec. 5.3).

A streaming service knows the exact clip it sends, so it can over-fit a small
model to it: ground truth = the clip, input = the clip downscaled by 2 and encoded
with H.265 at the CRF it will be streamed at. The resulting weights are tiny (a
``lite`` model in fp16 is about 0.34 MB, under the paper's 1.1 MB budget) and
travel with the video as a sidecar, ``VIDEO.srunet.safetensors``, which the
player picks up (:func:`mpv_srunet.weights.sidecar_weights_for`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from ..model import SRUNet, create_model, reparameterize_model
from ..weights import SIDECAR_SUFFIX, load_model, save_weights
from .data import MemoryPairs, PatchSampler, crop_multiple, iter_video_frames, x265_roundtrip
from .evaluate import bicubic_up, psnr_ssim_y, to_tensor, to_uint8
from .losses import GeneratorLoss, LossWeights


@dataclass(frozen=True)
class FinetuneOptions:
    """Options of ``mpv-srunet finetune``."""

    crf: int = 23  # CRF the clip will be streamed at (its input is encoded at this CRF)
    preset: str = "lite"  # model preset; must fit max_bytes in fp16
    base: str | None = None  # weights to start from (same preset); None: exact bicubic start
    steps: int = 300  # optimisation steps
    batch: int = 4  # patches per step
    patch: int = 96  # input patch side
    lr: float = 5e-4  # Adam learning rate (higher than from-scratch training: few steps)
    max_frames: int = 48  # frames of the clip used (from its start)
    eval_frames: int = 6  # frames (evenly spaced) used to measure the gain
    threads: int = 1
    seed: int = 0
    max_bytes: int = 1_100_000  # size budget of the sidecar (paper: 1.1 MB)


@dataclass
class FinetuneReport:
    """Where the weights went, their size, and the gain on the clip."""

    out: Path
    size_bytes: int
    steps: int
    seconds: float
    frames: int
    bicubic: tuple[float, float]  # (PSNR-Y, SSIM-Y) of H.265 + bicubic
    base: tuple[float, float]  # ... of the base model
    tuned: tuple[float, float]  # ... of the fine-tuned model

    @property
    def steps_per_s(self) -> float:
        return self.steps / max(self.seconds, 1e-9)


def sidecar_path(video: Path) -> Path:
    """``clip.mkv`` -> ``clip.mkv.srunet.safetensors`` (what the player looks for first)."""
    return video.with_name(video.name + SIDECAR_SUFFIX)


def base_model(opts: FinetuneOptions) -> SRUNet:
    """Train-form (or, for a fused base file, deploy-form) model to fine-tune."""
    if opts.base is None:
        model = create_model(opts.preset, deploy=False)
        nn.init.zeros_(model.conv_last.weight)
        nn.init.zeros_(model.conv_last.bias)
        return model
    model, info = load_model(opts.base, deploy=False) if _is_train_form(opts.base) else load_model(opts.base)
    return model.train()


def _is_train_form(path: str) -> bool:
    from ..weights import read_weights

    return read_weights(path)[2] == "train"


def fp16_size(model: SRUNet) -> int:
    """Bytes of the fused model's tensors in fp16 (the sidecar's payload)."""
    return 2 * sum(p.numel() for p in reparameterize_model(model).parameters())


def clip_pairs(video: Path, opts: FinetuneOptions) -> MemoryPairs:
    """GT frames of the clip and their downscaled, H.265-encoded (at ``opts.crf``), decoded inputs."""
    gts = [crop_multiple(f) for f in iter_video_frames(video, opts.max_frames)]
    if not gts:
        raise UsageError(f"{video}: no decodable video frames; expected a video file")
    h, w = gts[0].shape[:2]
    if min(h, w) < 2 * opts.patch:
        raise UsageError(f"{video}: {w}x{h} frames are smaller than one {2 * opts.patch}px training patch; use --patch {max(8, min(h, w) // 2 // 8 * 8)}")
    lrs = x265_roundtrip(gts, opts.crf)
    return MemoryPairs(lrs, gts, opts.crf, name=video.name)


@torch.no_grad()
def measure(model: nn.Module, pairs: MemoryPairs, idx: list[int]) -> tuple[float, float]:
    """Mean (PSNR-Y, SSIM-Y) of ``model`` on full frames ``idx`` (None model: bicubic)."""
    vals = []
    for i in idx:
        lr, gt = pairs.pair(i)
        x = to_tensor(lr)
        y = bicubic_up(x) if model is None else model.eval()(x)
        vals.append(psnr_ssim_y(to_uint8(y)[0], gt))
    m = np.mean(np.asarray(vals), axis=0)
    return float(m[0]), float(m[1])


def _train(model: SRUNet, pairs: MemoryPairs, opts: FinetuneOptions, progress: bool) -> float:
    """Over-fit ``model`` to ``pairs`` with L1 + (1-SSIM); returns the seconds spent."""
    from tqdm import tqdm

    rng = np.random.default_rng(opts.seed)
    torch.manual_seed(opts.seed)
    sampler = PatchSampler(pairs, opts.patch)  # type: ignore[arg-type]
    loss_fn = GeneratorLoss(LossWeights.warm())
    opt = torch.optim.Adam(model.parameters(), lr=opts.lr)
    model.train()
    t0 = time.monotonic()
    with tqdm(total=opts.steps, unit="step", desc="finetune", disable=not progress, dynamic_ncols=True) as bar:
        for _ in range(opts.steps):
            xs, ys = sampler.batch(rng, opts.batch)
            loss, terms = loss_fn(model(to_tensor(xs)), to_tensor(ys))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in terms.items()})
    return time.monotonic() - t0


def finetune_video(video: Path, out: Path | None = None, opts: FinetuneOptions = FinetuneOptions(), *, progress: bool = True) -> FinetuneReport:
    """Fine-tune on ``video`` and write fp16 deploy-form weights to ``out`` (default: the sidecar)."""
    video = Path(video)
    if not video.is_file():
        raise UsageError(f"{video}: no such video file")
    out = Path(out) if out is not None else sidecar_path(video)
    if out.suffix != ".safetensors":
        raise UsageError(f"{out}: expected a .safetensors output path")
    torch.set_num_threads(max(1, opts.threads))
    model = base_model(opts)
    size = fp16_size(model)
    if size > opts.max_bytes:
        what = f"--base {opts.base}" if opts.base else f"preset {opts.preset!r}"
        raise UsageError(f"{what} needs {size / 1e6:.2f} MB in fp16, over the {opts.max_bytes / 1e6:.2f} MB budget; use a lite model")
    pairs = clip_pairs(video, opts)
    idx = sorted({int(i) for i in np.linspace(0, len(pairs) - 1, min(opts.eval_frames, len(pairs)))})
    bicubic, base = measure(None, pairs, idx), measure(model, pairs, idx)
    seconds = _train(model, pairs, opts, progress)
    deploy = reparameterize_model(model).eval()
    tuned = measure(deploy, pairs, idx)
    meta = {
        "provenance": {"finetuned_on": video.name, "crf": opts.crf, "frames": len(pairs), "base": opts.base or "bicubic-exact init",
                       "steps": opts.steps, "seconds": round(seconds, 1), "loss": "L1 + (1-SSIM)"},
        "validation": {"frames": len(idx), "psnr_y": tuned[0], "ssim_y": tuned[1], "base_psnr_y": base[0], "base_ssim_y": base[1],
                       "bicubic_psnr_y": bicubic[0], "bicubic_ssim_y": bicubic[1], "note": "measured on the clip it was fitted to"},
    }
    save_weights(out, deploy, meta, half=True)
    return FinetuneReport(out, out.stat().st_size, opts.steps, seconds, len(pairs), bicubic, base, tuned)
