"""SRGAN-style discriminator used in the GAN phase (Ledig et al. 2017; the paper's D).

Conv + BatchNorm + LeakyReLU blocks that alternate stride 1 and 2 while the width
grows 32 -> 64 -> 128 -> 256, then global average pooling and a 1024-unit fully
connected layer to one logit. Pooling (instead of SRGAN's flatten) makes it work
on any patch size.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int, stride: int, bn: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class Discriminator(nn.Module):
    """``D(x) -> (N, 1)`` logits for NCHW RGB in [-1, 1]."""

    def __init__(self, base: int = 32, widths: tuple[int, ...] = (32, 64, 128, 256), fc: int = 1024) -> None:
        super().__init__()
        layers = _block(3, base, 1, bn=False) + _block(base, base, 2)
        cin = base
        for w in widths[1:]:
            layers += _block(cin, w, 1) + _block(w, w, 2)
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(cin, fc),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(fc, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
