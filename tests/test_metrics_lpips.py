"""LPIPS (mpv_srunet.metrics.lpips) against published reference scores and its properties.

Reference values: the torchmetrics ``LearnedPerceptualImagePatchSimilarity`` docstring
(doctested upstream against the official ``lpips`` package, VGG backbone, v0.1):

    _ = torch.manual_seed(123)
    lpips = LearnedPerceptualImagePatchSimilarity(net_type='vgg')
    img1 = (torch.rand(10, 3, 100, 100) * 2) - 1
    img2 = (torch.rand(10, 3, 100, 100) * 2) - 1
    lpips(img1, img2)  ->  tensor(0.3493)

and, in another release, the same with ``torch.rand`` left in [0, 1] -> ``tensor(0.3566)``.
Building that metric draws from torch's global RNG (the default init of every
torchvision VGG16 layer, then of the five 1x1 linear layers) before the images are
drawn, so to get the same images we consume exactly the same number of uniform
samples first. No published alex score on inputs we can rebuild offline was found:
alex is checked through properties and a consistency check with vgg.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mpv_srunet.metrics import MetricUnavailable
from mpv_srunet.metrics.lpips import INSTALL_HINT, LPIPS, find_weights, lpips_distance

# torchvision VGG16: 13 convs (in, out), then the classifier's Linear layers.
_VGG_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
              (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
_VGG_FC = [(512 * 7 * 7, 4096), (4096, 4096), (4096, 1000)]


def _consume_uniform(n: int, chunk: int = 1 << 22) -> None:
    # CPU uniform_ draws one value per element, serially: chunking consumes the same stream.
    while n > 0:
        k = min(n, chunk)
        torch.empty(k).uniform_()
        n -= k


def _replay_torchmetrics_vgg_init() -> None:
    """Consume the RNG exactly as constructing LearnedPerceptualImagePatchSimilarity('vgg') does."""
    for cin, cout in _VGG_CONVS:
        _consume_uniform(cout * cin * 9)  # weight (kaiming_uniform_)
        _consume_uniform(cout)  # bias
    for cin, cout in _VGG_FC:
        _consume_uniform(cout * cin)
        _consume_uniform(cout)
    for c in (64, 128, 256, 512, 512):  # lpips NetLinLayer: 1x1 conv, no bias
        _consume_uniform(c)


@pytest.fixture(scope="module")
def lpips_vgg() -> LPIPS:
    return LPIPS("vgg")


@pytest.fixture(scope="module")
def lpips_alex() -> LPIPS:
    return LPIPS("alex")


@pytest.mark.parametrize("to_pm1, expected", [(True, 0.3493), (False, 0.3566)])
def test_vgg_matches_torchmetrics_documented_scores(lpips_vgg: LPIPS, to_pm1: bool, expected: float) -> None:
    torch.manual_seed(123)
    _replay_torchmetrics_vgg_init()
    a, b = torch.rand(10, 3, 100, 100), torch.rand(10, 3, 100, 100)
    if to_pm1:
        a, b = a * 2 - 1, b * 2 - 1
    with torch.no_grad():
        got = lpips_vgg(a, b)
    assert got.shape == (10,)
    assert round(float(got.mean()), 4) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_identical_inputs_score_zero(net: str, photo_rgb_540p: np.ndarray, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(f"lpips_{net}")
    crop = photo_rgb_540p[:128, :192]
    assert lpips_distance(crop, crop, model)[0] == pytest.approx(0.0, abs=1e-7)


def test_alex_grows_with_distortion_and_agrees_with_vgg_ordering(
    lpips_alex: LPIPS, lpips_vgg: LPIPS, photo_rgb_540p: np.ndarray
) -> None:
    rng = np.random.default_rng(0)
    ref = photo_rgb_540p[:144, :256]
    noisy = [np.clip(ref + rng.normal(0, s, ref.shape), 0, 255).astype(np.uint8) for s in (4, 16, 48)]
    d_alex = lpips_distance(np.stack([ref] * 3), np.stack(noisy), lpips_alex)
    d_vgg = lpips_distance(np.stack([ref] * 3), np.stack(noisy), lpips_vgg)
    assert np.all(np.diff(d_alex) > 0) and np.all(np.diff(d_vgg) > 0)
    # LPIPS-alex on natural images stays well inside (0, 1) for such distortions.
    assert 0.0 < d_alex[0] < d_alex[-1] < 1.0


def test_v01_linear_layers_are_nonnegative(lpips_alex: LPIPS, lpips_vgg: LPIPS) -> None:
    # v0.1 calibration clamps the linear weights at 0 (a distance must not go negative).
    for m in (lpips_alex, lpips_vgg):
        for lin in m.lins:
            assert float(lin.weight.min()) >= 0.0


def test_gradients_reach_inputs_not_weights(lpips_alex: LPIPS) -> None:
    lpips_alex.train()  # a metric never leaves eval mode
    assert not lpips_alex.training
    a = torch.rand(2, 3, 64, 64, requires_grad=True)
    lpips_alex(a * 2 - 1, torch.zeros(2, 3, 64, 64)).sum().backward()
    assert a.grad is not None and float(a.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in lpips_alex.parameters())


def test_shape_mismatch_is_rejected(lpips_alex: LPIPS) -> None:
    with pytest.raises(ValueError, match="equal shape"):
        lpips_alex(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 32))


def test_missing_weights_names_the_install_line(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mpv_srunet.metrics.lpips as mod

    monkeypatch.delenv(mod.ENV_DIR, raising=False)
    monkeypatch.setattr(mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MetricUnavailable) as e:
        find_weights("alex", tmp_path)
    msg = str(e.value)
    assert INSTALL_HINT in msg and "\n" not in msg and msg.startswith("srunet.metrics:")


def test_unknown_net_is_rejected() -> None:
    with pytest.raises(MetricUnavailable, match="unknown LPIPS net"):
        find_weights("squeeze")  # type: ignore[arg-type]


def test_weights_loader_refuses_code_in_pickles(tmp_path) -> None:
    import os

    (tmp_path / "alexnet.ckpt").write_bytes(pickle.dumps({"x": os.getcwd}))
    with pytest.raises(MetricUnavailable, match="refusing to load"):
        LPIPS("alex", weights_dir=tmp_path)
