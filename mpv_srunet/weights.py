"""Weights: our safetensors format, the authors' .pth checkpoints, and where to find them.

Our format is a safetensors file whose metadata (all strings, as safetensors wants)
holds:

* ``srunet.config``: JSON of :class:`~mpv_srunet.model.SRUNetCfg`;
* ``srunet.form``: ``train`` or ``deploy`` (deploy = fused, see model.py);
* ``srunet.format_version``: ``1``;
* anything else the writer passes (provenance, metrics), JSON-encoded when not a string.

A file may hold two *endpoints* of one network (same config and form) instead of one
set of weights: the tensors are stored as ``fidelity/NAME`` and ``perceptual/NAME``,
``srunet.endpoints`` is ``["fidelity", "perceptual"]`` and ``srunet.default_strength``
the blend used when none is asked for. Loading blends them linearly at ``strength``
(0 = fidelity, 1 = perceptual; network interpolation, Wang et al. 2018): the network
has no normalisation layers, so blending fused weights equals fusing blended ones.

Loading follows spandrel's order: dispatch on extension, canonicalise keys
(``state_dict``/``params_ema`` wrappers, ``module.`` prefixes), infer the
hyper-parameters from tensor shapes where the file does not say them, then a
strict load. Pickles are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import WeightsError
from .fsutil import atomic_path
from .model import SRUNet, SRUNetCfg, reparameterize_model

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
DEFAULT_WEIGHTS_NAME = "srunet_default.safetensors"
SIDECAR_SUFFIX = ".srunet.safetensors"
#: Environment variable that overrides the default weights file.
ENV_WEIGHTS = "MPV_SRUNET_WEIGHTS"
#: The two endpoints of a detail-strength file, in strength order (0, 1).
ENDPOINTS = ("fidelity", "perceptual")


@dataclass(frozen=True)
class WeightsInfo:
    """What a loaded weights file is: its path, config, metadata and checksum."""

    path: Path
    cfg: SRUNetCfg
    form: str  # "train" or "deploy"
    sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)
    #: the blend of the file's two endpoints that was loaded; None for a single-endpoint file
    strength: float | None = None

    @property
    def name(self) -> str:
        return self.path.name


# --------------------------------------------------------------------------- locations


def repo_engines_dir() -> Path:
    """``engines/`` at the top of the source tree (install.sh installs editable)."""
    return Path(__file__).resolve().parent.parent / "engines"


def default_weights_path() -> Path:
    """The weights used when none are given: ``$MPV_SRUNET_WEIGHTS`` or ``engines/srunet_default.safetensors``."""
    env = os.environ.get(ENV_WEIGHTS)
    return Path(env) if env else repo_engines_dir() / DEFAULT_WEIGHTS_NAME


def preset_weights_path(preset: str) -> Path:
    """The shipped weights of a model preset (``default``: :func:`default_weights_path`; others:
    ``engines/srunet_<preset>.safetensors``). WeightsError when that preset ships none: untrained
    (random) weights are never used to upscale."""
    from .model import PLAYBACK_PRESETS

    if preset not in PLAYBACK_PRESETS:
        raise WeightsError(f"model preset {preset!r}: choose one of {', '.join(PLAYBACK_PRESETS)} (or auto)")
    if preset == "default":
        return default_weights_path()
    p = repo_engines_dir() / f"srunet_{preset}.safetensors"
    if not p.is_file():
        raise WeightsError(f"model preset {preset!r}: no trained weights ship for it ({p} is missing); "
                           f"train them (mpv-srunet train run --preset {preset}) or pass a weights file")
    return p


def sidecar_weights_for(video: str | os.PathLike[str]) -> Path | None:
    """Per-video fine-tuned weights next to a local video (``VIDEO.srunet.safetensors``), if present."""
    s = str(video)
    if "://" in s:
        return None
    p = Path(s)
    for cand in (p.with_name(p.name + SIDECAR_SUFFIX), p.with_suffix(SIDECAR_SUFFIX)):
        if cand.is_file():
            return cand
    return None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- reading


def _canonicalize(sd: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for wrapper in ("params_ema", "state_dict", "model", "generator", "params"):
        if wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
            break
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def infer_config(sd: Mapping[str, torch.Tensor], *, out_scale: float | None = None) -> tuple[SRUNetCfg, str]:
    """Infer (config, form) of an SR-UNet state dict from its tensor shapes."""
    try:
        w1 = sd["dconv_down1.0.conv1.weight"]
        wl = sd["conv_last.weight"]
    except KeyError as e:
        raise WeightsError(f"not an SR-UNet state dict: missing {e.args[0]!r}") from None
    half, in_ch = int(w1.shape[0]), int(w1.shape[1])
    n_first = len({k.split(".")[1] for k in sd if k.startswith("dconv_down1.")})
    n_rest = len({k.split(".")[1] for k in sd if k.startswith("dconv_down2.")})
    # int(2*lm) == n_first and int(3*lm) == n_rest: pick the simplest lm that gives both.
    lm = next((c / 10 for c in range(1, 100) if int(2 * c / 10) == n_first and int(3 * c / 10) == n_rest), None)
    if lm is None:
        raise WeightsError(f"block counts {n_first}/{n_rest} match no layer multiplier")
    s2c = int(wl.shape[0])
    scale = next((s for s in (1, 2, 3, 4) if s2c % (s * s) == 0 and s2c // (s * s) == 3), None)
    if scale is None:
        raise WeightsError(f"conv_last has {s2c} output channels; expected 3*scale^2")
    form = "train" if any(".conv_adapter." in k for k in sd) else "deploy"
    cfg = SRUNetCfg(n_filters=2 * half, layer_multiplier=lm, scale=scale, out_scale=out_scale, in_channels=in_ch)
    return cfg, form


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({_short(e)})") from None
    return sd, meta


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad pickles/zips
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({_short(e)})") from None
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return _canonicalize(obj)


def _short(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def check_strength(strength: float) -> float:
    """``strength`` as a float in 0..1, else a one-line error."""
    try:
        s = float(strength)
    except (TypeError, ValueError):
        raise WeightsError(f"strength {strength!r}: expected a number from 0 (fidelity) to 1 (perceptual)") from None
    if not 0.0 <= s <= 1.0:  # NaN fails too
        raise WeightsError(f"strength {strength}: expected a number from 0 (fidelity) to 1 (perceptual)")
    return s


def blend_state_dicts(fidelity: Mapping[str, torch.Tensor], perceptual: Mapping[str, torch.Tensor],
                      strength: float) -> dict[str, torch.Tensor]:
    """``(1 - s) * fidelity + s * perceptual`` per tensor, in fp32; exactly an endpoint at 0 and 1."""
    s = check_strength(strength)
    if s in (0.0, 1.0):
        return {k: v.float().clone() for k, v in (fidelity if s == 0.0 else perceptual).items()}
    return {k: (1.0 - s) * fidelity[k].float() + s * perceptual[k].float() for k in fidelity}


@dataclass(frozen=True)
class Endpoints:
    """The two endpoints of a detail-strength file (same config and form), for re-blending."""

    fidelity: dict[str, torch.Tensor]
    perceptual: dict[str, torch.Tensor]
    default_strength: float

    def blend(self, strength: float | None = None) -> dict[str, torch.Tensor]:
        return blend_state_dicts(self.fidelity, self.perceptual, self.default_strength if strength is None else strength)


def _split_endpoints(sd: Mapping[str, torch.Tensor], meta: Mapping[str, Any], source: str) -> Endpoints | None:
    """The endpoints of a two-endpoint file; None for a file of one set of weights."""
    if "srunet.endpoints" not in meta:
        return None
    if list(meta["srunet.endpoints"]) != list(ENDPOINTS):
        raise WeightsError(f"{source}: srunet.endpoints is {meta['srunet.endpoints']!r}; expected {list(ENDPOINTS)}")
    parts: dict[str, dict[str, torch.Tensor]] = {e: {} for e in ENDPOINTS}
    for k, v in sd.items():
        e, _, name = k.partition("/")
        if e not in parts or not name:
            raise WeightsError(f"{source}: tensor {k!r} belongs to no endpoint; expected fidelity/... or perceptual/...")
        parts[e][name] = v
    fid, perc = parts["fidelity"], parts["perceptual"]
    if set(fid) != set(perc):
        raise WeightsError(f"{source}: the endpoints hold different tensors: {sorted(set(fid) ^ set(perc))[:3]}")
    for k in fid:
        if fid[k].shape != perc[k].shape:
            raise WeightsError(f"{source}: tensor {k} has shape {tuple(fid[k].shape)} in fidelity, {tuple(perc[k].shape)} in perceptual")
    try:
        default = check_strength(meta.get("srunet.default_strength", 1.0))
    except WeightsError as e:
        raise WeightsError(f"{source}: srunet.default_strength: {e}") from None
    return Endpoints(fid, perc, default)


def has_endpoints(path: str | os.PathLike[str] | None = None) -> bool:
    """Whether a weights file (default: the shipped one) holds fidelity/perceptual endpoints (reads the header only)."""
    from safetensors import safe_open

    p = Path(path) if path is not None else default_weights_path()
    if p.suffix.lower() != ".safetensors" or not p.is_file():
        return False
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            return "srunet.endpoints" in (f.metadata() or {})
    except Exception:  # unreadable: loading it will say why
        return False


def read_endpoints(path: str | os.PathLike[str]) -> tuple[Endpoints, SRUNetCfg, str]:
    """(endpoints, config, form) of a two-endpoint file; a one-line error for any other file."""
    p = Path(path)
    sd, cfg, form, meta = _read_file(p)
    ends = _split_endpoints(sd, meta, str(p))
    if ends is None:
        raise WeightsError(f"{p}: holds one set of weights, not fidelity/perceptual endpoints; strength does not apply")
    return ends, cfg, form


def read_weights(path: str | os.PathLike[str], *, strength: float | None = None,
                 ) -> tuple[dict[str, torch.Tensor], SRUNetCfg, str, dict[str, Any]]:
    """Read a weights file: (state dict, config, form, metadata). No model built yet.

    A two-endpoint file is blended at ``strength`` (default: its ``srunet.default_strength``)
    and ``metadata["srunet.strength"]`` says at what; ``strength`` with a single-endpoint
    file is an error.
    """
    p = Path(path)
    sd, cfg, form, meta = _read_file(p)
    ends = _split_endpoints(sd, meta, str(p))
    if ends is None:
        if strength is not None:
            raise WeightsError(f"{p}: holds one set of weights, not fidelity/perceptual endpoints; strength does not apply")
        return sd, cfg, form, meta
    s = ends.default_strength if strength is None else check_strength(strength)
    return ends.blend(s), cfg, form, {**meta, "srunet.strength": s}


def _read_file(p: Path) -> tuple[dict[str, torch.Tensor], SRUNetCfg, str, dict[str, Any]]:
    if not p.exists():
        raise WeightsError(f"{p}: no such weights file")
    if p.is_dir() or p.stat().st_size == 0:
        raise WeightsError(f"{p}: empty or not a file")
    ext = p.suffix.lower()
    if ext == ".safetensors":
        sd, raw = _read_safetensors(p)
        meta: dict[str, Any] = {k: _maybe_json(v) for k, v in raw.items()}
        if "srunet.config" in meta:
            if "srunet.endpoints" in meta and "srunet.form" not in meta:
                raise WeightsError(f"{p}: a two-endpoint file needs srunet.form metadata")
            try:
                cfg = SRUNetCfg.from_dict(meta["srunet.config"])
            except (TypeError, ValueError) as e:
                raise WeightsError(f"{p}: bad srunet.config metadata ({e})") from None
            form = str(meta.get("srunet.form", "deploy"))
        elif "srunet.endpoints" in meta:
            raise WeightsError(f"{p}: a two-endpoint file needs srunet.config metadata")
        else:
            cfg, form = infer_config(sd)
    elif ext in (".pth", ".pt", ".ckpt", ".bin"):
        sd, meta = _read_pickle(p), {}
        cfg, form = infer_config(sd)
    else:
        raise WeightsError(f"{p}: unknown weights extension {ext!r}; expected .safetensors, .pth, .pt or .ckpt")
    return sd, cfg, form, meta


def _maybe_json(v: str) -> Any:
    try:
        return json.loads(v)
    except (json.JSONDecodeError, TypeError):
        return v


def build_from_state_dict(sd: Mapping[str, torch.Tensor], cfg: SRUNetCfg, form: str, *, source: str) -> SRUNet:
    """Strictly load ``sd`` into a model of ``form``; errors name the file and the mismatch."""
    if form not in ("train", "deploy"):
        raise WeightsError(f"{source}: unknown srunet.form {form!r}; expected train or deploy")
    model = SRUNet(cfg, deploy=(form == "deploy"))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}" if missing else ""
        what += (", " if what else "") + (f"unexpected {unexpected[:3]}" if unexpected else "")
        raise WeightsError(f"{source}: does not match SR-UNet {cfg} ({form} form): {what}")
    for k, t in expected.items():
        if tuple(sd[k].shape) != tuple(t.shape):
            raise WeightsError(f"{source}: tensor {k} has shape {tuple(sd[k].shape)}, expected {tuple(t.shape)}")
        if not torch.isfinite(sd[k]).all():
            raise WeightsError(f"{source}: tensor {k} holds NaN or infinite values")
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.eval()


def load_model(path: str | os.PathLike[str] | None = None, *, deploy: bool = True,
               strength: float | None = None) -> tuple[SRUNet, WeightsInfo]:
    """Load weights (default: :func:`default_weights_path`) into an eval-mode model.

    ``deploy=True`` returns the fused form whatever the file holds; ``deploy=False``
    needs a train-form file. ``strength`` blends a two-endpoint file (see the module
    docstring); None takes the file's default.
    """
    p = Path(path) if path is not None else default_weights_path()
    if path is None and not p.exists():
        raise WeightsError(
            f"{p}: default weights not found; pass --weights FILE or set {ENV_WEIGHTS} "
            "(a source checkout ships engines/srunet_default.safetensors)"
        )
    sd, cfg, form, meta = read_weights(p, strength=strength)
    model = build_from_state_dict(sd, cfg, form, source=str(p))
    if deploy and form == "train":
        model = reparameterize_model(model, inplace=True)
    elif not deploy and form == "deploy":
        raise WeightsError(f"{p}: holds fused (deploy) weights; training needs a train-form file")
    info = WeightsInfo(path=p, cfg=cfg, form=form, sha256=file_sha256(p), metadata=meta,
                       strength=meta.get("srunet.strength"))
    return model.eval(), info


def load_endpoint_models(path: str | os.PathLike[str]) -> tuple[SRUNet, SRUNet, Endpoints]:
    """Both endpoints of a two-endpoint file as eval-mode models in the file's form, and the raw endpoints."""
    ends, cfg, form = read_endpoints(path)
    models = [build_from_state_dict(sd, cfg, form, source=f"{path} ({name})")
              for name, sd in zip(ENDPOINTS, (ends.fidelity, ends.perceptual))]
    return models[0], models[1], ends


