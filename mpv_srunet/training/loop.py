"""The training loop: warm start (L1 + 1-SSIM), then the paper's GAN phase.

Schedule: steps ``[0, warm_steps)`` train the generator alone on
``L1 + (1 - SSIM)``; later steps add the SRGAN-style discriminator and switch to
the paper's ``LPIPS(VGG) + (1 - SSIM) + 1e-3 BCE`` (see :mod:`.losses`). The
generator starts as exact bicubic upscaling: ``conv_last`` is zero-initialised,
so the residual body outputs 0 and ``forward`` returns the bicubic path; training
can only move it away from there where that lowers the loss.

Everything a step draws at random comes from RNGs saved in the checkpoint, so
``--resume`` continues bit for bit on the same machine and thread count.
Outputs in the run folder: ``checkpoint.pt``, ``log.csv`` (training),
``val.csv`` (validation), ``run.json`` (summary) and ``plot.png``.
"""

from __future__ import annotations

import csv
import json
import logging
import platform
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from ..model import SRUNet, SRUNetCfg, create_model
from ..signals import Signalled, exit_signals
from .checkpoint import CHECKPOINT_NAME, check_resumable, load_checkpoint, restore_rng, rng_state, save_checkpoint
from .data import PairStore, PatchSampler
from .discriminator import Discriminator
from .evaluate import evaluate, to_tensor
from .losses import GeneratorLoss, LossWeights, discriminator_loss, grid_view

log = logging.getLogger(__name__)

TRAIN_COLUMNS = ("step", "elapsed_s", "phase", "lr", "loss", "l1", "ssim", "lpips", "adv", "d_loss", "steps_per_s")
VAL_COLUMNS = ("step", "elapsed_s", "n", "psnr_y", "ssim_y", "lpips_alex", "grid", "bicubic_psnr_y", "bicubic_ssim_y", "bicubic_lpips_alex")


@dataclass
class TrainConfig:
    """Options of one training run (``mpv-srunet train run``)."""

    data: str  # folder made by `train prepare`
    out: str  # run folder: checkpoint, logs, plot
    preset: str = "default"  # model preset (mpv_srunet.model.MODEL_CFGS)
    steps: int = 20000  # total optimisation steps
    warm_steps: int = 20000  # steps of L1 + (1-SSIM) before the GAN phase (>= steps: warm only)
    batch: int = 8  # patches per step
    patch: int = 96  # input patch side (target: 2x)
    lr: float = 1e-4  # Adam learning rate, GAN phase (paper: 1e-4)
    warm_lr: float = 1e-4  # Adam learning rate, warm phase
    lpips_net: str = "vgg"  # LPIPS backbone of the GAN-phase loss (paper: vgg)
    adv_weight: float = 1e-3  # weight of the BCE adversarial term (paper: 1e-3)
    gan_l1: float = 0.0  # weight of an L1 fidelity anchor in the GAN phase (paper: 0)
    lpips_view: str = "blur"  # how LPIPS-VGG compares output and target: "blur" (through losses.nyquist_blur) or "plain" (paper)
    gan_view: str = "jitter"  # how LPIPS-VGG and D see the output: "jitter" (random 1-px grid offset per step) or "aligned" (paper)
    min_grain: float = 0.0  # draw patches only from sources with at least this data.grain_level (0: every source)
    ckpt_every: int = 500  # checkpoint every N steps ...
    ckpt_minutes: float = 5.0  # ... or every M minutes, whichever comes first
    val_every: int = 500  # validate every N steps (0: only at the end)
    val_crop: int = 256  # periodic validation on centre crops of this input size (0: full frames)
    log_every: int = 10  # write a log.csv row every N steps
    threads: int = 1  # torch CPU threads (the machine is shared)
    seed: int = 0
    init: str = "bicubic"  # "bicubic" (zero conv_last), a weights file (train or fused form), or another run's checkpoint.pt
    init_strength: float | None = None  # a two-endpoint --init file at this detail strength (None: the file's default)
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = False  # bfloat16 autocast for the generator body, LPIPS and D (CPU: ~2x faster GAN steps)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        # a run saved before --lpips-view existed trained with the paper's plain LPIPS: resume it so
        d = {"lpips_view": "plain", **d}
        return cls(**{k: v for k, v in d.items() if k in known})


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device visible to torch; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


