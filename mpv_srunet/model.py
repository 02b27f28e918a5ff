"""SR-UNet: the network and its RepVGG-style fusion.

Paper: F. Vaccaro, M. Bertini, T. Uricchio, A. Del Bimbo, "Fast Video Visual
Quality and Resolution Improvement using SR-UNet", ACM MM 2021. The authors'
code (github.com/fede-vaccaro/fast-sr-unet, MIT) fixed the state-dict names we
keep here so that their published checkpoints load with ``strict=True``; no code
is copied from it.

Two forms of the same network:

* **train form** (``deploy=False``): every block holds a 3x3 ``conv1`` and a 1x1
  ``conv_adapter``. When a block keeps its channel count its output is
  ``ReLU(conv1(x) + conv_adapter(x) + x)``, else ``ReLU(conv1(x))`` (the adapter
  then exists but is unused, as in the authors' checkpoints). An unused 1x1
  ``to_rgb`` is kept for the same reason.
* **deploy form** (``deploy=True``): each block is one 3x3 ``conv1`` followed by
  ReLU. :func:`reparameterize_model` turns the first into the second; the
  fusion maths is in the free functions :func:`pad_kernel_to` and
  :func:`identity_kernel`.

Input: RGB in [-1, 1], NCHW, height and width multiples of
:attr:`SRUNet.multiple_of`. Output: ``clamp(net(x) + bicubic_up(x), -1, 1)``.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SRUNetCfg:
    """Hyper-parameters of one SR-UNet variant."""

    n_filters: int = 64  # F: widest stage; the full-resolution stages use F // 2
    layer_multiplier: float = 1.0  # lm: blocks per stage = int(2*lm) first, int(3*lm) rest
    scale: int = 2  # PixelShuffle factor of the network itself
    out_scale: float | None = None  # optional final bicubic rescale (authors' 1.5x: 0.75)
    in_channels: int = 3  # RGB
    out_channels: int = 3  # RGB

    @property
    def total_scale(self) -> float:
        """Output size / input size."""
        return self.scale * (self.out_scale or 1.0)

    def blocks(self, first: bool) -> int:
        n = int((2 if first else 3) * self.layer_multiplier)
        return max(n, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SRUNetCfg":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown SR-UNet config keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**d)


#: Named variants. ``default`` is the paper's 2x model; ``lite`` is sized for CPUs
#: (about a quarter of the default's FLOPs, see README "Presets");
#: ``authors-1.5x`` is the geometry of the authors' 1.5x (720p -> 1080p) checkpoint.
MODEL_CFGS: dict[str, SRUNetCfg] = {
    "default": SRUNetCfg(n_filters=64, layer_multiplier=1.0),
    "lite": SRUNetCfg(n_filters=32, layer_multiplier=1.0),
    "authors-1.5x": SRUNetCfg(n_filters=48, layer_multiplier=0.7, out_scale=0.75),
}
#: The presets players and `model=auto` choose between, best quality first (`doctor` measures them).
PLAYBACK_PRESETS: tuple[str, ...] = ("default", "lite")


def get_cfg(name: str, **overrides: Any) -> SRUNetCfg:
    """Look up a named variant, optionally overriding fields."""
    try:
        cfg = MODEL_CFGS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; valid presets: {', '.join(MODEL_CFGS)}") from None
    return replace(cfg, **overrides) if overrides else cfg


def create_model(name: str = "default", *, deploy: bool = False, **overrides: Any) -> "SRUNet":
    """Build an SR-UNet from a preset name (see :data:`MODEL_CFGS`)."""
    return SRUNet(get_cfg(name, **overrides), deploy=deploy)


# --------------------------------------------------------------------------- fusion maths


def pad_kernel_to(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """Zero-pad a square conv kernel (O, I, kh, kw) to k x k, centred."""
    p = (k - kernel.shape[-1]) // 2
    return F.pad(kernel, (p, p, p, p)) if p > 0 else kernel


def identity_kernel(channels: int, k: int, *, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """A k x k kernel whose convolution is the identity (one-hot centre, a "dirac")."""
    w = torch.zeros(channels, channels, k, k, dtype=dtype, device=device)
    idx = torch.arange(channels, device=device)
    w[idx, idx, k // 2, k // 2] = 1.0
    return w


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    """The single 3x3 conv used by every block, trained or fused (one builder for both)."""
    return nn.Conv2d(cin, cout, 3, padding=1)


# --------------------------------------------------------------------------- network


class RepBlock(nn.Module):
    """3x3 + 1x1 + identity block, fusable into one 3x3 conv."""

    def __init__(self, cin: int, cout: int, *, deploy: bool = False) -> None:
        super().__init__()
        self.cin, self.cout = cin, cout
        self.deploy = deploy
        self.conv1 = _conv3x3(cin, cout)
        if not deploy:
            # Present for every block (authors' state dicts carry it), used only when cin == cout.
            self.conv_adapter = nn.Conv2d(cin, cout, 1)

    @property
    def has_residual(self) -> bool:
        return self.cin == self.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        if not self.deploy and self.has_residual:
            y = y + self.conv_adapter(x) + x
        return F.relu(y)

    @torch.no_grad()
    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(kernel, bias) of the single 3x3 conv equal to this block before its ReLU."""
        w, b = self.conv1.weight, self.conv1.bias
        if self.deploy or not self.has_residual:
            return w.clone(), b.clone()
        k = w.shape[-1]
        w = w + pad_kernel_to(self.conv_adapter.weight, k) + identity_kernel(self.cout, k, dtype=w.dtype, device=w.device)
        return w, b + self.conv_adapter.bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fuse in place (idempotent): afterwards the block is a deploy block."""
        if self.deploy:
            return
        w, b = self.fused_kernel_bias()
        self.conv1.weight.copy_(w)
        self.conv1.bias.copy_(b)
        del self.conv_adapter
        self.deploy = True


def _stage(cin: int, cout: int, n_blocks: int, deploy: bool) -> nn.Sequential:
    return nn.Sequential(*[RepBlock(cin if i == 0 else cout, cout, deploy=deploy) for i in range(n_blocks)])


class SRUNet(nn.Module):
    """The SR-UNet generator. See the module docstring for the two forms."""

    #: 3 max-pools: height and width must be multiples of 8.
    multiple_of = 8

    def __init__(self, cfg: SRUNetCfg | None = None, *, deploy: bool = False) -> None:
        super().__init__()
        cfg = cfg or SRUNetCfg()
        self.cfg = cfg
        self.deploy = deploy
        f, half = cfg.n_filters, cfg.n_filters // 2
        n1, n = cfg.blocks(first=True), cfg.blocks(first=False)
        self.dconv_down1 = _stage(cfg.in_channels, half, n1, deploy)
        self.dconv_down2 = _stage(half, f, n, deploy)
        self.dconv_down3 = _stage(f, f, n, deploy)
        self.dconv_down4 = _stage(f, f, n, deploy)
        self.dconv_up3 = _stage(f + f, f, n, deploy)
        self.dconv_up2 = _stage(f + f, f, n, deploy)
        self.dconv_up1 = _stage(f + half, half, n, deploy)
        s = cfg.scale
        self.conv_last = nn.Conv2d(half, s * s * cfg.out_channels, 1)
        self.pixel_shuffle = nn.PixelShuffle(s)
        if not deploy:
            self.to_rgb = nn.Conv2d(half, 3, 1)  # unused; kept for state-dict compatibility

    # The body without the bicubic residual; split out for exporters (ONNX, GLSL).
    def body(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.dconv_down1(x)
        c2 = self.dconv_down2(F.max_pool2d(c1, 2))
        c3 = self.dconv_down3(F.max_pool2d(c2, 2))
        y = self.dconv_down4(F.max_pool2d(c3, 2))
        y = self.dconv_up3(torch.cat([_up2(y), c3], dim=1))
        y = self.dconv_up2(torch.cat([_up2(y), c2], dim=1))
        y = self.dconv_up1(torch.cat([_up2(y), c1], dim=1))
        return self.pixel_shuffle(self.conv_last(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.cfg.scale
        # bicubic on a contiguous NCHW tensor: ~1.7x faster on CPU than on channels-last
        y = self.body(x) + F.interpolate(x.contiguous(), scale_factor=s, mode="bicubic", align_corners=False)
        y = torch.clamp(y, -1.0, 1.0)
        if self.cfg.out_scale is not None:
            y = F.interpolate(y, scale_factor=self.cfg.out_scale, mode="bicubic", align_corners=True)
            y = torch.clamp(y, -1.0, 1.0)
        return y

    def blocks(self) -> list[RepBlock]:
        return [m for m in self.modules() if isinstance(m, RepBlock)]

    @torch.no_grad()
    def reparameterize(self) -> "SRUNet":
        """Fuse every block in place (idempotent) and drop the unused ``to_rgb``."""
        for blk in self.blocks():
            blk.reparameterize()
        if hasattr(self, "to_rgb"):
            del self.to_rgb
        self.deploy = True
        return self


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def reparameterize_model(model: SRUNet, inplace: bool = False) -> SRUNet:
    """Return the deploy form of ``model`` (a fused copy unless ``inplace``)."""
    if not inplace:
        model = copy.deepcopy(model)
    return model.reparameterize()


@torch.no_grad()
def train_form_from_deploy(model: SRUNet) -> SRUNet:
    """A train-form copy of a deploy-form model that computes the same function.

    The inverse of :func:`reparameterize_model` up to the split of each fused kernel:
    ``conv1`` takes the fused kernel minus the identity, ``conv_adapter`` starts at
    zero (so fusing it again gives back the same kernels). Training can start from
    shipped (fused) weights this way.
    """
    if not model.deploy:
        return copy.deepcopy(model)
    out = SRUNet(model.cfg, deploy=False).to(next(model.parameters()).device)
    for src, dst in zip(model.blocks(), out.blocks()):
        w, b = src.conv1.weight, src.conv1.bias
        if dst.has_residual:
            w = w - identity_kernel(dst.cout, w.shape[-1], dtype=w.dtype, device=w.device)
            nn.init.zeros_(dst.conv_adapter.weight)
            nn.init.zeros_(dst.conv_adapter.bias)
        dst.conv1.weight.copy_(w)
        dst.conv1.bias.copy_(b)
    out.conv_last.load_state_dict(model.conv_last.state_dict())
    return out.train(model.training)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_pixel(cfg: SRUNetCfg, deploy: bool = True) -> float:
    """Multiply-accumulates per *input* pixel of the conv layers (fused form by default).

    Exact for sizes that are multiples of 8; used by ``bench`` for GFLOP/s and by the
    README's cost tables.
    """
    f, half = cfg.n_filters, cfg.n_filters // 2
    n1, n = cfg.blocks(True), cfg.blocks(False)

    def stage(cin: int, cout: int, nb: int, area: float) -> float:
        total = 0.0
        for i in range(nb):
            ci = cin if i == 0 else cout
            total += ci * cout * 9
            if not deploy and ci == cout:
                total += ci * cout
        return total * area

    s = cfg.scale
    return (
        stage(cfg.in_channels, half, n1, 1)
        + stage(half, f, n, 1 / 4)
        + stage(f, f, n, 1 / 16)
        + stage(f, f, n, 1 / 64)
        + stage(2 * f, f, n, 1 / 16)
        + stage(2 * f, f, n, 1 / 4)
        + stage(f + half, half, n, 1)
        + half * s * s * cfg.out_channels
    )
