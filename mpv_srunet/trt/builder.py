"""Building TensorRT engines (TensorRT 10 and 11), and finding or rebuilding cached ones.

TensorRT is an optional import: its wheels come from NVIDIA's package index and
cannot be installed on every machine. Every entry point here first checks
:func:`probe_machine` and raises :class:`BackendUnavailable` with one line when
TensorRT or a CUDA GPU is missing.

Precision lives in the ONNX graph (see :mod:`.graph`): the network is created
strongly typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; always on in
TensorRT 11, which removed ``BuilderFlag.FP16``), so an FP16 graph gives an FP16
engine on both versions without any precision flag.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from ..errors import BackendError, BackendUnavailable
from ..model import SRUNet
from .cache import (
    EngineKey,
    MachineInfo,
    ShapeProfile,
    atomic_write_bytes,
    build_lock,
    file_sha256,
    read_key,
    stale_reasons,
    write_engine,
    meta_path,
    _slug,
)
from .graph import GraphSpec, export_engine_onnx

log = logging.getLogger(__name__)

TRT_INSTALL_HINT = "install it with: pip install --extra-index-url https://pypi.nvidia.com tensorrt"
DEFAULT_WORKSPACE_MB = 2048


def import_tensorrt():
    """``import tensorrt`` or None (missing package, or its CUDA libraries fail to load)."""
    try:
        import tensorrt as trt  # noqa: PLC0415  (optional, heavy)
    except (ImportError, OSError) as e:
        log.debug("tensorrt import failed: %s", e)
        return None
    return trt


def probe_machine() -> MachineInfo:
    """TensorRT version, GPU name and compute capability of device 0 (None where absent)."""
    trt = import_tensorrt()
    gpu = cc = None
    try:
        import torch

        if torch.cuda.is_available():
            i = torch.cuda.current_device()
            gpu = torch.cuda.get_device_name(i)
            cc = "%d.%d" % torch.cuda.get_device_capability(i)
    except (ImportError, RuntimeError) as e:
        log.debug("CUDA probe failed: %s", e)
    return MachineInfo(trt.__version__ if trt else None, gpu, cc)


def unavailable_reason(machine: MachineInfo) -> str | None:
    """One line saying why engines cannot be built/run here, or None."""
    if machine.trt_version is None:
        return f"TensorRT is not installed; {TRT_INSTALL_HINT}"
    if int(machine.trt_version.split(".")[0]) < 10:
        return f"TensorRT {machine.trt_version} is too old; mpv-srunet needs TensorRT >= 10"
    if machine.gpu_name is None:
        from ..gpu.cuda import cuda_unavailable_reason

        return cuda_unavailable_reason() or "no CUDA GPU visible"
    return None


def require_tensorrt(what: str = "tensorrt") -> MachineInfo:
    machine = probe_machine()
    reason = unavailable_reason(machine)
    if reason:
        raise BackendUnavailable(f"{what}: {reason}")
    return machine


def model_digest(model: SRUNet, spec: GraphSpec, static_hw: tuple[int, int] | None) -> str:
    """Hash of what determines the exported ONNX (weights, config, graph spec, exporter version).

    Lets a player find its engine without re-exporting the ONNX at every start.
    """
    import torch

    h = hashlib.sha256()
    h.update(json.dumps([model.cfg.to_dict(), spec.to_dict(), static_hw, torch.__version__], sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def engine_onnx(model: SRUNet, spec: GraphSpec, profile: ShapeProfile, cache_dir: Path) -> Path:
    """The engine-ready ONNX for (model, spec), exported once into ``cache_dir/onnx``."""
    static_hw = profile.opt_hw if profile.is_static else None
    digest = model_digest(model, spec, static_hw)[:16]
    kind = "static" + "x".join(map(str, static_hw)) if static_hw else "dynamic"
    path = cache_dir / "onnx" / f"srunet_{spec.tag()}_{spec.precision}_{kind}_{digest}.onnx"
    if not path.exists():
        export_engine_onnx(model, path, spec, static_hw=static_hw)
    return path


def make_key(onnx_path: Path, spec: GraphSpec, profile: ShapeProfile, machine: MachineInfo, builder: dict[str, Any]) -> EngineKey:
    return EngineKey(
        graph_tag=spec.tag(), precision=spec.precision, profile=profile, onnx_sha256=file_sha256(onnx_path),
        trt_version=str(machine.trt_version), gpu_name=str(machine.gpu_name),
        compute_capability=str(machine.compute_capability), builder=tuple(sorted(builder.items())),
    )


def engine_problems(path: Path, key: EngineKey, machine: MachineInfo) -> list[str]:
    """Reasons ``path`` must not be used for ``key`` here (missing, stale, corrupt); empty: use it."""
    if not path.exists():
        return ["not built yet"]
    reasons = stale_reasons(read_key(path), machine, expected=key)
    if not reasons:
        try:
            recorded = json.loads(meta_path(path).read_text()).get("engine_sha256")
        except (OSError, ValueError):
            recorded = None
        if recorded != file_sha256(path):
            reasons.append("engine file does not match its recorded checksum (truncated or replaced)")
    return reasons


def _make_logger(trt):
    """A TensorRT logger that keeps every message, so a failed build can say why and where."""

    class _Collecting(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: list[str] = []

        def log(self, severity, msg: str) -> None:  # noqa: A003  (TensorRT's callback name)
            level = int(severity)
            if level > int(trt.ILogger.Severity.INFO):
                return  # VERBOSE: tens of thousands of lines per build
            self.lines.append(f"[{getattr(severity, 'name', level)}] {msg}")
            if level <= int(trt.ILogger.Severity.WARNING):
                log.warning("TensorRT: %s", msg)

    return _Collecting()


def _network_flags(trt) -> int:
    """Strongly typed where the flag exists (TensorRT >= 9; a no-op default in 11)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(flag) if flag is not None else 0