def init_generator(cfg: TrainConfig) -> SRUNet:
    """Train-form generator: bicubic-exact start, or loaded from ``cfg.init``."""
    if cfg.init_strength is not None and (cfg.init == "bicubic" or Path(cfg.init).suffix == ".pt"):
        raise UsageError(f"--init-strength {cfg.init_strength}: needs --init FILE, a two-endpoint weights file")
    if cfg.init == "bicubic":
        model = create_model(cfg.preset, deploy=False)
        nn.init.zeros_(model.conv_last.weight)
        nn.init.zeros_(model.conv_last.bias)
        return model
    if Path(cfg.init).suffix == ".pt":  # another run's checkpoint: its generator only
        st = load_checkpoint(Path(cfg.init))
        model = SRUNet(SRUNetCfg.from_dict(st["model_cfg"]), deploy=False)
        model.load_state_dict(st["generator"])
    else:  # a weights file; a fused (deploy) one, e.g. the shipped weights, is split back into train form
        from ..model import train_form_from_deploy
        from ..weights import build_from_state_dict, read_weights

        # a two-endpoint file: at --init-strength, else at its default strength (a one-set file with
        # --init-strength is a WeightsError: one line, exit 2)
        sd, mcfg, form, _ = read_weights(cfg.init, strength=cfg.init_strength)
        model = train_form_from_deploy(build_from_state_dict(sd, mcfg, form, source=cfg.init))
    if model.cfg != create_model(cfg.preset).cfg:
        raise UsageError(f"--init {cfg.init}: holds a {model.cfg} model, not preset {cfg.preset!r}; pass --preset to match")
    return model.train()


