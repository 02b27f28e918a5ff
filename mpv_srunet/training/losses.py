"""Training losses: the paper's generator loss and the warm-start loss.

Paper (Vaccaro et al. 2021, eq. 2): ``L_G = LPIPS_vgg(G(x), y) + (1 - SSIM(G(x), y))
+ 1e-3 * BCE(D(G(x)), 1)``. Before the GAN phase we warm the generator up with
``L1 + (1 - SSIM)`` (cheap on a CPU, and it removes most coding artifacts), in the
spirit of the authors' NoGAN-style schedule.

All images are NCHW RGB in [-1, 1] (the model's convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def ssim_term(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM`` on RGB mapped to [0, 1] (pytorch-msssim, 11x11 Gaussian window)."""
    from pytorch_msssim import ssim

    return 1.0 - ssim((sr.float() + 1) / 2, (hr.float() + 1) / 2, data_range=1.0, size_average=True)


def grid_view(x: torch.Tensor, offset: tuple[int, int]) -> torch.Tensor:
    """``x`` less one row and one column, starting at ``offset`` (dy, dx) in {0, 1}.

    LPIPS-VGG's 2x2 max-pools and the discriminator's stride-2 convs sample their
    input on a fixed 2-pixel grid. A 2x generator output of even size puts each of
    the PixelShuffle's four sub-pixel phases on the same place of that grid in every
    step, so the aliased part of those losses' gradients (sparse max-pool routing,
    stride-2 transposed convs) pushes each phase its own way, and the generator
    learns a period-2 (stripe/checkerboard) texture. Looking at the output through
    a random one-pixel offset per step moves the grid relative to the phases, so
    that bias averages out (docs/training.md, "Period-2 texture").
    """
    dy, dx = offset
    h, w = x.shape[-2:]
    return x[..., dy : h - 1 + dy, dx : w - 1 + dx]


#: 3x3 binomial ([1, 2, 1] outer [1, 2, 1]) / 16: its response is exactly 0 at period 2
NYQUIST_BLUR = ((1.0, 2.0, 1.0), (2.0, 4.0, 2.0), (1.0, 2.0, 1.0))


def nyquist_blur(x: torch.Tensor) -> torch.Tensor:
    """``x`` through a 3x3 binomial low-pass (reflect padding): period-2 content is removed.

    LPIPS-VGG rewards period-2 (2-pixel stripe/checkerboard) energy in a 2x output: on
    the GAN-trained weights, taking that energy out raises LPIPS-VGG by 7.5 % while it
    lowers L1 and 1-SSIM (docs/training.md, "Period-2 texture"), so the GAN phase learns
    to paint it. Comparing output and target through this filter (the anti-aliasing
    filter of Zhang 2019, "Making convolutional networks shift-invariant again") leaves
    LPIPS blind at period 2, neither rewarding nor asking for that band; SSIM (and L1)
    still see it and hold it to the target's.
    """
    k = torch.tensor(NYQUIST_BLUR, dtype=x.dtype, device=x.device) / 16.0
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k.expand(c, 1, 3, 3), groups=c)


def adversarial_term(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side of the BCE GAN loss: make D call the output real."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Standard BCE discriminator loss (real -> 1, generated -> 0)."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


@dataclass(frozen=True)
class LossWeights:
    """Weight of each term; 0 switches a term off (and skips its cost)."""

    l1: float = 0.0
    ssim: float = 1.0
    lpips: float = 1.0
    adv: float = 1e-3

    @classmethod
    def warm(cls) -> "LossWeights":
        """Warm start: L1 + (1 - SSIM)."""
        return cls(l1=1.0, ssim=1.0, lpips=0.0, adv=0.0)

    @classmethod
    def paper(cls) -> "LossWeights":
        """The paper's GAN loss: LPIPS(VGG) + (1 - SSIM) + 1e-3 BCE."""
        return cls(l1=0.0, ssim=1.0, lpips=1.0, adv=1e-3)


class GeneratorLoss(nn.Module):
    """Weighted sum of the enabled terms; returns (total, {term: value}) for logging.

    ``lpips`` is an LPIPS module (:class:`mpv_srunet.metrics.lpips.LPIPS`), needed only
    when its weight is non-zero; it is frozen, gradients flow to ``sr`` only. With
    ``bf16`` it runs under bfloat16 autocast; with ``lpips_blur`` it compares both images
    through :func:`nyquist_blur`.
    """

    def __init__(self, weights: LossWeights, lpips: nn.Module | None = None, *, bf16: bool = False,
                 lpips_blur: bool = False) -> None:
        super().__init__()
        self.bf16 = bf16
        self.lpips_blur = lpips_blur
        if weights.lpips > 0 and lpips is None:
            raise ValueError("an LPIPS module is needed when the LPIPS weight is > 0")
        self.w = weights
        self.lpips = lpips

    def forward(
        self, sr: torch.Tensor, hr: torch.Tensor, fake_logits: torch.Tensor | None = None,
        offset: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``offset``: LPIPS sees :func:`grid_view` of both images at that offset (None: the whole images)."""
        terms: dict[str, torch.Tensor] = {}
        if self.w.l1:
            terms["l1"] = (sr - hr).abs().mean()
        if self.w.ssim:
            terms["ssim"] = ssim_term(sr, hr)
        if self.w.lpips:
            assert self.lpips is not None
            # bf16 autocast halves the cost of the VGG pass, by far the dearest part of a GAN step
            with torch.autocast(sr.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                a, b = (sr, hr) if offset is None else (grid_view(sr, offset), grid_view(hr, offset))
                if self.lpips_blur:
                    a, b = nyquist_blur(a), nyquist_blur(b)
                terms["lpips"] = self.lpips(a, b).float().mean()
        if self.w.adv and fake_logits is not None:
            terms["adv"] = adversarial_term(fake_logits)
        weights = {"l1": self.w.l1, "ssim": self.w.ssim, "lpips": self.w.lpips, "adv": self.w.adv}
        total = sum((weights[k] * v for k, v in terms.items()), torch.zeros((), device=sr.device))
        return total, {k: float(v.detach()) for k, v in terms.items()}
