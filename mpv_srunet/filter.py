"""Frames in, frames out: padding, batching and the backend call.

    >>> from mpv_srunet import Upscaler
    >>> up = Upscaler()                      # default weights, fastest backend here
    >>> out = up.upscale(rgb)                # HxWx3 uint8 -> 2Hx2Wx3 uint8
    >>> out_frame = up.upscale(video_frame)  # av.VideoFrame -> av.VideoFrame, same pix fmt

Sizes that are not multiples of 8 are padded by edge replication (the authors
padded with zeros, which darkens borders) and cropped after. A VideoFrame is converted with its own colour
(:mod:`mpv_srunet.colour` decides it, with mpv's rule for untagged video, and converts),
so the conversion back uses exactly the same matrix and range.
The filter holds no per-frame state: one Upscaler may serve several threads as
long as its backend does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Any, Sequence

import numpy as np

from .backends import Backend, create_backend
from .colour import Colour, float_to_frame, frame_colour, frame_to_float, yuv420_to_frame
from .errors import MediaError, WeightsError
from .model import SRUNet, SRUNetCfg, reparameterize_model
from .weights import Endpoints, WeightsInfo, build_from_state_dict, check_strength, load_model, read_endpoints

log = logging.getLogger(__name__)

#: Largest input accepted, in pixels (8K UHD / 2): bigger frames are refused, since the
#: full-resolution activations alone would need > 4 GiB.
MAX_INPUT_PIXELS = 3840 * 2160


def uint8_to_float(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) * (2.0 / 255.0) - 1.0


def float_to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def pad_amounts(h: int, w: int, multiple: int) -> tuple[int, int]:
    """Bottom and right padding that bring (h, w) to multiples of ``multiple``."""
    return (-h) % multiple, (-w) % multiple


def out_size(h: int, w: int, cfg: SRUNetCfg) -> tuple[int, int]:
    s = cfg.total_scale
    return int(round(h * s)), int(round(w * s))


class Upscaler:
    """SR-UNet frame filter: weights + backend + colour + padding + batching.

    Args:
        weights: a weights file (ours or the authors' .pth); ``None`` = the shipped default.
        backend: ``auto`` or a name from :data:`mpv_srunet.backends.BACKENDS`.
        model: an already-built SR-UNet (instead of ``weights``), e.g. during training.
        batch_size: frames per backend call in :meth:`upscale_batch`.
        strength: detail strength, 0 (fidelity) .. 1 (perceptual), for weights files that
            hold both endpoints (the shipped ones do); None = the file's default. Change it
            later with :meth:`set_strength`.
        **backend_options: passed to the backend (e.g. ``precision="fp32"``, ``threads=2``).
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        backend: str = "auto",
        *,
        model: SRUNet | None = None,
        batch_size: int = 1,
        strength: float | None = None,
        **backend_options: Any,
    ) -> None:
        if model is not None:
            if strength is not None:
                raise WeightsError("strength applies to a weights file with fidelity/perceptual endpoints, not to a model")
            self.weights_info: WeightsInfo | None = None
            self.model = model
        else:
            self.model, self.weights_info = load_model(weights, deploy=True, strength=strength)
        self.cfg: SRUNetCfg = self.model.cfg
        self.batch_size = max(1, int(batch_size))
        self._backend_request = (backend, backend_options)
        self._backend: Backend = create_backend(backend, self.model, **backend_options)
        self._endpoints: tuple[Endpoints, SRUNetCfg, str] | None = None
        #: held by every backend call and by a weights swap, so a swap falls between frames
        self._swap_lock = threading.Lock()
        self._strength_lock = threading.Lock()

    # ------------------------------------------------------------------ properties
    @property
    def scale(self) -> float:
        return self.cfg.total_scale

    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def strength(self) -> float | None:
        """The detail strength in use; None when the weights have a single endpoint."""
        return self.weights_info.strength if self.weights_info else None

    def set_strength(self, strength: float) -> float:
        """Re-blend the weights file's endpoints at ``strength`` and swap them in between two frames.

        torch-cpu/torch-cuda copy the new weights into the live modules (milliseconds;
        CUDA graphs stay valid); other runtimes (onnxruntime, tensorrt, a compiled
        torch-cpu) get a new backend built while the old one keeps serving, then swapped
        (TensorRT: an engine build per new strength, cached; no refit). WeightsError for
        single-endpoint weights or a strength outside 0..1.
        """
        with self._strength_lock:  # one re-blend at a time
            return self._set_strength(strength)

    def _set_strength(self, strength: float) -> float:
        info = self.weights_info
        if info is None or info.strength is None:
            what = info.path if info else "this model"
            raise WeightsError(f"{what}: holds one set of weights, not fidelity/perceptual endpoints; strength does not apply")
        s = check_strength(strength)
        if s == info.strength:
            return s
        if self._endpoints is None:
            self._endpoints = read_endpoints(info.path)
        ends, cfg, form = self._endpoints
        model = build_from_state_dict(ends.blend(s), cfg, form, source=f"{info.path} (strength {s:g})")
        if form == "train":
            model = reparameterize_model(model, inplace=True)
        model.eval()
        load = getattr(self._backend, "load_weights", None)
        with self._swap_lock:
            swapped = bool(load and load(model))
        if not swapped:
            name, options = self._backend_request
            new = create_backend(name, model, **options)
            with self._swap_lock:
                old, self._backend = self._backend, new
            old.close()
        self.model = model
        self.weights_info = dataclasses.replace(info, strength=s, metadata={**info.metadata, "srunet.strength": s})
        log.info("detail strength %.2f (%s)", s, "in place" if swapped else "new backend")
        return s

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> "Upscaler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ core
    def upscale_float(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW (or CHW) in [-1, 1], any H and W -> upscaled, same layout."""
        squeeze = x.ndim == 3
        if squeeze:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != self.cfg.in_channels:
            raise MediaError(f"expected NCHW with {self.cfg.in_channels} channels, got shape {tuple(x.shape)}")
        n, _, h, w = x.shape
        if h < 1 or w < 1:
            raise MediaError(f"empty frame {w}x{h}")
        if h * w > MAX_INPUT_PIXELS:
            raise MediaError(f"frame {w}x{h} is larger than the {MAX_INPUT_PIXELS / 1e6:.1f} MP this filter accepts; downscale it first")
        ph, pw = pad_amounts(h, w, SRUNet.multiple_of)
        xp = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge") if (ph or pw) else x
        with self._swap_lock:
            y = self._backend.infer(np.ascontiguousarray(xp, dtype=np.float32))
        oh, ow = out_size(h, w, self.cfg)
        y = y[:, :, :oh, :ow]
        return y[0] if squeeze else y

    def _upscale_rgb_batch(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.stack([uint8_to_float(_check_rgb(a)).transpose(2, 0, 1) for a in arrays])
        y = self.upscale_float(x)
        return [float_to_uint8(t.transpose(1, 2, 0)) for t in y]

    def upscale(self, image: Any) -> Any:
        """HxWx3 uint8 RGB -> uint8 RGB (2x); or av.VideoFrame -> av.VideoFrame."""
        if isinstance(image, np.ndarray):
            return self._upscale_rgb_batch([image])[0]
        return self.upscale_batch([image])[0]

    def upscale_batch(self, images: Sequence[Any]) -> list[Any]:
        """Upscale many images/frames; equal-sized neighbours share a backend call."""
        out: list[Any] = []
        i = 0
        while i < len(images):
            group = [images[i]]
            while (len(group) < self.batch_size and i + len(group) < len(images)
                   and _shape_key(images[i + len(group)]) == _shape_key(images[i])):
                group.append(images[i + len(group)])
            out.extend(self._upscale_group(group))
            i += len(group)
        return out

    def upscale_yuv420(self, frame: Any, colour: Colour | None = None) -> np.ndarray | None:
        """A yuv420p or yuv420p10le VideoFrame -> the 2x frame's 8-bit yuv420p planes as one
        (2H*3/2, 2W) uint8 array (PyAV's ``to_ndarray`` layout), same matrix and range,
        converted on the backend's device.

        This is the GPU frame path (torch-cuda): only the decoded planes go to the GPU and
        only the output planes come back. Returns None where it does not apply (a backend
        without one, another pixel format, odd sizes, a matrix other than BT.709/601/2020):
        then use :meth:`upscale` or :meth:`upscale_float`.
        """
        colour = colour or frame_colour(frame)
        spec = self._yuv420_spec(frame, colour)
        if spec is None:
            return None
        h, w = frame.height, frame.width
        if h * w > MAX_INPUT_PIXELS:
            raise MediaError(f"frame {w}x{h} is larger than the {MAX_INPUT_PIXELS / 1e6:.1f} MP this filter accepts; downscale it first")
        dt = np.dtype(np.uint16 if frame.format.name == "yuv420p10le" else np.uint8)
        y, u, v = (np.frombuffer(p, dt).reshape(ph, p.line_size // dt.itemsize)[:, :pw]
                   for p, ph, pw in zip(frame.planes, (h, h // 2, h // 2), (w, w // 2, w // 2)))
        with self._swap_lock:
            return self._backend.infer_yuv420(y, u, v, spec)

    def has_frame_path(self, frame: Any, colour: Colour | None = None) -> bool:
        """Whether :meth:`upscale_yuv420` would take ``frame`` (cheap: nothing runs)."""
        return self._yuv420_spec(frame, colour or frame_colour(frame)) is not None

    def _yuv420_spec(self, frame: Any, colour: Colour) -> Colour | None:
        """``colour`` where the frame path applies to ``frame``, else None."""
        if (not hasattr(self._backend, "infer_yuv420") or frame.format.name not in ("yuv420p", "yuv420p10le")
                or frame.width % 2 or frame.height % 2 or self.cfg.total_scale != 2 or not colour.on_gpu):
            return None
        return colour

    def _upscale_group(self, group: list[Any]) -> list[Any]:
        if isinstance(group[0], np.ndarray):
            return self._upscale_rgb_batch(group)
        colours = [frame_colour(f) for f in group]
        # the frame path's output is 8-bit yuv420p: it serves frames of that format here
        if all(f.format.name == "yuv420p" and self._yuv420_spec(f, c) is not None for f, c in zip(group, colours)):
            return [yuv420_to_frame(self.upscale_yuv420(f, c), f, c) for f, c in zip(group, colours)]
        x = np.stack([frame_to_float(f, c).transpose(2, 0, 1) for f, c in zip(group, colours)])
        y = self.upscale_float(x)
        return [float_to_frame(t.transpose(1, 2, 0), f, c) for t, f, c in zip(y, group, colours)]


def _shape_key(img: Any) -> tuple:
    if isinstance(img, np.ndarray):
        return ("np", img.shape, img.dtype.str)
    return ("frame", img.width, img.height, img.format.name)


def _check_rgb(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise MediaError(f"expected an HxWx3 uint8 RGB array, got {a.dtype} {tuple(a.shape)}")
    return a
