"""SR-UNet as an mpv GLSL user shader (``mpv-srunet export-glsl``, docs/glsl.md).

The fused (deploy) network becomes a chain of mpv ``//!HOOK MAIN`` passes,
so any GPU that runs mpv's ``vo=gpu`` / ``vo=gpu-next`` runs SR-UNet, with no Python
at play time. Design (every choice is checked against torch by tests/test_glsl_mpv.py):

* **Hook point.** ``MAIN``: RGB after mpv's YUV->RGB conversion and before its
  scaler, which is what the network was trained on (gamma-encoded RGB). The
  shader maps [0, 1] to the network's [-1, 1] and back.
* **Two variants.** ``compute`` (default): one compute invocation per pixel
  computes 16 output channels from one read of each input and stores them in a
  texture that interleaves 4 channel groups along x (see "compute variant"
  below): about 4x fewer texture fetches and 6x fewer passes. ``fragment``: one
  pass per 4 channels, for GPUs/APIs without compute shaders (macOS OpenGL).
  The rest of this list describes the fragment variant; the compute one differs
  where its section says.
* **One pass per 4 channels.** A pass writes one RGBA texture (4 channels); a
  layer with C outputs is C/4 passes. A conv reads every input texture at the 9
  taps with ``texelFetch`` and *zero padding* (a bounds mask): ``texOff`` would
  clamp to the edge, unlike torch's convs.
* **Bind limit.** mpv gives every ``//!BIND`` a vertex attribute; with the
  position that leaves 15 (16 fails silently). A conv with more input textures
  is split: the first pass sums 15 inputs (+ bias) into a partial texture, each
  next one binds the partial + 14 more; only the last applies the ReLU.
* **Sizes.** Level k textures are ``P0 / 2^k`` where ``P0`` is the input size
  rounded up to a multiple of 8 (``w + (8 - w % 8) % 8``: exact, so mpv's
  rounding of ``//!WIDTH`` never bites). Like the Python filter, the input is
  padded by *edge replication* up to P0 (the first conv clamps its reads to the
  real image) and the final pass only writes the 2W x 2H crop.
* **Max-pool** is its own pass per texture (4 fetches). **Bilinear 2x up +
  concat** is folded into the consumer conv: the upsampled channels are read
  with the GPU's bilinear filter at ``(q + 0.5) / 2`` texels, which with
  clamp-to-edge equals torch's ``align_corners=False`` (exact sizes make the
  texture edge the tensor edge).
* **Last pass** hooks MAIN at 2W x 2H: the 1x1 ``conv_last`` + depth-to-space
  (the sub-pixel ``(y % 2) * 2 + x % 2`` picks the output channel), the bicubic
  residual (torch's A = -0.75 kernel, taps clamped to the image) and the clamp.
* ``//!WHEN`` on every pass: only when mpv upscales by more than ``min_scale``
  on both axes (at 1x the shader does nothing).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from .errors import ConfigError
from .fsutil import write_text_atomic

if TYPE_CHECKING:  # torch stays out of the import path of the CLI
    from .model import SRUNet
    from .weights import WeightsInfo

#: Usable ``//!BIND`` per pass: GL has 16 vertex attributes, one is the position.
MAX_BINDS = 15
#: Texture-name prefix of every saved texture (mpv's namespace is global).
PREFIX = "SRUNET"
#: vo_gpu flushes its whole program cache beyond 256 programs (mpv's shader_cache.c); leave
#: room for mpv's own passes. A shader with more passes recompiles every frame there.
VO_GPU_PASS_BUDGET = 240
#: Input size the header's cost numbers are given for.
REF_SIZE = (960, 540)


@dataclass(frozen=True)
class GlslOptions:
    """What the generator may vary; the defaults are what ``export-glsl`` ships."""

    max_binds: int = MAX_BINDS  # textures bound per pass (tests lower it to force split sums)
    variant: str = "compute"  # "compute": 16 channels per invocation; "fragment": a pass per 4 channels
    min_scale: float = 1.4  # //!WHEN: run only when OUTPUT / MAIN exceeds this on both axes
    prefix: str = PREFIX  # saved-texture names: <prefix>_<layer>_<group>


@dataclass(frozen=True)
class Source:
    """One 4-channel input group of a conv: where to read it and how."""

    tex: str  # texture name; "HOOKED" for the input image
    kind: str  # "main" (input image), "direct" (same level), "up" (bilinear 2x from level + 1)


@dataclass
class GlslPass:
    """One ``//!HOOK MAIN`` pass."""

    desc: str
    binds: list[str]
    save: str | None  # None: the final pass, which replaces MAIN
    level: int | None  # output level (size P0 / 2^level); None: the 2x output
    body: str
    fetches: int  # texture fetches per pixel of its level (all of its texels / invocations there)
    macs: int  # multiply-accumulates per pixel of its level
    packs: int = 1  # 4-channel groups interleaved along x (compute variant): width = level width * packs
    compute: str | None = None  # "//!COMPUTE" block and thread sizes; None: a fragment pass


