"""Outputs: results table (Markdown, CSV, JSON), rate-distortion plots, side-by-side crops.

Every file is written to a temporary name beside its target and renamed, and only
after the whole run succeeded, so an interrupted run never leaves half a report.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..fsutil import atomic_path
from .bdrate import bd_rate
from .protocol import METRICS, EvalResults, RunResult, anchor_name

ALL = "all"  # the video label of rows pooled over every reference
_HEAD = {"psnr_y": "PSNR-Y", "psnr_rgb": "PSNR-RGB", "ssim_y": "SSIM-Y", "ssim_rgb": "SSIM-RGB",
         "lpips": "LPIPS", "vmaf": "VMAF", "flicker": "Flicker", "grid": "Grid"}
_FMT = {"psnr_y": "{:.2f}", "psnr_rgb": "{:.2f}", "ssim_y": "{:.4f}", "ssim_rgb": "{:.4f}",
        "lpips": "{:.4f}", "vmaf": "{:.2f}", "flicker": "{:.3f}", "grid": "{:.4f}"}


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write ``path`` through a temporary file in the same folder and an atomic rename."""
    with atomic_path(path, fsync=False) as tmp, open(tmp, "wb") as f:
        write(f)


def table_rows(res: EvalResults) -> list[RunResult]:
    """The run rows, plus rows pooled over references (video ``all``) when there are several."""
    rows = list(res.rows)
    videos = sorted({r.video for r in rows})
    if len(videos) < 2:
        return rows
    for crf in res.config.crfs:
        for cand in dict.fromkeys(r.candidate for r in rows):
            group = [r for r in rows if r.crf == crf and r.candidate == cand]
            if len(group) < len(videos):
                continue  # per-video candidates exist for one reference only
            pooled = {k: _mean_or_none([g.pooled[k] for g in group]) for k in METRICS}
            rows.append(RunResult(ALL, crf, cand, float(np.mean([g.bitrate_kbps for g in group])),
                                  sum(g.frames for g in group), pooled, {}))
    return rows


def _mean_or_none(vals: list[float | None]) -> float | None:
    got = [v for v in vals if v is not None]
    return float(np.mean(got)) if got and len(got) == len(vals) else None


def _cell(key: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    return "inf" if math.isinf(v) else _FMT[key].format(v)


def bd_rates(res: EvalResults, video: str) -> dict[str, dict[str, float | None]]:
    """BD-rate (percent, VMAF and LPIPS) of each candidate against the anchor for one video."""
    rows = [r for r in table_rows(res) if r.video == video]
    anchor_cand = anchor_name(res.config)
    anchor = sorted((r for r in rows if r.candidate == anchor_cand), key=lambda r: r.crf)
    out: dict[str, dict[str, float | None]] = {}
    for cand in dict.fromkeys(r.candidate for r in rows if r.candidate != anchor_cand):
        test = sorted((r for r in rows if r.candidate == cand), key=lambda r: r.crf)
        out[cand] = {}
        for key, hib in (("vmaf", True), ("lpips", False)):
            qa, qt = [r.pooled[key] for r in anchor], [r.pooled[key] for r in test]
            ok = anchor and len(anchor) == len(test) and None not in qa + qt
            out[cand][key] = bd_rate([r.bitrate_kbps for r in anchor], qa, [r.bitrate_kbps for r in test], qt,
                                     higher_is_better=hib) if ok else None
    return out


def markdown(res: EvalResults) -> str:
    rows = table_rows(res)
    head = ["Video", "CRF", "Candidate", "kbit/s"] + [_HEAD[k] + ("" if hib else " ↓") for k, hib in METRICS.items()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        best = _best_in_group(rows, r)
        cells = [_cell(k, r.pooled[k]) for k in METRICS]
        cells = [f"**{c}**" if k in best and c not in ("n/a",) else c for k, c in zip(METRICS, cells)]
        lines.append("| " + " | ".join([r.video, str(r.crf), r.candidate, f"{r.bitrate_kbps:.0f}"] + cells) + " |")
    out = ["# mpv-srunet eval", "", *lines, "", "Best per video and CRF in bold; ↓ lower is better.", ""]
    out += _bd_section(res)
    out += ["## Settings", ""] + [f"- **{k}**: {v}" for k, v in res.settings.items()]
    out += ["", "## Candidates", ""] + [f"- **{c.name}**: {c.note}" for c in res.candidates]
    if res.unavailable:
        out += ["", "## Unavailable", ""] + [f"- **{k}**: {v}" for k, v in res.unavailable.items()]
    return "\n".join(out) + "\n"


def _best_in_group(rows: list[RunResult], r: RunResult) -> set[str]:
    group = [g for g in rows if g.video == r.video and g.crf == r.crf]
    best = set()
    for k, hib in METRICS.items():
        vals = [g.pooled[k] for g in group if g.pooled[k] is not None]
        if len(vals) > 1 and r.pooled[k] is not None and r.pooled[k] == (max(vals) if hib else min(vals)):
            best.add(k)
    return best


def _bd_section(res: EvalResults) -> list[str]:
    if len(res.config.crfs) < 2:
        return ["BD-rate needs two or more CRFs (`--crf 18,23,28,33`).", ""]
    video = ALL if len({r.video for r in res.rows}) > 1 else res.rows[0].video
    bd = bd_rates(res, video)
    anchor = anchor_name(res.config)
    lines = [f"## BD-rate against {anchor} ({video})", "", "| Candidate | BD-rate VMAF | BD-rate LPIPS |", "|---|---|---|"]
    for cand, d in bd.items():
        lines.append(f"| {cand} | " + " | ".join("n/a" if d[k] is None else f"{d[k]:+.1f}%" for k in ("vmaf", "lpips")) + " |")
    return lines + ["", f"Negative: the same quality as {anchor} at that much less bitrate.", ""]


def write_csv(res: EvalResults, path: Path) -> None:
    def w(f: io.BufferedWriter) -> None:
        text = io.StringIO()
        cw = csv.writer(text)
        cw.writerow(["video", "crf", "candidate", "bitrate_kbps", "frames", *METRICS])
        for r in table_rows(res):
            cw.writerow([r.video, r.crf, r.candidate, f"{r.bitrate_kbps:.3f}", r.frames,
                         *("" if r.pooled[k] is None else repr(r.pooled[k]) for k in METRICS)])
        f.write(text.getvalue().encode())

    atomic_write(path, w)


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def write_json(res: EvalResults, path: Path) -> None:
    doc = {
        "config": asdict(res.config),
        "settings": res.settings,
        "candidates": [{"name": c.name, "weights": str(c.weights) if c.weights else None, "note": c.note,
                        **({"mpv_args": list(c.mpv_args)} if c.mpv_args else {})}
                       for c in res.candidates],
        "unavailable": res.unavailable,
        "rows": [asdict(r) for r in table_rows(res)],
    }
    if len(res.config.crfs) > 1:
        doc["bd_rate"] = {"anchor": anchor_name(res.config),
                          **{v: bd_rates(res, v) for v in {r.video for r in table_rows(res)}}}
    atomic_write(path, lambda f: f.write(json.dumps(_json_safe(doc), indent=1).encode()))


def safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)[:80] or "video"
