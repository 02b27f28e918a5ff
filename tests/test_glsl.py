"""The GLSL exporter without a GPU: pass structure, bind limits, refusals, CLI.

Rendering in the real mpv is checked in tests/test_glsl_mpv.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mpv_srunet.errors import ConfigError
from mpv_srunet.glsl import (
    MAX_BINDS,
    GlslOptions,
    bicubic_weights,
    export_glsl,
    parse_passes,
)
from mpv_srunet.model import SRUNet, SRUNetCfg, reparameterize_model
from mpv_srunet.weights import save_weights

SHIPPED = Path(__file__).resolve().parents[1] / "mpv_srunet" / "shaders" / "srunet.glsl"


def _fused(n_filters: int, seed: int = 0, **cfg) -> SRUNet:
    torch.manual_seed(seed)
    return reparameterize_model(SRUNet(SRUNetCfg(n_filters=n_filters, **cfg), deploy=False)).eval()


@pytest.fixture(scope="module")
def default_model() -> SRUNet:
    """A random full-size (F=64) model: the real pass structure."""
    return _fused(64)


@pytest.fixture(scope="module")
def default_shader(default_model):
    return export_glsl(default_model, options=GlslOptions(variant="fragment"))


def _check_structure(text: str, max_binds: int) -> list[dict[str, list[str]]]:
    """Every pass: <= max_binds binds, each bound texture saved by an earlier pass, a WHEN."""
    passes = parse_passes(text)
    saved: set[str] = set()
    for i, p in enumerate(passes):
        assert p["HOOK"] == ["MAIN"], p["DESC"]
        binds = p.get("BIND", [])
        assert 1 <= len(binds) <= max_binds, (p["DESC"], len(binds))
        missing = [b for b in binds if b != "HOOKED" and b not in saved]
        assert not missing, (p["DESC"], missing)
        assert len(p["WHEN"]) == 1 and "OUTPUT.w HOOKED.w /" in p["WHEN"][0]
        if i < len(passes) - 1:
            assert len(p["SAVE"]) == 1 and p["COMPONENTS"] == ["4"]
            saved.add(p["SAVE"][0])
        else:
            assert "SAVE" not in p and "COMPUTE" not in p
    return passes


def test_default_model_fragment_passes_fit_the_bind_limit(default_shader):
    passes = _check_structure(default_shader.text, MAX_BINDS)
    assert len(passes) == len(default_shader.passes)
    # F=64: the 128-channel decoder inputs (32 textures) need 3 chained passes per output group.
    assert any("part 3/3" in p["DESC"][0] for p in passes)
    assert max(len(p.get("BIND", [])) for p in passes) == MAX_BINDS
    last = passes[-1]
    assert "SAVE" not in last and last["WIDTH"] == ["HOOKED.w 2 *"] and last["HEIGHT"] == ["HOOKED.h 2 *"]
    assert last["BIND"][0] == "HOOKED"


def test_cost_numbers_match_the_model(default_shader):
    from mpv_srunet.model import macs_per_pixel

    # Conv MACs of the shader == the model's (plus the bicubic and the 4x-redundant conv_last).
    conv_gflop = 2 * macs_per_pixel(SRUNetCfg(n_filters=64)) * 960 * 544 / 1e9
    assert conv_gflop <= default_shader.gflop_per_frame((960, 540)) <= conv_gflop * 1.02
    assert re.search(r"// Cost: \d+ passes", default_shader.header)


def test_default_model_compute_variant(default_model, default_shader):
    shader = export_glsl(default_model)  # compute is the default variant
    passes = _check_structure(shader.text, MAX_BINDS)
    convs = [p for p in passes if "conv3x3" in p["DESC"][0]]
    # 16 channels per invocation: 4 groups interleaved along x, tiles of 8x8 pixels.
    assert convs and all(p["COMPUTE"] == ["32 8 8 8"] and p["WIDTH"][0].endswith(" 4 *") for p in convs[2:])
    assert not any("part" in p["DESC"][0] for p in passes)  # no split sums needed
    assert shader.gflop_per_frame() == pytest.approx(default_shader.gflop_per_frame(), rel=1e-6)
    assert shader.fetches_per_output_pixel() < default_shader.fetches_per_output_pixel() / 3
    assert "Variant: compute" in shader.header
    # 585 fragment passes overflow vo_gpu's 256-program cache (it would recompile every frame): warned.
    assert "WARNING" in default_shader.header and "WARNING" not in shader.header


def test_small_bind_limit_splits_every_wide_conv():
    shader = export_glsl(_fused(8), options=GlslOptions(max_binds=3, variant="fragment"))
    passes = _check_structure(shader.text, 3)
    assert any("(part 2/2)" in p["DESC"][0] for p in passes)


@pytest.mark.parametrize(
    "cfg, match",
    [
        (dict(out_scale=0.75), "out_scale"),
        (dict(scale=3), "2x models only"),
        (dict(n_filters=12), "multiple of 8"),
    ],
)
def test_refuses_models_it_cannot_express(cfg, match):
    model = _fused(**{"n_filters": 8, **cfg})
    with pytest.raises(ConfigError, match=match):
        export_glsl(model)


def test_refuses_non_finite_weights():
    model = _fused(8)
    with torch.no_grad():
        model.dconv_up2[1].conv1.weight[0, 0, 1, 1] = float("nan")
    with pytest.raises(ConfigError, match="NaN or inf"):
        export_glsl(model)


def test_bicubic_weights_are_torchs():
    """The residual's tap weights equal F.interpolate(bicubic, align_corners=False) on impulses."""
    x = torch.zeros(1, 1, 1, 9, dtype=torch.float64)
    x[..., 4] = 1
    y = F.interpolate(x, scale_factor=(1, 2), mode="bicubic", align_corners=False)[0, 0, 0]
    # Output 2i (even) reads taps i-2..i+1 with W_EVEN; output 2i+1 reads i-1..i+2 with W_ODD.
    even = [float(y[2 * (4 - d)]) for d in (-2, -1, 0, 1)]
    odd = [float(y[2 * (4 - d) + 1]) for d in (-1, 0, 1, 2)]
    np.testing.assert_allclose(bicubic_weights(0.75), even, atol=1e-12)
    np.testing.assert_allclose(bicubic_weights(0.25), odd, atol=1e-12)


