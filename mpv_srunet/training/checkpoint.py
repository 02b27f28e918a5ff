"""Atomic, exactly-resumable training checkpoints.

A checkpoint holds everything a run needs to continue bit for bit: generator and
discriminator weights, both optimizers, the step, the numpy patch-sampling RNG,
torch's RNG and the run config. It is written to a temporary file in the same
folder, flushed to disk, then renamed over the old one, so running out of disk
space (or being killed) mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..fsutil import atomic_path

CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def rng_state(np_rng: np.random.Generator) -> dict[str, Any]:
    """Every RNG a training step touches."""
    return {
        "numpy": np_rng.bit_generator.state,
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any], np_rng: np.random.Generator) -> None:
    np_rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    random.setstate(_as_python_random_state(state["python"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_random_state(s: Any) -> tuple:
    # torch.load returns lists where random.getstate() had tuples.
    version, internal, gauss = s
    return (version, tuple(internal), gauss)


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save({"version": CHECKPOINT_VERSION, **state}, f)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; UsageError when it is not one."""
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise UsageError(f"{path}: no such checkpoint; expected RUN_DIR/{CHECKPOINT_NAME} from `mpv-srunet train run`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/foreign files
        raise UsageError(f"{path}: not a readable training checkpoint ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise UsageError(f"{path}: not an mpv-srunet training checkpoint (version {CHECKPOINT_VERSION} expected)")
    return state


#: Config fields that must match for ``--resume``: they change the model or the data stream.
RESUME_KEYS = ("preset", "patch", "batch", "data", "seed")


def check_resumable(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint made with another model/data config, naming the difference."""
    diff = [(k, saved.get(k), current.get(k)) for k in RESUME_KEYS if saved.get(k) != current.get(k)]
    if diff:
        what = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, a, b in diff)
        raise UsageError(f"{path}: checkpoint was made with another config ({what}); use the same options or a new --out")