# --------------------------------------------------------------------------- writing


def save_weights(
    path: str | os.PathLike[str],
    model: SRUNet,
    metadata: Mapping[str, Any] | None = None,
    *,
    half: bool = False,
) -> Path:
    """Write ``model`` as safetensors with our metadata, atomically (temp file + rename)."""
    from safetensors.torch import save_file

    p = Path(path)
    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    meta.update(
        {
            "srunet.config": json.dumps(model.cfg.to_dict()),
            "srunet.form": "deploy" if model.deploy else "train",
            "srunet.format_version": FORMAT_VERSION,
            "srunet.dtype": "float16" if half else "float32",
        }
    )
    with atomic_path(p) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return p


def save_endpoints(
    path: str | os.PathLike[str],
    fidelity: SRUNet,
    perceptual: SRUNet,
    default_strength: float,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write two endpoints of one network (same config and form) as one detail-strength file, atomically."""
    from safetensors.torch import save_file

    if fidelity.cfg != perceptual.cfg or fidelity.deploy != perceptual.deploy:
        raise WeightsError("the endpoints must share one config and form")
    p = Path(path)
    tensors = {f"{name}/{k}": v.detach().to("cpu", torch.float32).contiguous()
               for name, m in zip(ENDPOINTS, (fidelity, perceptual)) for k, v in m.state_dict().items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    meta.update({
        "srunet.config": json.dumps(fidelity.cfg.to_dict()),
        "srunet.form": "deploy" if fidelity.deploy else "train",
        "srunet.format_version": FORMAT_VERSION,
        "srunet.dtype": "float32",
        "srunet.endpoints": json.dumps(list(ENDPOINTS)),
        "srunet.default_strength": json.dumps(check_strength(default_strength)),
    })
    with atomic_path(p) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return p


def import_authors_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    out_scale: float | None = None,
    deploy: bool = True,
    extra_metadata: Mapping[str, Any] | None = None,
) -> WeightsInfo:
    """Convert an authors'-format ``.pth`` (fast-sr-unet) to our safetensors.

    The authors' 1.5x model is their 2x network followed by a x0.75 bicubic rescale,
    which the checkpoint cannot tell; pass ``out_scale=0.75`` for it.
    """
    src_p = Path(src)
    if src_p.suffix.lower() not in (".pth", ".pt", ".ckpt"):
        raise WeightsError(f"{src_p}: expected an authors' .pth checkpoint")
    if Path(dst).resolve() == src_p.resolve():
        raise WeightsError(f"{dst}: output is the same file as the input")
    sd = _read_pickle(src_p) if src_p.exists() else None
    if sd is None:
        raise WeightsError(f"{src_p}: no such checkpoint")
    cfg, form = infer_config(sd, out_scale=out_scale)
    model = build_from_state_dict(sd, cfg, form, source=str(src_p))
    if deploy:
        model = reparameterize_model(model, inplace=True)
    meta = {"provenance": {"imported_from": src_p.name, "sha256": file_sha256(src_p)}}
    meta.update(extra_metadata or {})
    save_weights(dst, model, meta)
    return WeightsInfo(Path(dst), cfg, "deploy" if deploy else form, file_sha256(Path(dst)), meta)
