"""Engine cache: keys, sidecar metadata, stale detection, atomic writes, build lock.

A serialized TensorRT engine is only valid for the TensorRT version and the GPU
(model and compute capability) that built it, and for the exact ONNX graph and
shape profile it was built from. Each engine file therefore sits next to a JSON
sidecar holding the :class:`EngineKey` it was built for; its file name carries a
readable summary plus a hash of the whole key. Before an engine is handed to the
runtime its sidecar is compared with this machine (:func:`stale_reasons`); a
mismatch means "rebuild", never "try it and see".

Two players starting at once must not both build (minutes of GPU time) nor read a
half-written file: builds take a per-engine :class:`filelock.FileLock` and write
to a temporary file that is renamed into place (:func:`mpv_srunet.fsutil.write_bytes_atomic`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError
from ..fsutil import write_bytes_atomic as atomic_write_bytes

ENGINE_SUFFIX = ".engine"
META_SUFFIX = ".json"
ENV_ENGINE_DIR = "MPV_SRUNET_ENGINE_DIR"
#: Bump when the meaning of a key field changes, so old sidecars read as stale.
KEY_SCHEMA = 1


@dataclass(frozen=True)
class MachineInfo:
    """What an engine is tied to on the machine that runs it (None: not present here)."""

    trt_version: str | None
    gpu_name: str | None
    compute_capability: str | None  # "8.9"

    @property
    def can_build(self) -> bool:
        return bool(self.trt_version and self.gpu_name)


@dataclass(frozen=True)
class ShapeProfile:
    """One optimization profile: padded input (luma) sizes as (height, width), batch 1..max_batch."""

    min_hw: tuple[int, int]
    opt_hw: tuple[int, int]
    max_hw: tuple[int, int]
    max_batch: int = 1

    @property
    def is_static(self) -> bool:
        return self.min_hw == self.opt_hw == self.max_hw and self.max_batch == 1

    def contains(self, height: int, width: int, batch: int = 1) -> bool:
        return (
            self.min_hw[0] <= height <= self.max_hw[0]
            and self.min_hw[1] <= width <= self.max_hw[1]
            and 1 <= batch <= self.max_batch
        )

    def tag(self) -> str:
        f = lambda hw: f"{hw[1]}x{hw[0]}"  # noqa: E731  (WxH, as users write sizes)
        s = f(self.opt_hw) if self.is_static else f"{f(self.min_hw)}-{f(self.opt_hw)}-{f(self.max_hw)}"
        return s + (f"-b{self.max_batch}" if self.max_batch > 1 else "")


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. Equal keys <=> interchangeable engines."""

    graph_tag: str  # GraphSpec.tag(): input format and colour conversion
    precision: str  # fp16 | fp32
    profile: ShapeProfile
    onnx_sha256: str  # checksum of the exact ONNX bytes (weights, graph, exporter)
    trt_version: str
    gpu_name: str
    compute_capability: str
    builder: tuple[tuple[str, Any], ...] = ()  # other build flags that change the engine
    schema: int = KEY_SCHEMA

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["builder"] = [list(kv) for kv in self.builder]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EngineKey":
        p = d["profile"]
        profile = ShapeProfile(tuple(p["min_hw"]), tuple(p["opt_hw"]), tuple(p["max_hw"]), int(p["max_batch"]))
        fields = {k: d[k] for k in ("graph_tag", "precision", "onnx_sha256", "trt_version", "gpu_name",
                                    "compute_capability")}
        return cls(profile=profile, builder=tuple(tuple(kv) for kv in d.get("builder", ())),
                   schema=int(d.get("schema", 0)), **fields)

    def file_name(self) -> str:
        """Readable and unique: ``srunet_yuv420p-..._fp16_640x360-960x544-1920x1088_trt10.9.0_rtx-4090-sm8.9_<hash>.engine``."""
        gpu = _slug(self.gpu_name)
        return (
            f"srunet_{self.graph_tag}_{self.precision}_{self.profile.tag()}_trt{self.trt_version}"
            f"_{gpu}-sm{self.compute_capability}_{self.digest()[:12]}{ENGINE_SUFFIX}"
        )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")[:40] or "gpu"


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_engine_dir() -> Path:
    """``$MPV_SRUNET_ENGINE_DIR`` or the per-user cache dir (platformdirs)."""
    env = os.environ.get(ENV_ENGINE_DIR)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("mpv-srunet", appauthor=False)) / "engines"