@dataclass
class GlslShader:
    """The generated shader: its passes and what they cost."""

    passes: list[GlslPass]
    header: str
    options: GlslOptions
    text: str = ""

    @property
    def max_binds(self) -> int:
        return max(len(p.binds) for p in self.passes)

    def fetches_per_output_pixel(self) -> float:
        """Texture fetches per pixel of the 2x output (levels weighted by their area)."""
        return sum(p.fetches * _area(p.level) for p in self.passes)

    def gflop_per_frame(self, size: tuple[int, int] = REF_SIZE) -> float:
        """GFLOP (2 per MAC) for one input frame of ``size`` (W, H)."""
        w, h = (_ceil8(v) for v in size)
        return sum(2 * p.macs * _area(p.level) for p in self.passes) * 4 * w * h / 1e9

    def texture_mib(self, size: tuple[int, int] = REF_SIZE, bytes_per_texel: int = 8) -> float:
        """GPU memory of the saved textures (mpv keeps one texture per pass; rgba16f = 8 B)."""
        w, h = (_ceil8(v) for v in size)
        return sum(_area(p.level) * p.packs * 4 * w * h * bytes_per_texel for p in self.passes) / 2**20


def _ceil8(v: int) -> int:
    return (v + 7) // 8 * 8


def _area(level: int | None) -> float:
    """Pixels of a pass at ``level`` per pixel of the 2x output."""
    return 1.0 if level is None else 0.25 / 4**level


# --------------------------------------------------------------------------- checks


def check_exportable(model: "SRUNet") -> None:
    """Refuse what the shader cannot express, with a one-line reason."""
    cfg = model.cfg
    if cfg.scale != 2:
        raise ConfigError(f"export-glsl supports 2x models only; these weights have scale={cfg.scale}")
    if cfg.out_scale is not None:
        raise ConfigError(
            f"export-glsl cannot express the final bicubic rescale (out_scale={cfg.out_scale}, e.g. the authors' "
            "1.5x model); use 2x weights and let mpv's scaler resize"
        )
    if cfg.in_channels != 3 or cfg.out_channels != 3:
        raise ConfigError(f"export-glsl needs RGB in and out; these weights have {cfg.in_channels} -> {cfg.out_channels} channels")
    if cfg.n_filters % 8:
        raise ConfigError(f"export-glsl packs 4 channels per texture: n_filters must be a multiple of 8, got {cfg.n_filters}")
    for name, t in model.state_dict().items():
        if not bool(t.isfinite().all()):
            raise ConfigError(f"weights tensor {name} holds NaN or inf; these weights cannot be exported (retrain or re-fuse)")


# --------------------------------------------------------------------------- formatting


def _f(v: float) -> str:
    """A GLSL float literal with 7 significant digits (always with a '.' or an exponent).

    7 digits keep the weights within float32 rounding of the file (relative error
    < 1e-7), far below what the rgba16f intermediate textures add, and keep the
    shader text about 25 % smaller than shortest-repr would.
    """
    s = f"{float(v):.7g}"
    if s in ("0", "-0"):
        return "0.0"
    if "e" in s:
        mant, _, exp = s.partition("e")
        return f"{mant}e{int(exp)}"
    return s if "." in s else s + ".0"


def _vec4(values: Iterable[float]) -> str:
    vals = list(values) + [0.0] * 4
    return "vec4(" + ", ".join(_f(v) for v in vals[:4]) + ")"


def _mat4(block: np.ndarray) -> str | None:
    """GLSL mat4 for ``out += M * in`` from a (out<=4, in<=4) block; None if all zero.

    GLSL matrices are column-major: column j holds the weights of input channel j.
    """
    m = np.zeros((4, 4), np.float32)
    m[: block.shape[0], : block.shape[1]] = block
    if not m.any():
        return None
    return "mat4(" + ", ".join(_f(v) for v in m.T.reshape(-1)) + ")"


def _size_expr(level: int, axis: str, packs: int = 1) -> str:
    """mpv RPN for P0 / 2^level (times ``packs``) on one axis (P0: the input size rounded up to a multiple of 8)."""
    d = f"HOOKED.{axis}"
    expr = f"{d} 8 {d} 8 % - 8 % +"
    expr = expr if level == 0 else f"{expr} {2**level} /"
    return expr if packs == 1 else f"{expr} {packs} *"


# --------------------------------------------------------------------------- pass builder


