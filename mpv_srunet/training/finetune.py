"""Per-video fine-tuning (the paper's third experiment, sec. 5.3).

A streaming service knows the exact clip it sends, so it can over-fit the model
to it: ground truth = the clip, input = the clip downscaled by 2 and encoded with
H.265 at the CRF it will be streamed at. It starts from the shipped weights (the
``default`` preset at its default detail strength; fused, 1.33 MB in fp16) and
trains with LPIPS(VGG, through the Nyquist blur of losses.py) + (1-SSIM) + L1 (the paper's generator loss without the
discriminator, plus L1 to hold PSNR). The weights travel with the video as a
sidecar, ``VIDEO.srunet.safetensors``, which the player picks up
(:func:`mpv_srunet.weights.sidecar_weights_for`).

A sidecar must pay: on the clip's own frames it must beat the weights it started
from by at least ``min_gain`` (10 %) in LPIPS-alex with no PSNR-Y loss, and it must
not paint a 2-pixel stripe/checkerboard texture: its grid share (metrics/grid.py) may
be at most ``max_grid_ratio`` (1.5) times the base's, or white noise's at that frame
size when that is higher. (LPIPS rewards period-2 energy: fitting the example clip
with unblurred LPIPS-VGG gains 14.8 % LPIPS-alex at +0.07 dB by raising the grid share
from 0.003 to 0.100, docs/training.md.) The best
checkpoint (measured every ``eval_every`` steps) that does is written, and once one
does, ``patience`` measurements without a better one end the run early; when none
does, nothing is written and :class:`NoGain` says why. (The frames measured are
frames the model was fitted to: that is the per-video mode's point. LPIPS-alex,
the judge, is never a training loss.)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import SRUNetError, UsageError
from ..metrics.grid import GRID_RATIO, grid_limit, grid_share, white_noise_share
from ..model import SRUNet, reparameterize_model
from ..weights import SIDECAR_SUFFIX, load_model, save_weights
from .data import MemoryPairs, PatchSampler, crop_multiple, iter_video_frames, x265_roundtrip
from .evaluate import bicubic_up, psnr_ssim_y, to_tensor, to_uint8
from .losses import GeneratorLoss, LossWeights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneOptions:
    """Options of ``mpv-srunet finetune``."""

    crf: int = 23  # CRF the clip will be streamed at (its input is encoded at this CRF)
    base: str | None = None  # weights to start from; None: the shipped weights
    strength: float | None = None  # detail strength of a two-endpoint base (None: its default)
    steps: int = 1200  # optimisation steps (at most: ``patience`` can end the run earlier)
    batch: int = 4  # patches per step
    patch: int = 96  # input patch side
    lr: float = 5e-4  # Adam learning rate (1e-4: 3-13 % in 300 steps; 3e-4 and 5e-4 measured on three clips: docs/training.md)
    max_frames: int = 48  # frames of the clip used (from its start)
    eval_frames: int = 6  # frames (evenly spaced) used to measure the gain
    eval_every: int = 50  # steps between measurements (the best passing checkpoint is kept)
    patience: int = 4  # once a checkpoint passes, stop after this many measurements without a better one (0: never)
    min_gain: float = 0.10  # required relative LPIPS-alex improvement over the base (and no PSNR-Y loss)
    max_grid_ratio: float = GRID_RATIO  # grid share at most this times max(base's, white noise's) (no checkerboard)
    l1: float = 1.0  # L1 weight next to LPIPS(VGG) + (1-SSIM)
    threads: int = 1
    seed: int = 0
    max_bytes: int = 1_400_000  # size budget of the sidecar (the default model is 1.33 MB in fp16)


#: (PSNR-Y, SSIM-Y, LPIPS-alex, grid share): means over the measured frames
Score = tuple[float, float, float, float]


@dataclass
class FinetuneReport:
    """Where the weights went, their size, and the gain on the clip."""

    out: Path
    size_bytes: int
    steps: int  # steps run (fewer than asked when it stopped early)
    seconds: float
    frames: int
    bicubic: Score  # (PSNR-Y, SSIM-Y, LPIPS-alex, grid share) of H.265 + bicubic
    base: Score  # ... of the base model
    tuned: Score  # ... of the fine-tuned model (the checkpoint written)
    best_step: int = 0  # step of that checkpoint
    written: bool = True
    max_grid: float = 0.0  # the grid share a sidecar may have (:func:`grid_limit`)

    @property
    def lpips_gain(self) -> float:
        """Relative LPIPS-alex improvement over the base (0.1 = 10 % lower)."""
        return 1.0 - self.tuned[2] / self.base[2] if self.base[2] > 0 else 0.0

    @property
    def steps_per_s(self) -> float:
        return self.steps / max(self.seconds, 1e-9)


def sidecar_path(video: Path) -> Path:
    """``clip.mkv`` -> ``clip.mkv.srunet.safetensors`` (what the player looks for first)."""
    return video.with_name(video.name + SIDECAR_SUFFIX)


class NoGain(SRUNetError):
    """Fine-tuning did not beat the base weights by the required margin: no sidecar written."""

    prefix = "srunet.finetune"

    def __init__(self, message: str, report: "FinetuneReport") -> None:
        super().__init__(message)
        self.report = report


def base_model(opts: FinetuneOptions) -> SRUNet:
    """The fused model to fine-tune: ``opts.base`` or the shipped weights (at ``opts.strength``)."""
    model, _info = load_model(opts.base, deploy=True, strength=opts.strength)
    return model.train()


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
def measure(model: nn.Module | None, pairs: MemoryPairs, idx: list[int], lpips_alex: nn.Module) -> Score:
    """Mean (PSNR-Y, SSIM-Y, LPIPS-alex, grid share) of ``model`` on full frames ``idx`` (None model: bicubic)."""
    was_training = model.training if model is not None else False
    vals = []
    for i in idx:
        lr, gt = pairs.pair(i)
        x = to_tensor(lr)
        out = to_uint8(bicubic_up(x) if model is None else model.eval()(x))[0]
        vals.append((*psnr_ssim_y(out, gt), float(lpips_alex(to_tensor(out), to_tensor(gt))[0]), grid_share(out, lr)))
    if model is not None:
        model.train(was_training)
    m = np.mean(np.asarray(vals), axis=0)
    return float(m[0]), float(m[1]), float(m[2]), float(m[3])


def passes(tuned: Score, base: Score, min_gain: float, max_grid: float) -> bool:
    """The sidecar rule: LPIPS-alex at least ``min_gain`` lower than the base's, PSNR-Y not lower,
    and the grid share (period-2 texture) not above ``max_grid``."""
    return tuned[2] <= (1.0 - min_gain) * base[2] and tuned[0] >= base[0] and tuned[3] <= max_grid


class BestPassing:
    """The best measured checkpoint that passes the sidecar rule (lowest LPIPS-alex), and when to stop:
    once one passed, ``patience`` measurements in a row without a better one end the run early
    (0: never), so a clip that pays soon does not spend the rest of ``--steps``."""

    def __init__(self, base: Score, min_gain: float, max_grid: float, patience: int) -> None:
        self.base, self.min_gain, self.max_grid, self.patience = base, min_gain, max_grid, patience
        self.score: Score = base
        self.step = 0
        self.state: dict[str, torch.Tensor] | None = None
        self.stale = 0  # measurements since the best passing one

    def offer(self, step: int, score: Score, state: Callable[[], dict[str, torch.Tensor]]) -> bool:
        """Keep ``state()`` if ``score`` passes and beats the best so far; True when the run should stop."""
        if passes(score, self.base, self.min_gain, self.max_grid) and (self.state is None or score[2] < self.score[2]):
            self.score, self.step, self.state, self.stale = score, step, state(), 0
            return False
        if self.state is not None:
            self.stale += 1
        return self.patience > 0 and self.stale >= self.patience


def _train(model: SRUNet, pairs: MemoryPairs, opts: FinetuneOptions, progress: bool,
           check: Callable[[int], bool]) -> tuple[int, float]:
    """Fit ``model`` to ``pairs`` with LPIPS(VGG, blurred) + (1-SSIM) + L1, calling ``check(step)`` every
    ``opts.eval_every`` steps and at the end (True stops the run); returns (steps run, seconds spent training)."""
    from ..backends.torch_backend import cpu_has_native_bf16
    from ..metrics.lpips import LPIPS
    from ..progress import progress_bar

    rng = np.random.default_rng(opts.seed)
    torch.manual_seed(opts.seed)
    sampler = PatchSampler(pairs, opts.patch)  # type: ignore[arg-type]
    # LPIPS through the Nyquist blur, as in training: plain LPIPS-VGG rewards a 2-pixel texture (losses.nyquist_blur)
    loss_fn = GeneratorLoss(LossWeights(l1=opts.l1, ssim=1.0, lpips=1.0, adv=0.0), LPIPS("vgg"), bf16=cpu_has_native_bf16(),
                            lpips_blur=True)
    opt = torch.optim.Adam(model.parameters(), lr=opts.lr)
    model.train()
    spent, step = 0.0, 0
    with progress_bar(opts.steps, "finetune", "step", progress) as bar:
        for step in range(1, opts.steps + 1):
            t0 = time.monotonic()
            xs, ys = sampler.batch(rng, opts.batch)
            loss, terms = loss_fn(model(to_tensor(xs)), to_tensor(ys))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            spent += time.monotonic() - t0
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in terms.items()})
            if (step % opts.eval_every == 0 or step == opts.steps) and check(step):
                break
    return step, spent


def finetune_video(video: Path, out: Path | None = None, opts: FinetuneOptions = FinetuneOptions(), *, progress: bool = True) -> FinetuneReport:
    """Fine-tune on ``video``; write fp16 deploy-form weights to ``out`` (default: the sidecar)
    only when they pay (:func:`passes`), else raise :class:`NoGain` and write nothing."""
    from ..metrics.lpips import LPIPS

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
        raise UsageError(f"{opts.base or 'the shipped weights'}: {size / 1e6:.2f} MB in fp16, over the {opts.max_bytes / 1e6:.2f} MB budget")
    pairs = clip_pairs(video, opts)
    idx = sorted({int(i) for i in np.linspace(0, len(pairs) - 1, min(opts.eval_frames, len(pairs)))})
    lpips_alex = LPIPS("alex")
    bicubic, base = measure(None, pairs, idx, lpips_alex), measure(model, pairs, idx, lpips_alex)
    h, w = pairs.pair(0)[1].shape[:2]
    max_grid = grid_limit(base[3], white_noise_share(h, w), opts.max_grid_ratio)
    best = BestPassing(base, opts.min_gain, max_grid, opts.patience)

    def check(step: int) -> bool:
        score = measure(model, pairs, idx, lpips_alex)
        log.info("step %d: PSNR-Y %.3f LPIPS-alex %.4f grid %.4f (base %.3f / %.4f / %.4f)", step, score[0], score[2],
                 score[3], base[0], base[2], base[3])
        stop = best.offer(step, score, lambda: {k: v.detach().clone() for k, v in model.state_dict().items()})
        if stop:
            log.info("step %d: no better passing checkpoint in %d measurements since step %d: stopping early",
                     step, opts.patience, best.step)
        return stop

    steps, seconds = _train(model, pairs, opts, progress, check) if opts.steps > 0 else (0, 0.0)
    rep = FinetuneReport(out, 0, steps, seconds, len(pairs), bicubic, base, best.score, best.step,
                         max_grid=max_grid, written=False)
    if best.state is None:
        last = measure(model, pairs, idx, lpips_alex) if opts.steps > 0 else base
        rep.tuned = last
        raise NoGain(
            f"no sidecar written: after {opts.steps} steps LPIPS-alex {last[2]:.4f} vs {base[2]:.4f} for the base "
            f"({100 * rep.lpips_gain:+.1f} %, needs >= {100 * opts.min_gain:.0f} %), PSNR-Y {last[0]:.3f} vs {base[0]:.3f} dB "
            f"(must not drop) and grid share {last[3]:.4f} (at most {max_grid:.4f}) on {len(idx)} frames of {video.name}", rep)
    model.load_state_dict(best.state)
    deploy = model.eval()
    tuned = best.score
    meta = {
        "provenance": {"finetuned_on": video.name, "crf": opts.crf, "frames": len(pairs),
                       "base": opts.base or "shipped weights", "base_strength": opts.strength,
                       "steps": best.step, "of_steps": steps, "seconds": round(seconds, 1),
                       "loss": f"LPIPS(VGG, through the Nyquist blur) + (1-SSIM) + {opts.l1:g} L1", "lr": opts.lr},
        "validation": {"frames": len(idx), "psnr_y": tuned[0], "ssim_y": tuned[1], "lpips_alex": tuned[2],
                       "grid_share": tuned[3], "max_grid_share": max_grid,
                       "base_psnr_y": base[0], "base_ssim_y": base[1], "base_lpips_alex": base[2], "base_grid_share": base[3],
                       "bicubic_psnr_y": bicubic[0], "bicubic_ssim_y": bicubic[1], "bicubic_lpips_alex": bicubic[2],
                       "note": "measured on the clip it was fitted to"},
    }
    save_weights(out, deploy, meta, half=True)
    rep.size_bytes, rep.written = out.stat().st_size, True
    return rep