def meta_path(engine_path: Path) -> Path:
    return engine_path.with_suffix(META_SUFFIX)


def stale_reasons(key: EngineKey | None, machine: MachineInfo, expected: EngineKey | None = None) -> list[str]:
    """Why an engine built for ``key`` must not run here (empty list: it may).

    ``expected``, when given, is the key the caller would build now; any difference
    (another ONNX, profile, precision...) also makes the engine unusable.
    """
    if key is None:
        return ["no readable metadata sidecar"]
    reasons = []
    if key.schema != KEY_SCHEMA:
        reasons.append(f"cache schema {key.schema} != {KEY_SCHEMA}")
    if key.trt_version != machine.trt_version:
        reasons.append(f"built with TensorRT {key.trt_version}, this machine has {machine.trt_version or 'none'}")
    if key.gpu_name != machine.gpu_name or key.compute_capability != machine.compute_capability:
        here = f"{machine.gpu_name} (sm {machine.compute_capability})" if machine.gpu_name else "no CUDA GPU"
        reasons.append(f"built for {key.gpu_name} (sm {key.compute_capability}), this machine has {here}")
    if expected is not None and not reasons and key != expected:
        diff = [k for k, v in expected.to_dict().items() if key.to_dict().get(k) != v]
        reasons.append("built from different inputs: " + ", ".join(diff))
    return reasons


def read_key(engine_path: Path) -> EngineKey | None:
    """The key in an engine's sidecar, or None when missing or unreadable."""
    try:
        d = json.loads(meta_path(engine_path).read_text())
        return EngineKey.from_dict(d["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_engine(engine_path: Path, data: bytes | memoryview, key: EngineKey, extra: dict[str, Any]) -> Path:
    """Store an engine and its sidecar. The sidecar goes last: an engine without one reads as stale."""
    atomic_write_bytes(engine_path, data)
    meta = {"key": key.to_dict(), "digest": key.digest(), "engine_sha256": file_sha256(engine_path), **extra}
    atomic_write_bytes(meta_path(engine_path), json.dumps(meta, indent=2, sort_keys=True).encode())
    return engine_path


def build_lock(engine_path: Path, timeout_s: float = 1800.0):
    """A cross-process lock for building ``engine_path`` (a FileLock next to it)."""
    from filelock import FileLock

    engine_path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(engine_path) + ".lock", timeout=timeout_s)


@dataclass(frozen=True)
class CachedEngine:
    path: Path
    key: EngineKey | None
    reasons: tuple[str, ...]  # empty: usable on this machine

    @property
    def usable(self) -> bool:
        return not self.reasons


def list_engines(directory: Path, machine: MachineInfo) -> Iterator[CachedEngine]:
    """Every ``*.engine`` in ``directory`` with whether it matches ``machine``."""
    if not directory.is_dir():
        return
    for p in sorted(directory.glob("*" + ENGINE_SUFFIX)):
        key = read_key(p)
        yield CachedEngine(p, key, tuple(stale_reasons(key, machine)))


def parse_size(text: str) -> tuple[int, int]:
    """``"960x540"`` -> (height, width) = (540, 960)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise ConfigError(f"srunet.trt: size {text!r} is not WIDTHxHEIGHT (e.g. 960x540)")
    return int(m.group(2)), int(m.group(1))


def padded(hw: tuple[int, int], multiple: int) -> tuple[int, int]:
    """Round a (height, width) up to the network's multiple (the filter pads frames the same way)."""
    return tuple(-(-v // multiple) * multiple for v in hw)  # type: ignore[return-value]


def make_profile(min_size: str, opt_size: str, max_size: str, multiple: int, max_batch: int = 1) -> ShapeProfile:
    """A profile from WIDTHxHEIGHT strings of *frame* sizes (padded here), validated."""
    mn, op, mx = (padded(parse_size(s), multiple) for s in (min_size, opt_size, max_size))
    if not (mn[0] <= op[0] <= mx[0] and mn[1] <= op[1] <= mx[1]):
        raise ConfigError(
            f"srunet.trt: shape profile must satisfy min <= opt <= max in both axes; got {min_size}, {opt_size}, {max_size}"
        )
    if max_batch < 1:
        raise ConfigError(f"srunet.trt: max batch must be >= 1, got {max_batch}")
    return ShapeProfile(mn, op, mx, max_batch)