@dataclass
class _Builder:
    options: GlslOptions
    passes: list[GlslPass] = field(default_factory=list)

    def name(self, *parts: object) -> str:
        return "_".join([self.options.prefix, *(str(p) for p in parts)])

    def add(self, p: GlslPass) -> None:
        if len(p.binds) > self.options.max_binds:  # a generator bug, not a user error
            raise AssertionError(f"pass {p.desc} binds {len(p.binds)} textures > {self.options.max_binds}")
        self.passes.append(p)

    # -- layers ---------------------------------------------------------------

    def conv3x3(self, layer: str, sources: list[Source], weight: np.ndarray, bias: np.ndarray, level: int) -> list[str]:
        """A 3x3 conv + ReLU over ``sources`` (4 input channels each); returns the output textures."""
        cout = weight.shape[0]
        outs = []
        for og in range((cout + 3) // 4):
            w = weight[og * 4: og * 4 + 4]
            b = bias[og * 4: og * 4 + 4]
            outs.append(self._conv_group(layer, og, sources, w, b, level))
        return outs

    def _conv_group(self, layer: str, og: int, sources: list[Source], w: np.ndarray, b: np.ndarray, level: int) -> str:
        """The passes of one output group: the input sum split into chunks that fit the bind limit."""
        chunks = _chunk(list(enumerate(sources)), self.options.max_binds)
        partial: str | None = None
        out = self.name(layer, og)
        for ci, chunk in enumerate(chunks):
            last = ci == len(chunks) - 1
            save = out if last else self.name(layer, og, f"s{ci}")
            desc = f"srunet {layer} conv3x3 ch {og * 4}-{og * 4 + 3}" + ("" if len(chunks) == 1 else f" (part {ci + 1}/{len(chunks)})")
            body, fetches, macs = _conv_body(chunk, w, b, partial, relu=last)
            binds = ([partial] if partial else []) + [s.tex for _, s in chunk]
            self.add(GlslPass(desc, binds, save, level, body, fetches, macs))
            partial = save
        return out

    def maxpool(self, layer: str, textures: list[str], level: int) -> list[str]:
        """2x2 max-pool of level ``level - 1`` textures into level ``level``."""
        outs = []
        for i, t in enumerate(textures):
            out = self.name(layer, "pool", i)
            body = (
                "vec4 hook() {\n"
                "    ivec2 p = ivec2(gl_FragCoord.xy) * 2;\n"
                f"    return max(max(texelFetch({t}_raw, p, 0), texelFetch({t}_raw, p + ivec2(1, 0), 0)),\n"
                f"               max(texelFetch({t}_raw, p + ivec2(0, 1), 0), texelFetch({t}_raw, p + ivec2(1, 1), 0)));\n"
                "}\n"
            )
            self.add(GlslPass(f"srunet {layer} maxpool ch {i * 4}-{i * 4 + 3}", [t], out, level, body, 4, 0))
            outs.append(out)
        return outs

    def output(self, features: list[tuple[str, int]], weight: np.ndarray, bias: np.ndarray) -> None:
        """conv_last (1x1) + depth-to-space + bicubic residual + clamp, at 2W x 2H."""
        body, fetches, macs = _output_body(features, weight, bias)
        binds = ["HOOKED", *(t for t, _ in features)]
        self.add(GlslPass("srunet conv_last + depth-to-space + bicubic residual", binds, None, None, body, fetches, macs))


def _chunk(items: list, max_binds: int) -> list[list]:
    """Split conv inputs: the first pass binds ``max_binds``, later ones one fewer (the partial sum)."""
    if max_binds < 2:
        raise ConfigError(f"max_binds must be >= 2 to split a conv's input sum, got {max_binds}")
    chunks = [items[:max_binds]]
    rest = items[max_binds:]
    while rest:
        chunks.append(rest[: max_binds - 1])
        rest = rest[max_binds - 1:]
    return chunks


# --------------------------------------------------------------------------- pass bodies

_MAIN_READ = """\
// The input image at padded position q: edge-replicated beyond the real image, mapped to [-1, 1].
vec4 srunet_in(ivec2 q) {
    vec4 c = HOOKED_mul * texelFetch(HOOKED_raw, min(q, ivec2(HOOKED_size) - 1), 0);
    return clamp(c, 0.0, 1.0) * 2.0 - 1.0;
}
"""


def _size_of(chunk: list[tuple[int, Source]], partial: str | None) -> str:
    """GLSL for the level's logical size (the zero-padding bounds) from a texture this pass binds."""
    if partial:
        return f"ivec2({partial}_size)"
    kinds = {s.kind: s.tex for _, s in chunk}
    if "main" in kinds:
        return "(ivec2(HOOKED_size) + 7) / 8 * 8"
    if "direct" in kinds:
        return f"ivec2({kinds['direct']}_size)"
    return f"ivec2({kinds['up']}_size) * 2"


def _read(src: Source) -> str:
    if src.kind == "main":
        return "srunet_in(q)"
    if src.kind == "direct":
        return f"texelFetch({src.tex}_raw, q, 0)"
    return f"texture({src.tex}_raw, u * {src.tex}_pt)"


def _conv_body(
    chunk: list[tuple[int, Source]], w: np.ndarray, b: np.ndarray, partial: str | None, relu: bool
) -> tuple[str, int, int]:
    """GLSL of one conv pass: 9 taps, each masked to zero outside the level (torch's zero padding)."""
    has_main = any(s.kind == "main" for _, s in chunk)
    has_up = any(s.kind == "up" for _, s in chunk)
    lines = [_MAIN_READ] if has_main else []
    lines += [
        "vec4 hook() {",
        "    ivec2 p = ivec2(gl_FragCoord.xy);",
        f"    ivec2 sz = {_size_of(chunk, partial)};",
        f"    vec4 acc = {f'texelFetch({partial}_raw, p, 0)' if partial else _vec4(b)};",
        "    ivec2 q; float m;" + (" vec2 u;" if has_up else ""),
    ]
    fetches, macs = (1 if partial else 0), 0
    for ky in range(3):
        for kx in range(3):
            terms = []
            for j, src in chunk:
                mat = _mat4(w[:, j * 4: j * 4 + 4, ky, kx])
                if mat is not None:
                    terms.append(f"{mat} * {_read(src)}")
            if not terms:
                continue
            fetches += len(terms)
            macs += 16 * len(terms)
            lines.append(f"    q = p + ivec2({kx - 1}, {ky - 1});")
            lines.append("    m = float(all(greaterThanEqual(q, ivec2(0))) && all(lessThan(q, sz)));")
            lines.append("    q = clamp(q, ivec2(0), sz - 1);")
            if has_up:
                lines.append("    u = (vec2(q) + 0.5) * 0.5;")
            lines.append("    acc += m * (" + "\n        + ".join(terms) + ");")
    lines.append("    return max(acc, vec4(0.0));" if relu else "    return acc;")
    lines.append("}")
    return "\n".join(lines) + "\n", fetches, macs


def bicubic_weights(t: float, a: float = -0.75) -> list[float]:
    """torch's bicubic (``upsample_bicubic2d``) tap weights for fractional offset ``t``."""

    def near(x: float) -> float:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _output_body(features: list[tuple[str, int]], weight: np.ndarray, bias: np.ndarray) -> tuple[str, int, int]:
    """GLSL of the final pass. conv_last channel c*4 + k is colour c at sub-pixel k = 2*dy + dx.

    ``features``: (texture, groups interleaved in it) in channel order.
    """
    w = weight[:, :, 0, 0]  # (12, half)
    lines = [
        "vec4 hook() {",
        "    ivec2 P = ivec2(gl_FragCoord.xy);",
        "    ivec2 p = P / 2;",
        "    int k = (P.y & 1) * 2 + (P.x & 1);",
    ]
    for k in range(4):
        lines.append(f"    vec4 r{k} = {_vec4(bias[[k, 4 + k, 8 + k]])};")
    lines.append("    vec4 f;")
    g = 0
    for tex, n in features:
        for i in range(n):
            addr = "p" if n == 1 else f"ivec2(p.x * {n} + {i}, p.y)"
            lines.append(f"    f = texelFetch({tex}_raw, {addr}, 0);")
            for k in range(4):
                mat = _mat4(w[[k, 4 + k, 8 + k], g * 4: g * 4 + 4])
                if mat is not None:
                    lines.append(f"    r{k} += {mat} * f;")
            g += 1
    even, odd = bicubic_weights(0.75), bicubic_weights(0.25)
    lines += [
        "    vec3 net = (k == 0 ? r0 : k == 1 ? r1 : k == 2 ? r2 : r3).rgb;",
        "    // Bicubic 2x residual (torch, align_corners=False): an even output pixel sits 0.75 past",
        "    // input tap p-1, an odd one 0.25 past tap p. Taps are clamped to the real image.",
        f"    const vec4 W_EVEN = {_vec4(even)};",
        f"    const vec4 W_ODD = {_vec4(odd)};",
        "    ivec2 base = p - 2 + (P & 1);",
        "    ivec2 lim = ivec2(HOOKED_size) - 1;",
        "    vec4 wx = (P.x & 1) == 0 ? W_EVEN : W_ODD;",
        "    vec4 wy = (P.y & 1) == 0 ? W_EVEN : W_ODD;",
        "    vec3 bic = vec3(0.0);",
        "    for (int j = 0; j < 4; j++) {",
        "        int y = clamp(base.y + j, 0, lim.y);",
        "        vec3 row = vec3(0.0);",
        "        for (int i = 0; i < 4; i++) {",
        "            vec3 c = HOOKED_mul * texelFetch(HOOKED_raw, ivec2(clamp(base.x + i, 0, lim.x), y), 0).rgb;",
        "            row += wx[i] * clamp(c, 0.0, 1.0);",
        "        }",
        "        bic += wy[j] * row;",
        "    }",
        "    vec3 y = clamp(net + bic * 2.0 - 1.0, -1.0, 1.0);",
        "    float alpha = HOOKED_mul * texelFetch(HOOKED_raw, p, 0).a;",
        "    return vec4(y * 0.5 + 0.5, alpha);",
        "}",
    ]
    fetches = g + 16 + 1
    macs = 4 * 16 * g + 16 * 3
    return "\n".join(lines) + "\n", fetches, macs


# --------------------------------------------------------------------------- network walk


def _weights(conv) -> tuple[np.ndarray, np.ndarray]:
    return conv.weight.detach().cpu().double().numpy(), conv.bias.detach().cpu().double().numpy()


def _stage(b: _Builder, name: str, stage, sources: list[Source], level: int) -> list[str]:
    """The fused blocks of one stage; each block's conv1 (3x3 + ReLU)."""
    outs: list[str] = []
    for i, blk in enumerate(stage):
        w, bias = _weights(blk.conv1)
        outs = b.conv3x3(f"{name}_{i}", sources, w, bias, level)
        sources = [Source(t, "direct") for t in outs]
    return outs


def build_passes(model: "SRUNet", options: GlslOptions | None = None) -> list[GlslPass]:
    """Walk the fused network in ``SRUNet.body`` order and emit its passes."""
    from .model import reparameterize_model

    options = options or GlslOptions()
    check_exportable(model)
    if not model.deploy:
        model = reparameterize_model(model)
    if options.variant == "compute":
        return _build_compute(model, options)
    if options.variant != "fragment":
        raise ConfigError(f"unknown shader variant {options.variant!r}; expected fragment or compute")
    b = _Builder(options)
    direct = lambda ts: [Source(t, "direct") for t in ts]  # noqa: E731
    up = lambda ts: [Source(t, "up") for t in ts]  # noqa: E731
    c1 = _stage(b, "d1", model.dconv_down1, [Source("HOOKED", "main")], 0)
    c2 = _stage(b, "d2", model.dconv_down2, direct(b.maxpool("d2", c1, 1)), 1)
    c3 = _stage(b, "d3", model.dconv_down3, direct(b.maxpool("d3", c2, 2)), 2)
    y = _stage(b, "d4", model.dconv_down4, direct(b.maxpool("d4", c3, 3)), 3)
    y = _stage(b, "u3", model.dconv_up3, up(y) + direct(c3), 2)
    y = _stage(b, "u2", model.dconv_up2, up(y) + direct(c2), 1)
    y = _stage(b, "u1", model.dconv_up1, up(y) + direct(c1), 0)
    b.output([(t, 1) for t in y], *_weights(model.conv_last))
    return b.passes


# --------------------------------------------------------------------------- compute variant
#
# The fragment variant re-reads every input texture once per 4 output channels. Here a
# compute invocation computes 16 output channels (4 groups) of one pixel from one read
# of each input, and writes them side by side: a "packed" texture holds n <= 4 groups
# interleaved along x (texel (x * n + g, y) is group g of pixel x). That cuts the
# fetches about 4x and the passes about 5x, and no conv needs a split sum (a
# 128-channel input is 8 textures). Max-pool and the bilinear 2x are small fragment
# passes on packed textures (the bilinear is computed by hand from 4 texelFetch:
# interleaving rules out the hardware filter).

#: Pixels per compute work group (8 x 8 threads, one pixel each).
_TILE = 8


@dataclass(frozen=True)
class _Packed:
    tex: str
    n: int  # groups of 4 channels interleaved along x


def _packed_size(t: _Packed, scale: int = 1) -> str:
    """GLSL: the pixel size of the level that packed texture ``t`` holds (times ``scale``)."""
    size = f"ivec2({t.tex}_size) / ivec2({t.n}, 1)"
    return size if scale == 1 else f"{size} * {scale}"


def _texel(t: _Packed, g: int, pos: str) -> str:
    """GLSL fetch of group ``g`` of packed texture ``t`` at pixel ``pos`` (an ivec2 expression)."""
    if t.n == 1:
        return f"texelFetch({t.tex}_raw, {pos}, 0)"
    return f"texelFetch({t.tex}_raw, ivec2({pos}.x * {t.n} + {g}, {pos}.y), 0)"


def _compute_conv_body(inputs: list[_Packed] | None, w: np.ndarray, b: np.ndarray) -> tuple[str, int, int]:
    """One invocation: all input groups at 9 taps into ``w.shape[0] / 4`` output groups (<= 4), ReLU.

    ``inputs`` None: the input image (first conv). Taps outside the level are skipped (zero padding).
    """
    n_out = (w.shape[0] + 3) // 4
    lines = [_MAIN_READ] if inputs is None else []
    size = "(ivec2(HOOKED_size) + 7) / 8 * 8" if inputs is None else _packed_size(inputs[0])
    lines += [
        "void hook() {",
        f"    ivec2 p = ivec2(gl_WorkGroupID.xy) * {_TILE} + ivec2(gl_LocalInvocationID.xy);",
        f"    ivec2 sz = {size};",
        "    if (any(greaterThanEqual(p, sz))) return;",
    ]
    lines += [f"    vec4 a{o} = {_vec4(b[o * 4: o * 4 + 4])};" for o in range(n_out)]
    lines.append("    ivec2 q; vec4 v;")
    reads = [(None, 0)] if inputs is None else [(t, g) for t in inputs for g in range(t.n)]
    fetches = macs = 0
    for ky in range(3):
        for kx in range(3):
            lines.append(f"    q = p + ivec2({kx - 1}, {ky - 1});")
            lines.append("    if (all(greaterThanEqual(q, ivec2(0))) && all(lessThan(q, sz))) {")
            for j, (t, g) in enumerate(reads):
                lines.append(f"        v = {'srunet_in(q)' if t is None else _texel(t, g, 'q')};")
                fetches += 1
                for o in range(n_out):
                    mat = _mat4(w[o * 4: o * 4 + 4, j * 4: j * 4 + 4, ky, kx])
                    if mat is not None:
                        lines.append(f"        a{o} += {mat} * v;")
                        macs += 16
            lines.append("    }")
    for o in range(n_out):
        addr = "p" if n_out == 1 else f"ivec2(p.x * {n_out} + {o}, p.y)"
        lines.append(f"    imageStore(out_image, {addr}, max(a{o}, vec4(0.0)));")
    lines.append("}")
    return "\n".join(lines) + "\n", fetches, macs


def _compute_pool_body(t: _Packed) -> str:
    """Fragment pass: 2x2 max-pool of a packed texture (same packing)."""

    def tap(dx: int, dy: int) -> str:
        return f"texelFetch({t.tex}_raw, ivec2((p.x + {dx}) * {t.n} + g, p.y + {dy}), 0)"

    return (
        "vec4 hook() {\n"
        "    ivec2 P = ivec2(gl_FragCoord.xy);\n"
        f"    int g = P.x % {t.n};\n"
        f"    ivec2 p = ivec2(P.x / {t.n}, P.y) * 2;\n"
        f"    return max(max({tap(0, 0)}, {tap(1, 0)}),\n               max({tap(0, 1)}, {tap(1, 1)}));\n"
        "}\n"
    )


def _compute_up_body(t: _Packed) -> str:
    """Fragment pass: torch's bilinear 2x (align_corners=False) of a packed texture, by hand.

    Output pixel 2i sits 0.75 past source i-1, 2i+1 sits 0.25 past source i;
    sources are clamped to the level (torch clamps the same way).
    """
    n = t.n

    def tap(a: str, b: str) -> str:
        return f"texelFetch({t.tex}_raw, ivec2({a}.x * {n} + g, {b}.y), 0)"

    return (
        "vec4 hook() {\n"
        "    ivec2 P = ivec2(gl_FragCoord.xy);\n"
        f"    int g = P.x % {n};\n"
        f"    ivec2 p = ivec2(P.x / {n}, P.y);\n"
        f"    ivec2 lim = {_packed_size(t)} - 1;\n"
        "    ivec2 i0 = (p >> 1) - 1 + (p & 1);\n"
        "    vec2 f = mix(vec2(0.75), vec2(0.25), vec2(p & 1));\n"
        "    ivec2 a = clamp(i0, ivec2(0), lim);\n"
        "    ivec2 b = clamp(i0 + 1, ivec2(0), lim);\n"
        f"    return mix(mix({tap('a', 'a')}, {tap('b', 'a')}, f.x),\n"
        f"               mix({tap('a', 'b')}, {tap('b', 'b')}, f.x), f.y);\n"
        "}\n"
    )


class _ComputeBuilder(_Builder):
    """Passes of the compute variant (packed textures, 16 channels per invocation)."""

    def conv(self, layer: str, inputs: list[_Packed] | None, weight: np.ndarray, bias: np.ndarray, level: int) -> list[_Packed]:
        binds = ["HOOKED"] if inputs is None else [t.tex for t in inputs]
        if len(binds) > self.options.max_binds:
            raise ConfigError(f"compute variant: layer {layer} needs {len(binds)} bound textures > {self.options.max_binds}; use --variant fragment")
        outs = []
        for oc in range((weight.shape[0] + 15) // 16):
            w, b = weight[oc * 16: oc * 16 + 16], bias[oc * 16: oc * 16 + 16]
            out = _Packed(self.name(layer, oc), (w.shape[0] + 3) // 4)
            body, fetches, macs = _compute_conv_body(inputs, w, b)
            desc = f"srunet {layer} conv3x3 ch {oc * 16}-{oc * 16 + w.shape[0] - 1} (compute)"
            compute = f"{_TILE * out.n} {_TILE} {_TILE} {_TILE}"
            self.add(GlslPass(desc, binds, out.tex, level, body, fetches, macs, packs=out.n, compute=compute))
            outs.append(out)
        return outs

    def pool(self, layer: str, feats: list[_Packed], level: int) -> list[_Packed]:
        outs = []
        for i, t in enumerate(feats):
            out = _Packed(self.name(layer, "pool", i), t.n)
            self.add(GlslPass(f"srunet {layer} maxpool", [t.tex], out.tex, level, _compute_pool_body(t), 4 * t.n, 0, packs=t.n))
            outs.append(out)
        return outs

    def up(self, layer: str, feats: list[_Packed], level: int) -> list[_Packed]:
        outs = []
        for i, t in enumerate(feats):
            out = _Packed(self.name(layer, "up", i), t.n)
            self.add(GlslPass(f"srunet {layer} bilinear 2x", [t.tex], out.tex, level, _compute_up_body(t), 4 * t.n, 0, packs=t.n))
            outs.append(out)
        return outs

    def stage(self, name: str, stage, inputs: list[_Packed] | None, level: int) -> list[_Packed]:
        for i, blk in enumerate(stage):
            inputs = self.conv(f"{name}_{i}", inputs, *_weights(blk.conv1), level)
        return inputs


def _build_compute(model: "SRUNet", options: GlslOptions) -> list[GlslPass]:
    """The compute variant, in ``SRUNet.body`` order."""
    b = _ComputeBuilder(options)
    c1 = b.stage("d1", model.dconv_down1, None, 0)
    c2 = b.stage("d2", model.dconv_down2, b.pool("d2", c1, 1), 1)
    c3 = b.stage("d3", model.dconv_down3, b.pool("d3", c2, 2), 2)
    y = b.stage("d4", model.dconv_down4, b.pool("d4", c3, 3), 3)
    y = b.stage("u3", model.dconv_up3, b.up("u3", y, 2) + c3, 2)
    y = b.stage("u2", model.dconv_up2, b.up("u2", y, 1) + c2, 1)
    y = b.stage("u1", model.dconv_up1, b.up("u1", y, 0) + c1, 0)
    b.output([(t.tex, t.n) for t in y], *_weights(model.conv_last))
    return b.passes


# --------------------------------------------------------------------------- text


def _pass_text(p: GlslPass, options: GlslOptions) -> str:
    when = f"OUTPUT.w HOOKED.w / {_f(options.min_scale)} > OUTPUT.h HOOKED.h / {_f(options.min_scale)} > *"
    head = [f"//!DESC {p.desc}", "//!HOOK MAIN"] + [f"//!BIND {t}" for t in p.binds]
    if p.save is not None:
        head += [
            f"//!SAVE {p.save}",
            f"//!WIDTH {_size_expr(p.level, 'w', p.packs)}",
            f"//!HEIGHT {_size_expr(p.level, 'h')}",
            "//!COMPONENTS 4",
        ]
    else:
        head += ["//!WIDTH HOOKED.w 2 *", "//!HEIGHT HOOKED.h 2 *"]
    if p.compute:
        head.append(f"//!COMPUTE {p.compute}")
    head.append(f"//!WHEN {when}")
    return "\n".join(head) + "\n" + p.body


def model_checksum(model: "SRUNet") -> str:
    """sha256 of the fused weights (for shaders made from an in-memory model)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


def _header(model: "SRUNet", info: "WeightsInfo | None", shader: GlslShader) -> str:
    from . import __version__

    cfg = model.cfg
    strength = f", detail strength {info.strength:g}" if info and info.strength is not None else ""
    src = f"{info.path.name} (sha256 {info.sha256}{strength})" if info else f"in-memory model (weights sha256 {model_checksum(model)})"
    lic = (info.metadata.get("license") if info else None) or "not stated in the weights file"
    w, h = REF_SIZE
    lines = [
        "SR-UNet 2x upscaling + compression-artifact removal as an mpv user shader.",
        f"Generated by mpv-srunet {__version__} (`mpv-srunet export-glsl`); regenerate rather than edit.",
        "Paper: F. Vaccaro et al., \"Fast Video Visual Quality and Resolution Improvement using SR-UNet\", ACM MM 2021.",
        f"Model: SR-UNet n_filters={cfg.n_filters} layer_multiplier={cfg.layer_multiplier} scale=2, fused (deploy) form.",
        _variant_line(shader.options.variant),
        f"Weights: {src}.",
        f"Licence: shader code MIT (mpv-srunet); weights: {lic}.",
        "Hooks MAIN (RGB after mpv's YUV->RGB, before scaling); runs only when mpv upscales by more",
        f"than {_f(shader.options.min_scale)}x on both axes. Use: mpv --glsl-shaders=~~/shaders/srunet.glsl (vo=gpu or gpu-next);",
        "--fbo-format=rgba32f matches torch within 1/255 (default rgba16f: within about 2/255).",
        f"Cost: {len(shader.passes)} passes, <= {shader.max_binds} textures bound per pass, "
        f"{shader.fetches_per_output_pixel():.0f} texture fetches per output pixel,",
        f"{shader.gflop_per_frame():.1f} GFLOP and {shader.texture_mib():.0f} MiB of rgba16f textures per {w}x{h} input frame.",
    ]
    if len(shader.passes) > VO_GPU_PASS_BUDGET:
        lines.append(thrash_warning(shader))
    return "".join(f"// {line}\n" for line in lines)


def thrash_warning(shader: GlslShader) -> str:
    return (
        f"WARNING: {len(shader.passes)} passes exceed vo=gpu's program cache (256): it recompiles every frame there; "
        "use vo=gpu-next or the compute variant."
    )


def _variant_line(variant: str) -> str:
    if variant == "compute":
        return ("Variant: compute (16 channels per invocation; needs compute shaders: GL 4.3, Vulkan or D3D11; "
                "elsewhere use `export-glsl --variant fragment`).")
    return "Variant: fragment (one pass per 4 channels; runs wherever mpv runs user shaders)."


def export_glsl(model: "SRUNet", info: "WeightsInfo | None" = None, options: GlslOptions | None = None) -> GlslShader:
    """Generate the mpv user shader of ``model`` (fused first if needed)."""
    options = options or GlslOptions()
    passes = build_passes(model, options)
    shader = GlslShader(passes=passes, header="", options=options)
    shader.header = _header(model, info, shader)
    shader.text = shader.header + "\n" + "\n".join(_pass_text(p, options) for p in passes)
    return shader


#: File name of the packaged shader (compute variant, default weights) in ``mpv_srunet/shaders/``.
SHIPPED_SHADER = "srunet.glsl"


def shipped_shader_path() -> Path:
    """The packaged shader for the default weights (for install.sh / ``mpv-script`` to copy to ``~~/shaders``)."""
    from .errors import WeightsError

    p = Path(__file__).resolve().parent / "shaders" / SHIPPED_SHADER
    if not p.is_file():
        raise WeightsError(f"{p}: no packaged shader; generate one with `mpv-srunet export-glsl -o {p}`")
    return p


#: input.conf line that toggles the installed shader (``install_shader`` adds it once).
INPUT_CONF_LINE = 'CTRL+u change-list glsl-shaders toggle "~~/shaders/srunet.glsl"  # mpv-srunet: SR-UNet shader on/off'


def install_shader(config_dir: str | os.PathLike[str], source: str | os.PathLike[str] | None = None,
                   *, input_conf: bool = True) -> Path:
    """Copy a shader to ``<mpv config>/shaders/srunet.glsl`` and add the toggle key to input.conf.

    For ``install.sh`` / ``mpv-srunet mpv-script``; idempotent (the input.conf line is added once).
    ``source`` defaults to the packaged shader.
    """
    cfg = Path(config_dir).expanduser()
    src = Path(source) if source is not None else shipped_shader_path()
    dst = write_text_atomic(cfg / "shaders" / SHIPPED_SHADER, src.read_text(encoding="utf-8"))
    if input_conf:
        conf = cfg / "input.conf"
        lines = conf.read_text(encoding="utf-8", errors="surrogateescape").splitlines() if conf.exists() else []
        if not any("~~/shaders/srunet.glsl" in ln and "glsl-shaders" in ln for ln in lines):
            write_text_atomic(conf, "\n".join([*lines, INPUT_CONF_LINE]) + "\n")
    return dst


def parse_passes(text: str) -> list[dict[str, list[str]]]:
    """The ``//!`` directives of each pass of a shader text (for tests and ``--check``)."""
    passes: list[dict[str, list[str]]] = []
    for line in text.splitlines():
        if not line.startswith("//!"):
            continue
        key, _, val = line[3:].partition(" ")
        if key == "DESC" or (key == "HOOK" and (not passes or "HOOK" in passes[-1])):
            passes.append({})
        passes[-1].setdefault(key, []).append(val.strip())
    return passes


def shader_summary(shader: GlslShader, size: Sequence[int] = REF_SIZE) -> str:
    """One line of what the shader costs."""
    w, h = size
    return (
        f"{len(shader.passes)} passes, <= {shader.max_binds} binds/pass, "
        f"{shader.fetches_per_output_pixel():.0f} fetches/output px, "
        f"{shader.gflop_per_frame((w, h)):.1f} GFLOP and {shader.texture_mib((w, h)):.0f} MiB (rgba16f) per {w}x{h} frame"
    )
