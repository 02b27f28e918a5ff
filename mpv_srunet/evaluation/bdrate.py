"""Bjøntegaard delta rate (VCEG-M33): average bitrate difference at equal quality.

log(rate) is fitted as a polynomial of the quality score for each curve (cubic with
four or more points, lower degree with fewer), both fits are integrated over the
quality interval the curves share, and the mean log-rate gap is turned into percent.
Negative: the test curve needs less bitrate than the anchor for the same quality.
For metrics where lower is better (LPIPS) pass ``higher_is_better=False``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def bd_rate(
    anchor_rate: Sequence[float], anchor_q: Sequence[float],
    test_rate: Sequence[float], test_q: Sequence[float], *, higher_is_better: bool = True,
) -> float | None:
    """BD-rate of ``test`` against ``anchor`` in percent; ``None`` when the curves do not overlap."""
    sign = 1.0 if higher_is_better else -1.0
    qa, qt = sign * np.asarray(anchor_q, float), sign * np.asarray(test_q, float)
    ra, rt = np.log(np.asarray(anchor_rate, float)), np.log(np.asarray(test_rate, float))
    if min(len(qa), len(qt)) < 2 or not (np.all(np.isfinite(qa)) and np.all(np.isfinite(qt))):
        return None
    lo, hi = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    if not hi > lo:
        return None
    ia, it = _integral(qa, ra, lo, hi), _integral(qt, rt, lo, hi)
    return (math.exp((it - ia) / (hi - lo)) - 1.0) * 100.0


def _integral(q: np.ndarray, r: np.ndarray, lo: float, hi: float) -> float:
    deg = min(3, len(q) - 1)
    poly = np.polyint(np.polyfit(q, r, deg))
    return float(np.polyval(poly, hi) - np.polyval(poly, lo))
