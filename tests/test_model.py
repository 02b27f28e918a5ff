"""The network: parameter counts, strict loading of the authors' checkpoints, fusion."""

from __future__ import annotations

import pytest
import torch

from mpv_srunet.errors import ConfigError
from mpv_srunet.model import (
    MODEL_CFGS, SRUNet, SRUNetCfg, count_parameters, create_model, get_cfg, macs_per_pixel, reparameterize_model,
)


def test_paper_parameter_counts():
    m = create_model("default")
    assert count_parameters(m) == 740_975  # paper, Table 1
    assert count_parameters(reparameterize_model(m)) == 665_932


@pytest.mark.parametrize("name", list(MODEL_CFGS))
@pytest.mark.parametrize("size", [(24, 40), (8, 8), (56, 72)])
def test_fusion_is_exact(name, size):
    torch.manual_seed(0)
    m = create_model(name, n_filters=16 if name != "authors-1.5x" else 48).eval()
    for p in m.parameters():  # non-trivial adapters and biases
        p.data.normal_(0, 0.05)
    x = torch.rand(2, 3, *size) * 2 - 1
    fused = reparameterize_model(m)
    assert fused.deploy and not hasattr(fused, "to_rgb")
    assert all(not hasattr(b, "conv_adapter") for b in fused.blocks())
    with torch.no_grad():
        assert torch.allclose(m(x), fused(x), atol=1e-5)
    # idempotent, and the original is untouched
    assert count_parameters(fused.reparameterize()) == count_parameters(fused)
    assert not m.deploy and hasattr(m, "to_rgb")


def test_deploy_state_dict_loads_into_deploy_model():
    m = reparameterize_model(create_model("lite"))
    d = SRUNet(get_cfg("lite"), deploy=True)
    d.load_state_dict(m.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m(x), d(x))


def test_output_shape_range_and_residual():
    m = create_model("default", n_filters=16).eval()
    x = torch.rand(1, 3, 16, 32) * 2 - 1
    with torch.no_grad():
        torch.nn.init.zeros_(m.conv_last.weight)
        torch.nn.init.zeros_(m.conv_last.bias)
        y = m(x)
    assert y.shape == (1, 3, 32, 64)
    # with a zero head the network is exactly the clamped bicubic upsample
    bic = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1)
    assert torch.allclose(y, bic)


def test_authors_checkpoints_load_strictly(shared_anchors):
    for fname, preset, count in [("srunet_2x_crf23.pth", "default", 740_975),
                                 ("srunet_1.5x_crf23.pth", "authors-1.5x", 290_199)]:
        sd = torch.load(shared_anchors / fname, map_location="cpu", weights_only=True)
        m = create_model(preset)
        m.load_state_dict(sd, strict=True)
        assert count_parameters(m) == count
    m = create_model("authors-1.5x").eval()
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 96, 96)


def test_cost_model_matches_brief():
    gmac = macs_per_pixel(get_cfg("default")) * 960 * 544 / 1e9
    assert 69 < gmac < 71  # ~70 GMAC per 960x544 frame (fused)
    assert macs_per_pixel(get_cfg("lite")) < macs_per_pixel(get_cfg("default")) / 3


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ConfigError, match="default, lite"):
        get_cfg("huge")
    with pytest.raises(ConfigError, match="unknown SR-UNet config keys"):
        SRUNetCfg.from_dict({"n_filters": 64, "bogus": 1})
