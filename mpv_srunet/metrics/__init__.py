"""Image and video quality metrics used by ``mpv-srunet eval`` and by training.

* :mod:`.lpips` - LPIPS v0.1 (alex, vgg) in plain torch on offline weights.
* :mod:`.image` - PSNR and SSIM on Y (BT.709) and RGB.
* :mod:`.vmaf` - VMAF through the libvmaf inside the ``imageio-ffmpeg`` static ffmpeg.
* :mod:`.temporal` - temporal flicker.
* :mod:`.grid` - grid share: period-2 (checkerboard) energy an upscaler adds to bicubic.

Submodules import torch lazily where they can, so importing this package is cheap.
"""

from __future__ import annotations

from ..errors import BackendUnavailable


class MetricUnavailable(BackendUnavailable):
    """A metric cannot run here: a library or its weights are missing."""

    prefix = "srunet.metrics"


__all__ = ["MetricUnavailable"]
