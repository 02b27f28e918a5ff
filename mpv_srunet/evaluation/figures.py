"""Pictures: rate-distortion plots (matplotlib, Agg) and side-by-side crops (PIL)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .candidates import BICUBIC
from .protocol import EvalResults
from .report import ALL, _HEAD, atomic_write, safe_name, table_rows

CROP = 256  # side of the square crop, in ground-truth pixels
_LABEL_H = 22


def rd_plot(res: EvalResults, metric: str, path: Path) -> bool:
    """Bitrate vs ``metric``, one curve per candidate (pooled over references). False if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table_rows(res)
    video = ALL if any(r.video == ALL for r in rows) else rows[0].video
    rows = [r for r in rows if r.video == video and r.pooled.get(metric) is not None]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for cand in dict.fromkeys(r.candidate for r in rows):
        pts = sorted(((r.bitrate_kbps, r.pooled[metric], r.crf) for r in rows if r.candidate == cand))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=cand)
        for x, y, crf in pts:
            ax.annotate(f"{crf}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xlabel("bitrate of the encoded H.265 stream (kbit/s)")
    ax.set_ylabel(_HEAD[metric] + (" (lower is better)" if metric == "lpips" else ""))
    ax.set_title(f"Rate-distortion, {_HEAD[metric]} ({video}; labels: CRF)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return True


def detail_window(gt: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size``-square window with the most gradient energy."""
    y = gt.astype(np.float32).mean(axis=2)
    energy = np.abs(np.diff(y, axis=0))[:, :-1] + np.abs(np.diff(y, axis=1))[:-1, :]
    h, w = energy.shape
    step = max(8, size // 4)
    best, where = -1.0, (0, 0)
    for y0 in range(0, max(1, h - size + 1), step):
        for x0 in range(0, max(1, w - size + 1), step):
            e = float(energy[y0:y0 + size, x0:x0 + size].sum())
            if e > best:
                best, where = e, (y0, x0)
    return where


def crops_picture(sample: dict[str, np.ndarray], path: Path) -> None:
    """bicubic | SR-UNet candidate(s) | ground truth, cropped where the picture has detail."""
    from PIL import Image, ImageDraw

    gt = sample["ground truth"]
    size = min(CROP, gt.shape[0], gt.shape[1])
    y0, x0 = detail_window(gt, size)
    order = [BICUBIC] + [k for k in sample if k not in (BICUBIC, "ground truth")] + ["ground truth"]
    order = [k for k in order if k in sample]
    canvas = Image.new("RGB", (size * len(order) + 4 * (len(order) - 1), size + _LABEL_H), "white")
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(order):
        x = i * (size + 4)
        canvas.paste(Image.fromarray(sample[name][y0:y0 + size, x0:x0 + size]), (x, _LABEL_H))
        draw.text((x + 4, 4), name[:40], fill="black")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def write_figures(res: EvalResults, out: Path) -> list[Path]:
    written = []
    for metric in ("vmaf", "lpips", "psnr_y"):
        p = out / f"rd_{metric}.png"
        if rd_plot(res, metric, p):
            written.append(p)
    for (video, crf), sample in res.samples.items():
        p = out / f"crops_{safe_name(video)}_crf{crf}.png"
        crops_picture(sample, p)
        written.append(p)
    return written
