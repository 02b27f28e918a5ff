"""Temporal flicker: how much an upscaler's frame-to-frame change departs from the truth's.

An upscaler that treats frames independently can add changes that are not in the
source (shimmering texture, crawling edges). For consecutive frames t-1, t we compare
the temporal differences of the output and of the ground truth on luma:

    flicker_t = mean |(out_t - out_{t-1}) - (ref_t - ref_{t-1})|   (8-bit Y levels)

0 means the output changes exactly as the reference does; true motion cancels out.
Pooled as the mean over t = 1..N-1; undefined for a single frame (image sets).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SETTING = "mean |dt(out) - dt(ref)| on 8-bit BT.709 Y over consecutive frames (lower is better)"


def flicker_series(ref_y: Sequence[np.ndarray], out_y: Sequence[np.ndarray]) -> list[float]:
    """Per-transition flicker values (length N-1) for HxW uint8 luma sequences."""
    if len(ref_y) != len(out_y):
        raise ValueError(f"frame counts differ: reference {len(ref_y)}, output {len(out_y)}")
    vals = []
    for t in range(1, len(ref_y)):
        d_out = out_y[t].astype(np.int16) - out_y[t - 1].astype(np.int16)
        d_ref = ref_y[t].astype(np.int16) - ref_y[t - 1].astype(np.int16)
        vals.append(float(np.mean(np.abs(d_out - d_ref))))
    return vals
