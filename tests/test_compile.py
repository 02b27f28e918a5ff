"""torch.compile in the background (mpv_srunet/backends/compile.py): eager first, compiled once
ready, same outputs; a failing compile stays eager. The CPU runs the same code path as torch-cuda."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from mpv_srunet.backends import create_backend
from mpv_srunet.backends import compile as bgc
from mpv_srunet.model import SRUNet, get_cfg

WAIT_S = 1800  # a cold Inductor compile on a loaded 2-core machine; a bound, never an assertion on time


def _tiny_model() -> SRUNet:
    torch.manual_seed(0)
    return SRUNet(get_cfg("lite", n_filters=8), deploy=True).eval()


def _frame(h: int = 32, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (1, 3, h, w)).astype(np.float32)


def _eager(model: SRUNet, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture
def inductor_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    return tmp_path / "inductor"


def _run_swap(model: SRUNet) -> None:
    backend = create_backend("torch-cpu", model, precision="fp32", compile="background")
    try:
        run = backend._run
        x = _frame()
        first = backend.infer(x)
        assert run.last_path == "eager"  # the first frame never waits for the compile
        assert run.wait(WAIT_S), "the background compile did not finish"
        assert run.failed is None, run.failed
        assert run.ready(torch.from_numpy(x))
        later = backend.infer(x)
        assert run.last_path == "compiled"
        ref = _eager(model, x)
        np.testing.assert_allclose(first, ref, atol=1e-5)
        np.testing.assert_allclose(later, ref, atol=1e-4)
        # a new frame size: eager again at once, compiled once its own compile is done
        y = _frame(40, 24, seed=1)
        backend.infer(y)
        assert run.last_path == "eager"
        assert run.wait(WAIT_S) and run.failed is None
        np.testing.assert_allclose(backend.infer(y), _eager(model, y), atol=1e-4)
        assert run.last_path == "compiled"
        # weights swapped in place (the strength control) reach the compiled graph: not frozen into it
        torch.manual_seed(1)
        other = SRUNet(model.cfg, deploy=True).eval()
        assert backend.load_weights(other)
        np.testing.assert_allclose(backend.infer(x), _eager(other, x), atol=1e-4)
        assert run.last_path == "compiled"
    finally:
        backend.close()


def test_background_compile_swaps_in_dynamo(monkeypatch, inductor_cache):
    """The scheduling with a real but cheap torch.compile (Dynamo tracing, eager kernels)."""
    monkeypatch.setattr(bgc, "compile_module", lambda m, mode: torch.compile(m, dynamic=False, backend="eager"))
    _run_swap(_tiny_model())


@pytest.mark.slow
def test_background_compile_swaps_in_inductor(inductor_cache):
    """The real thing: Inductor compiles the network on a thread; its caches go to TORCHINDUCTOR_CACHE_DIR."""
    if bgc.compile_unavailable_reason("cpu"):
        pytest.skip(bgc.compile_unavailable_reason("cpu"))
    torch._dynamo.reset()
    _run_swap(_tiny_model())
    assert any(inductor_cache.rglob("*")), "Inductor wrote nothing to its cache dir"


def test_compile_failure_stays_eager(monkeypatch, caplog, inductor_cache):
    def broken(module, mode):
        raise RuntimeError("injected: out of memory while compiling")

    monkeypatch.setattr(bgc, "compile_module", broken)
    model = _tiny_model()
    backend = create_backend("torch-cpu", model, precision="fp32", compile="background")
    try:
        run = backend._run
        with caplog.at_level(logging.WARNING, logger="mpv_srunet.backends.compile"):
            x = _frame()
            out = backend.infer(x)
            assert run.wait(60)
            for h, w in ((32, 48), (24, 24), (16, 40)):  # more sizes: no new compile, no new warning
                z = _frame(h, w, seed=h)
                np.testing.assert_allclose(backend.infer(z), _eager(model, z), atol=1e-5)
                assert run.last_path == "eager"
            assert run.wait(60)
        assert "injected" in (run.failed or "")
        assert not run.busy and run.settled(torch.from_numpy(x))
        warnings = [r for r in caplog.records if "torch.compile" in r.getMessage()]
        assert len(warnings) == 1 and "staying on the eager path" in warnings[0].getMessage()
        np.testing.assert_allclose(out, _eager(model, x), atol=1e-5)
    finally:
        backend.close()


def test_inductor_cache_dir_is_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert bgc.inductor_cache_dir() == tmp_path / "mpv-srunet" / "inductor"
    with pytest.raises(ValueError, match="reduce-overhead"):
        bgc.BackgroundCompiler(_tiny_model(), lambda m, x: m(x), mode="reduce-overhead")


@pytest.mark.gpu
def test_torch_cuda_compiled_matches_eager():
    """torch-cuda with compile (the default): eager at first, then compiled, fp16 outputs agree."""
    model = _tiny_model()
    eager = create_backend("torch-cuda", model, compile=False)
    compiled = create_backend("torch-cuda", model)
    try:
        if compiled._run is None:
            pytest.skip(bgc.compile_unavailable_reason("cuda") or "compile off")
        x = _frame(64, 96)
        ref = eager.infer(x)
        np.testing.assert_allclose(compiled.infer(x), ref, atol=2e-2)
        assert compiled._run.wait(WAIT_S) and compiled._run.failed is None, compiled._run.failed
        np.testing.assert_allclose(compiled.infer(x), ref, atol=2e-2)
        assert compiled._run.last_path == "compiled"
    finally:
        eager.close()
        compiled.close()
