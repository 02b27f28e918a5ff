"""Weights: our safetensors format, the authors' .pth checkpoints, and where to find them.

Our format is a safetensors file whose metadata (all strings, as safetensors wants)
holds:

* ``srunet.config``: JSON of :class:`~mpv_srunet.model.SRUNetCfg`;
* ``srunet.form``: ``train`` or ``deploy`` (deploy = fused, see model.py);
* ``srunet.format_version``: ``1``;
* anything else the writer passes (provenance, metrics), JSON-encoded when not a string.

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


@dataclass(frozen=True)
class WeightsInfo:
    """What a loaded weights file is: its path, config, metadata and checksum."""

    path: Path
    cfg: SRUNetCfg
    form: str  # "train" or "deploy"
    sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)

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


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], SRUNetCfg, str, dict[str, Any]]:
    """Read a weights file: (state dict, config, form, metadata). No model built yet."""
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"{p}: no such weights file")
    if p.is_dir() or p.stat().st_size == 0:
        raise WeightsError(f"{p}: empty or not a file")
    ext = p.suffix.lower()
    if ext == ".safetensors":
        sd, raw = _read_safetensors(p)
        meta: dict[str, Any] = {k: _maybe_json(v) for k, v in raw.items()}
        if "srunet.config" in meta:
            try:
                cfg = SRUNetCfg.from_dict(meta["srunet.config"])
            except (TypeError, ValueError) as e:
                raise WeightsError(f"{p}: bad srunet.config metadata ({e})") from None
            form = str(meta.get("srunet.form", "deploy"))
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


def load_model(path: str | os.PathLike[str] | None = None, *, deploy: bool = True) -> tuple[SRUNet, WeightsInfo]:
    """Load weights (default: :func:`default_weights_path`) into an eval-mode model.

    ``deploy=True`` returns the fused form whatever the file holds; ``deploy=False``
    needs a train-form file.
    """
    p = Path(path) if path is not None else default_weights_path()
    if path is None and not p.exists():
        raise WeightsError(
            f"{p}: default weights not found; pass --weights FILE or set {ENV_WEIGHTS} "
            "(a source checkout ships engines/srunet_default.safetensors)"
        )
    sd, cfg, form, meta = read_weights(p)
    model = build_from_state_dict(sd, cfg, form, source=str(p))
    if deploy and form == "train":
        model = reparameterize_model(model, inplace=True)
    elif not deploy and form == "deploy":
        raise WeightsError(f"{p}: holds fused (deploy) weights; training needs a train-form file")
    info = WeightsInfo(path=p, cfg=cfg, form=form, sha256=file_sha256(p), metadata=meta)
    return model.eval(), info


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