def test_cli_writes_shader_with_checksum(tmp_path):
    from mpv_srunet.cli import main
    from mpv_srunet.weights import file_sha256

    w = save_weights(tmp_path / "tiny.safetensors", _fused(16), {"license": "CC0-1.0"})
    out = tmp_path / "shaders" / "srunet.glsl"
    assert main(["export-glsl", "--weights", str(w), "-o", str(out)]) == 0
    text = out.read_text()
    assert f"sha256 {file_sha256(w)}" in text and "weights: CC0-1.0" in text
    _check_structure(text, MAX_BINDS)


def test_cli_refuses_with_one_line_and_writes_nothing(tmp_path, capsys):
    from mpv_srunet.cli import main

    w = save_weights(tmp_path / "x15.safetensors", _fused(8, out_scale=0.75), {})
    out = tmp_path / "srunet.glsl"
    assert main(["export-glsl", "--weights", str(w), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "out_scale" in err
    assert not out.exists() and not list(tmp_path.glob(".srunet.glsl.*"))
    assert main(["export-glsl", "--weights", str(w), "-o", str(out), "--max-binds", "16"]) == 2
    assert "--max-binds 16" in capsys.readouterr().err


def test_unknown_variant_is_refused():
    with pytest.raises(ConfigError, match="unknown shader variant"):
        export_glsl(_fused(8), options=GlslOptions(variant="vulkan"))


def test_shipped_shader_is_current():
    """The packaged shader was generated from the shipped default weights (same checksum)."""
    from mpv_srunet.weights import default_weights_path, file_sha256

    weights = default_weights_path()
    if not SHIPPED.exists():
        pytest.skip(f"{SHIPPED} not generated (default weights were not available when it was built)")
    if not weights.exists():
        pytest.skip(f"{weights} not present")
    header = SHIPPED.read_text()[:3000]
    assert f"sha256 {file_sha256(weights)}" in header, "regenerate: mpv-srunet export-glsl -o mpv_srunet/shaders/srunet.glsl"
    _check_structure(SHIPPED.read_text(), MAX_BINDS)



def test_install_shader_is_idempotent(tmp_path):
    from mpv_srunet.glsl import INPUT_CONF_LINE, install_shader

    src = tmp_path / "gen.glsl"
    src.write_text(export_glsl(_fused(8)).text)
    cfg = tmp_path / "mpv"
    (cfg).mkdir()
    (cfg / "input.conf").write_text("q quit\n")
    for _ in range(2):
        dst = install_shader(cfg, src)
    assert dst == cfg / "shaders" / "srunet.glsl" and dst.read_text() == src.read_text()
    assert (cfg / "input.conf").read_text().splitlines() == ["q quit", INPUT_CONF_LINE]


def test_mpv_script_install_with_shader(tmp_path):
    """`mpv-srunet mpv-script --install --with-shader` (what install.sh runs) installs both, idempotently."""
    from mpv_srunet.cli import main

    for _ in range(2):
        assert main(["mpv-script", "--install", "--with-shader", "--config-dir", str(tmp_path)]) == 0
    assert (tmp_path / "scripts" / "srunet" / "main.lua").exists()
    assert (tmp_path / "shaders" / "srunet.glsl").read_text().startswith("//")
    lines = (tmp_path / "input.conf").read_text().splitlines()
    assert sum("glsl-shaders toggle" in ln for ln in lines) == 1