class Trainer:
    """One training run: models, optimizers, data, RNG and logs, resumable from disk."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> None:
        if cfg.lpips_view not in ("blur", "plain"):
            raise UsageError(f"--lpips-view {cfg.lpips_view!r}: expected blur or plain")
        if cfg.gan_view not in ("jitter", "aligned"):
            raise UsageError(f"--gan-view {cfg.gan_view!r}: expected jitter or aligned")
        self.cfg, self.progress = cfg, progress
        self.out = Path(cfg.out)
        torch.set_num_threads(max(1, cfg.threads))
        self.device = pick_device(cfg.device)
        if cfg.bf16 and self.device.type == "cpu":
            from ..backends.torch_backend import cpu_has_native_bf16

            if not cpu_has_native_bf16():
                log.warning("--bf16 on a CPU without native bf16 (AVX512-BF16 or AMX): emulated, many times "
                            "slower than fp32 (GAN steps > 30 s instead of ~5.5 s on a 2-core AMD EPYC); leave it off here")
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.sampler = PatchSampler(PairStore(Path(cfg.data), "train"), cfg.patch, min_grain=cfg.min_grain)
        self.val = PairStore(Path(cfg.data), "val")
        self.gen = init_generator(cfg).to(self.device, memory_format=torch.channels_last).train()
        self.disc = Discriminator().to(self.device).train()
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg.warm_lr)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr)
        self.step, self.elapsed = 0, 0.0
        self._losses: dict[str, GeneratorLoss] = {}
        self._lpips_alex: nn.Module | None = None  # periodic validation's LPIPS-alex, made when first needed
        if resume:
            self._resume()
        elif (self.out / CHECKPOINT_NAME).exists():
            raise UsageError(f"{self.out}: already holds a checkpoint; pass --resume to continue it or choose another --out")

    # ----------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg),
            "step": self.step,
            "elapsed": self.elapsed,
            "generator": self.gen.state_dict(),
            "discriminator": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": rng_state(self.rng),
            "model_cfg": self.gen.cfg.to_dict(),
        }

    def _resume(self) -> None:
        path = self.out / CHECKPOINT_NAME
        st = load_checkpoint(path)
        check_resumable(st["config"], asdict(self.cfg), path)
        try:
            self.gen.load_state_dict(st["generator"])
            self.disc.load_state_dict(st["discriminator"])
            self.opt_g.load_state_dict(st["opt_g"])
            self.opt_d.load_state_dict(st["opt_d"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise UsageError(f"{path}: does not fit this model ({str(e).splitlines()[0][:160]}); use the same --preset or a new --out") from None
        self.step, self.elapsed = int(st["step"]), float(st["elapsed"])
        restore_rng(st["rng"], self.rng)
        log.info("resumed %s at step %d", path, self.step)

    def save(self) -> Path:
        return save_checkpoint(self.out / CHECKPOINT_NAME, self.state())

    # ----------------------------------------------------------------- steps
    def phase(self) -> str:
        return "warm" if self.step < self.cfg.warm_steps else "gan"

    def _loss(self, phase: str) -> GeneratorLoss:
        if phase not in self._losses:
            if phase == "warm":
                self._losses[phase] = GeneratorLoss(LossWeights.warm())
            else:
                from ..metrics.lpips import LPIPS

                w = LossWeights(l1=self.cfg.gan_l1, ssim=1.0, lpips=1.0, adv=self.cfg.adv_weight)
                self._losses[phase] = GeneratorLoss(w, LPIPS(self.cfg.lpips_net).to(self.device), bf16=self.cfg.bf16,
                                                     lpips_blur=self.cfg.lpips_view == "blur")
        return self._losses[phase]

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = self.sampler.batch(self.rng, self.cfg.batch)
        return to_tensor(xs, self.device), to_tensor(ys, self.device)

    def _autocast(self) -> Any:
        """bfloat16 autocast when ``--bf16`` (weights and optimizer state stay fp32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    def _generate(self, x: torch.Tensor) -> torch.Tensor:
        """The model's forward, with only the residual body under bf16 autocast when asked.

        The bicubic path and the sum stay fp32: the body's output is a small
        correction, so its bf16 rounding is far below one grey level.
        """
        if not self.cfg.bf16:
            return self.gen(x)
        with self._autocast():
            body = self.gen.body(x)
        return _finish(self.gen, x, body.float())

    def _grid_offset(self) -> tuple[int, int] | None:
        """The GAN terms' view of this step's batch: a random (dy, dx) in {0, 1} for ``jitter``
        (drawn from the checkpointed RNG, so resume stays exact), None for ``aligned``."""
        if self.cfg.gan_view == "aligned":
            return None
        dy, dx = self.rng.integers(0, 2, size=2)
        return int(dy), int(dx)

    def train_step(self) -> dict[str, float]:
        """One optimisation step of the current phase; returns the loss terms."""
        phase = self.phase()
        x, y = self._batch()
        lr = self.cfg.warm_lr if phase == "warm" else self.cfg.lr
        for g in self.opt_g.param_groups:
            g["lr"] = lr
        sr = self._generate(x)
        terms: dict[str, float] = {}
        fake_logits, offset = None, None
        if phase == "gan":
            offset = self._grid_offset()
        if phase == "gan" and self.cfg.adv_weight > 0:  # --adv-weight 0: LPIPS + SSIM (+ L1) only, no discriminator to train
            sr_v, y_v = (sr, y) if offset is None else (grid_view(sr, offset), grid_view(y, offset))
            with self._autocast():
                d_loss = discriminator_loss(self.disc(y_v).float(), self.disc(sr_v.detach()).float())
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            terms["d_loss"] = float(d_loss.detach())
            self.disc.requires_grad_(False)
            with self._autocast():
                fake_logits = self.disc(sr_v).float()
        loss, parts = self._loss(phase)(sr, y, fake_logits, offset)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.disc.requires_grad_(True)
        self.step += 1
        return {"loss": float(loss.detach()), "lr": lr, **parts, **terms}

    # ----------------------------------------------------------------- validation
    def validate(self, crop: int | None = None, lpips_alex: nn.Module | None = None) -> dict[str, Any]:
        if len(self.val) == 0:
            return {}
        res = evaluate(self.gen, self.val, crop=self.cfg.val_crop if crop is None else crop, lpips_alex=lpips_alex)
        return res.as_dict()

    # ----------------------------------------------------------------- loop
    def run(self) -> dict[str, Any]:
        """Train up to ``cfg.steps``; checkpoint periodically, at the end and on Ctrl-C/SIGTERM.

        The first Ctrl-C (or SIGTERM, or a hang-up) stops *between* steps, so the checkpoint
        it writes resumes exactly, then raises :class:`~mpv_srunet.signals.Signalled`; a second
        Ctrl-C aborts at once.
        """
        from ..progress import progress_bar

        runlog, cfg = RunLog(self.out), self.cfg
        bar = progress_bar(cfg.steps, "train", "step", self.progress, initial=self.step)
        self._t0, self._s0, self._last_ckpt = time.monotonic(), self.step, time.monotonic()
        self._acc: dict[str, list[float]] = {}
        val: dict[str, Any] = {}
        with _StopOnSignal() as stop:
            while self.step < cfg.steps and not stop.requested:
                t_step = time.monotonic()
                terms = self.train_step()
                self.elapsed += time.monotonic() - t_step
                bar.update(1)
                self._after_step(terms, runlog, bar)
                if cfg.val_every and self.step % cfg.val_every == 0:
                    val = self._log_val(runlog, bar)
            bar.close()
            if stop.requested:
                self._flush_log(runlog)
                self.save()
                log.warning("interrupted: checkpoint saved at step %d in %s", self.step, self.out / CHECKPOINT_NAME)
                raise Signalled(stop.signum)  # exit 128 + N: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
        if not val:
            val = self._log_val(runlog, None)
        self.save()
        return runlog.finish(self, val)

    def _after_step(self, terms: dict[str, float], runlog: "RunLog", bar: Any) -> None:
        """Accumulate loss terms; write a log row and checkpoint when due."""
        cfg = self.cfg
        for k, v in terms.items():
            self._acc.setdefault(k, []).append(v)
        if self.step % cfg.log_every == 0 or self.step == cfg.steps:
            row = self._flush_log(runlog)
            post = {k: f"{row[k]:.4f}" for k in ("l1", "ssim", "lpips", "adv", "d_loss") if k in row}
            bar.set_postfix(post | {"it/s": f"{row['steps_per_s']:.2f}"})
        if self.step % cfg.ckpt_every == 0 or time.monotonic() - self._last_ckpt > 60 * cfg.ckpt_minutes:
            self.save()
            self._last_ckpt = time.monotonic()

    def _flush_log(self, runlog: "RunLog") -> dict[str, Any]:
        """Write the mean of the loss terms since the last row as one log.csv row."""
        if not self._acc:
            return {}
        sps = (self.step - self._s0) / max(time.monotonic() - self._t0, 1e-9)
        row: dict[str, Any] = {k: float(np.mean(v)) for k, v in self._acc.items()}
        row.update(step=self.step, elapsed_s=round(self.elapsed, 1), phase=self.phase(), steps_per_s=round(sps, 4))
        runlog.train(row)
        self._acc = {}
        return row

    def _val_lpips(self) -> nn.Module | None:
        """LPIPS-alex for periodic validation once the GAN phase (which needs the LPIPS weights) runs."""
        if self.phase() != "gan":
            return None
        if self._lpips_alex is None:
            from ..metrics.lpips import LPIPS

            self._lpips_alex = LPIPS("alex")
        return self._lpips_alex

    def _log_val(self, runlog: "RunLog", bar: Any) -> dict[str, Any]:
        val = self.validate(lpips_alex=self._val_lpips())
        if val:
            runlog.val({"step": self.step, "elapsed_s": round(self.elapsed, 1), **val})
            if bar is not None:
                lp = f", LPIPS-alex {val['lpips_alex']:.4f} (bicubic {val['bicubic_lpips_alex']:.4f})" if val.get("lpips_alex") is not None else ""
                bar.write(f"step {self.step}: val PSNR-Y {val['psnr_y']:.3f} dB (bicubic {val['bicubic_psnr_y']:.3f}), "
                          f"SSIM-Y {val['ssim_y']:.4f} (bicubic {val['bicubic_ssim_y']:.4f}){lp}, grid share {val['grid']:.4f}")
        return val


def _finish(gen: SRUNet, x: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
    """``SRUNet.forward`` after the body (bicubic residual, clamp, optional rescale)."""
    y = torch.clamp(body + torch.nn.functional.interpolate(x, scale_factor=gen.cfg.scale, mode="bicubic", align_corners=False), -1.0, 1.0)
    if gen.cfg.out_scale is not None:
        y = torch.nn.functional.interpolate(y, scale_factor=gen.cfg.out_scale, mode="bicubic", align_corners=True).clamp(-1.0, 1.0)
    return y


class _StopOnSignal:
    """Turn the first SIGINT/SIGTERM/SIGHUP (not a hang-up under nohup) into a stop request; a
    second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = signal.SIGINT
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested, self.signum = True, signum

    def __enter__(self) -> "_StopOnSignal":
        for sig in exit_signals():
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: keep the default behaviour
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class RunLog:
    """``log.csv`` / ``val.csv`` (appended across resumes), ``run.json`` and ``plot.png``."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out

    def _append(self, name: str, columns: tuple[str, ...], row: dict[str, Any]) -> None:
        path = self.out / name
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in columns})

    def train(self, row: dict[str, Any]) -> None:
        self._append("log.csv", TRAIN_COLUMNS, row)

    def val(self, row: dict[str, Any]) -> None:
        self._append("val.csv", VAL_COLUMNS, row)

    def finish(self, trainer: Trainer, val: dict[str, Any]) -> dict[str, Any]:
        summary = {
            "config": asdict(trainer.cfg),
            "step": trainer.step,
            "train_seconds": round(trainer.elapsed, 1),
            "steps_per_s": round(trainer.step / max(trainer.elapsed, 1e-9), 4),
            "hardware": hardware_string(trainer.device, trainer.cfg.threads),
            "val": val,
        }
        (self.out / "run.json").write_text(json.dumps(summary, indent=1))
        try:
            plot_run(self.out)
        except ImportError:
            log.warning("matplotlib missing: no plot.png (install the `train` extra)")
        return summary


def hardware_string(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {threads} torch thread(s)"


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_run(out: Path) -> Path:
    """Loss terms (left) and validation PSNR-Y vs bicubic (right) against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = read_csv(out / "log.csv"), read_csv(out / "val.csv")
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [int(r["step"]) for r in train]
    for k in ("loss", "l1", "ssim", "lpips", "adv", "d_loss"):
        ys = [float(r[k]) if r.get(k) else np.nan for r in train]
        if not all(np.isnan(ys)):
            a.plot(steps, ys, label=k, lw=1)
    a.set(xlabel="step", ylabel="loss", title="training loss terms", yscale="log")
    a.legend()
    if val:
        vs = [int(r["step"]) for r in val]
        b.plot(vs, [float(r["psnr_y"]) for r in val], "o-", label="model")
        b.plot(vs, [float(r["bicubic_psnr_y"]) for r in val], "--", label="H.265 + bicubic")
        b.legend()
    b.set(xlabel="step", ylabel="PSNR-Y (dB)", title="validation")
    fig.tight_layout()
    path = out / "plot.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
