"""Settle the output layer of a GAN-trained generator on the anti-aliased loss.

SR-UNet's 2x output is ``PixelShuffle(conv_last(features))``: one 1x1 conv gives each
of the four sub-pixel phases its own weights over the last feature map, and phase
differences that do not follow the content are a 2-pixel stripe/checkerboard (the
``grid`` metric, :mod:`mpv_srunet.metrics.grid`).

The paper's LPIPS-VGG rewards that texture (taking it out of the GAN-trained weights'
output raises LPIPS-VGG by 7.5 % and lowers L1 and 1-SSIM; docs/training.md, "Period-2
texture"), so the GAN phase learns it. Training with ``--lpips-view blur``
(:func:`.losses.nyquist_blur`) removes the cause. For weights already trained without
it, re-fitting only ``conv_last`` on LPIPS-VGG (through the blur) + (1 - SSIM), body
frozen, removes most of the texture in tens of steps: measured on the perceptual
endpoint shipped before it was settled, the grid share of the validation crops fell
0.077 -> 0.012 in 40 steps while PSNR-Y, SSIM-Y and LPIPS-alex all improved.

:func:`settle_output_layer` does that; ``mpv-srunet train settle`` applies it to the
perceptual endpoint of a weights file. Settled on ``conv_last`` alone, the shipped
endpoint's validation grid share stopped at 0.0027 (1.9x white noise's); re-fitting the
last decoder stage too (``layers=("conv_last", "dconv_up1")``, whose features the output
layer mixes) took it lower at better PSNR-Y and LPIPS-alex (docs/training.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model import SRUNet
from .data import PairStore, PatchSampler
from .evaluate import to_tensor
from .losses import GeneratorLoss, LossWeights


#: the SR-UNet modules ``train settle --layers`` may re-fit, output end first
SETTLE_LAYERS = ("conv_last", "dconv_up1", "dconv_up2", "dconv_up3")


def check_layers(layers: Sequence[str]) -> tuple[str, ...]:
    """``layers`` without repeats, in order; ValueError unless some of :data:`SETTLE_LAYERS` and nothing else."""
    layers = tuple(dict.fromkeys(layers))
    if not layers or any(n not in SETTLE_LAYERS for n in layers):
        raise ValueError(f"layers to settle: {', '.join(layers) or 'none given'}; expected some of {', '.join(SETTLE_LAYERS)}")
    return layers


def settle_output_layer(
    model: SRUNet,
    data: str | Path,
    *,
    steps: int = 40,
    batch: int = 8,
    patch: int = 96,
    lr: float = 1e-4,
    seed: int = 0,
    layers: Sequence[str] = ("conv_last",),
    min_grain: float = 0.0,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Re-fit ``model``'s output layer in place on LPIPS(VGG) + (1 - SSIM), body frozen.

    ``layers`` names the modules of :class:`~mpv_srunet.model.SRUNet` that are re-fitted
    (default: ``conv_last`` alone; ``dconv_up1`` adds the last decoder stage, whose
    features the output layer mixes).

    Patches come from the training split of ``data`` (a ``train prepare`` folder), as in
    the GAN phase, LPIPS through :func:`.losses.nyquist_blur` (no discriminator: at its
    weight, 1e-3, its gradient is < 0.1 % of LPIPS's here); ``min_grain`` > 0 keeps only the
    sources with that much camera-like grain (:func:`.data.grain_level`). Returns a
    summary for provenance (steps, lr, losses at the start and the end).
    """
    from ..metrics.lpips import LPIPS

    if steps <= 0 or batch <= 0 or patch <= 0 or patch % 8:
        raise ValueError(f"steps/batch must be > 0 and patch a positive multiple of 8; got {steps}/{batch}/{patch}")
    layers = check_layers(layers)
    modules = dict(model.named_children())
    sampler = PatchSampler(PairStore(Path(data), "train"), patch, min_grain=min_grain)
    loss_fn = GeneratorLoss(LossWeights(l1=0.0, ssim=1.0, lpips=1.0, adv=0.0), LPIPS("vgg"), lpips_blur=True)
    rng = np.random.default_rng(seed)
    params = [p for n in layers for p in modules[n].parameters()]
    was_training = model.training
    saved = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    t0 = time.monotonic()
    try:
        model.train()
        for step in range(1, steps + 1):
            xs, ys = sampler.batch(rng, batch)
            total, _ = loss_fn(model(to_tensor(xs)), to_tensor(ys))
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            losses.append(float(total.detach()))
            if on_step is not None:
                on_step(step, losses[-1])
    finally:
        for p, r in zip(model.parameters(), saved):
            p.requires_grad_(r)
        model.train(was_training)
    k = max(1, min(10, steps // 4))
    what, rest = ("output layer (conv_last)", "body") if layers == ("conv_last",) else (" + ".join(layers), "the rest")
    return {
        "what": f"{what} re-fitted on LPIPS(VGG, through nyquist_blur) + (1 - SSIM), {rest} frozen (mpv_srunet.training.settle)",
        "layers": list(layers),
        "data": str(data), **({"min_grain": min_grain, "sources": len(sampler.sources)} if min_grain > 0 else {}),
        "steps": steps, "batch": batch, "patch": patch, "lr": lr, "seed": seed,
        "loss_first": float(np.mean(losses[:k])), "loss_last": float(np.mean(losses[-k:])),
        "seconds": round(time.monotonic() - t0, 1),
    }