def _apply_precision(trt, config, precision: str, strongly_typed: bool) -> None:
    """Only a weakly typed network (old TensorRT 10.x without STRONGLY_TYPED) needs the FP16 flag."""
    if precision == "fp16" and not strongly_typed and hasattr(trt.BuilderFlag, "FP16"):
        config.set_flag(trt.BuilderFlag.FP16)


def _add_profile(builder, network, config, spec: GraphSpec, profile: ShapeProfile) -> None:
    """Min/opt/max shapes for every dynamic input (batch only for the float ``rgb`` format)."""
    dynamic = any(-1 in tuple(network.get_input(i).shape) for i in range(network.num_inputs))
    if not dynamic:
        return
    batch = profile.max_batch if spec.input_format == "rgb" else 1
    shapes = [spec.input_shapes(*hw, batch=b) for hw, b in
              ((profile.min_hw, 1), (profile.opt_hw, 1), (profile.max_hw, batch))]
    p = builder.create_optimization_profile()
    for name in spec.input_names:
        p.set_shape(name, shapes[0][name], shapes[1][name], shapes[2][name])
    config.add_optimization_profile(p)


def _use_timing_cache(config, data: bytes) -> None:
    """Load the shared timing cache; a corrupt or mismatched one is replaced, not fatal."""
    try:
        cache = config.create_timing_cache(data)
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return
    except (RuntimeError, TypeError) as e:
        log.debug("timing cache: %s", e)
    log.warning("TensorRT timing cache unreadable or from another setup; starting a new one")
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _parse_onnx(trt, network, logger, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"srunet.trt: TensorRT cannot parse {onnx_path.name}: {errors}")


def build_serialized_engine(
    onnx_path: Path, spec: GraphSpec, profile: ShapeProfile, *, workspace_mb: int = DEFAULT_WORKSPACE_MB,
    opt_level: int | None = None, timing_cache: bytes = b"", log_path: Path | None = None,
) -> tuple[bytes, bytes]:
    """Build one engine from ``onnx_path``; returns (serialized engine, updated timing cache)."""
    trt = import_tensorrt()
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    flags = _network_flags(trt)
    network = builder.create_network(flags)
    _parse_onnx(trt, network, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if opt_level is not None:
        config.builder_optimization_level = int(opt_level)
    _apply_precision(trt, config, spec.precision, strongly_typed=flags != 0)
    _add_profile(builder, network, config, spec, profile)
    _use_timing_cache(config, timing_cache)
    plan = builder.build_serialized_network(network, config)
    if log_path is not None:
        atomic_write_bytes(log_path, "\n".join(logger.lines).encode())
    if plan is None:
        where = f"; log: {log_path}" if log_path else ""
        last = next((ln for ln in reversed(logger.lines) if "ERROR" in ln), "no error message")
        raise BackendError(f"srunet.trt: engine build failed ({last}){where}")
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def timing_cache_path(cache_dir: Path, machine: MachineInfo) -> Path:
    """One timing cache per TensorRT version and GPU, shared by all engines built there."""
    return cache_dir / f"timing_trt{machine.trt_version}_{_slug(str(machine.gpu_name))}-sm{machine.compute_capability}.cache"


def ensure_engine(
    model: SRUNet, spec: GraphSpec, profile: ShapeProfile, cache_dir: Path, *, workspace_mb: int = DEFAULT_WORKSPACE_MB,
    opt_level: int | None = None, force: bool = False, machine: MachineInfo | None = None,
) -> Path:
    """Path of a usable engine for (model, spec, profile) on this machine, building it if needed.

    Stale or corrupt engines are rebuilt, never returned. Concurrent callers
    serialise on a lock; the second finds the first one's engine and reuses it.
    """
    machine = machine or require_tensorrt("build-engine")
    onnx_path = engine_onnx(model, spec, profile, cache_dir)
    builder_opts: dict[str, Any] = {"opt_level": opt_level}
    key = make_key(onnx_path, spec, profile, machine, builder_opts)
    path = cache_dir / key.file_name()
    if not force and not engine_problems(path, key, machine):
        return path  # cached, and valid for this machine
    with build_lock(path):
        reasons = engine_problems(path, key, machine)
        if not reasons and not force:
            return path  # another process built it while we waited
        log.info("building TensorRT engine %s (%s)", path.name, "; ".join(reasons) or "forced")
        tc_path = timing_cache_path(cache_dir, machine)
        plan, tc = build_serialized_engine(
            onnx_path, spec, profile, workspace_mb=workspace_mb, opt_level=opt_level,
            timing_cache=tc_path.read_bytes() if tc_path.exists() else b"",
            log_path=path.with_suffix(".build.log"),
        )
        extra = {"built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "onnx": str(onnx_path), "graph": spec.to_dict(), "workspace_mb": workspace_mb}
        write_engine(path, plan, key, extra)
        atomic_write_bytes(tc_path, tc)
    return path
