"""`mpv-srunet eval`: clips from real photos, the protocol end to end, and bad input.

Sizes are tiny (256x144 ground truth -> 128x72 through libx265) so the whole file
runs in well under a minute on 2 cores; the model is the F=16 `tiny_weights`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mpv_srunet.cli import main
from mpv_srunet.evaluation.clips import MAX_SPEED, MOTIONS, camera_frames, make_clips
from mpv_srunet.evaluation.media import load_reference

SIZE = (256, 144)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, real_photo: Path) -> list[Path]:
    """Two real 256x144 clips (a pan and a zoom), 4 frames each, FFV1 lossless."""
    return make_clips(tmp_path_factory.mktemp("clips"), [real_photo], count=2, frames=4, fps=24, size=SIZE)


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_motions_stay_within_4px_per_frame_at_1080p() -> None:
    for m in MOTIONS:
        assert 0.5 < m.max_speed((1920, 1080)) <= MAX_SPEED, m.name


def test_clips_are_lossless_and_move(clips: list[Path], real_photo: Path) -> None:
    from PIL import Image

    photo = np.asarray(Image.open(real_photo).convert("RGB"))
    expected = list(camera_frames(photo, MOTIONS[0], 4, SIZE))
    ref = load_reference(str(clips[0]), None)
    assert ref.is_video and ref.fps == pytest.approx(24.0) and len(ref.frames) == 4
    for got, want in zip(ref.frames, expected):
        assert np.array_equal(got, want)  # FFV1/RGB: bit-exact
    # a pan of 2.5 px/frame: consecutive frames differ, but by far less than unrelated pictures
    d01 = np.abs(ref.frames[1].astype(int) - ref.frames[0]).mean()
    assert 0.5 < d01 < np.abs(ref.frames[0].astype(int) - ref.frames[0][::-1]).mean()


def test_protocol_end_to_end_writes_table_plots_and_crops(
    clips: list[Path], tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "res"
    rc, stdout, _ = _run(["eval", "run", *map(str, clips), "--out", str(out), "--size", "256x144", "--frames", "4",
                          "--crf", "23,33", "--weights", str(tiny_weights), "--no-default", "--preset", "ultrafast",
                          "--jobs", "2", "--no-progress"], capsys)
    assert rc == 0
    for name in ("results.md", "results.csv", "results.json", "rd_vmaf.png", "rd_lpips.png"):
        assert (out / name).stat().st_size > 0, name
    crops = sorted(out.glob("crops_*.png"))
    assert len(crops) == 4  # 2 clips x 2 CRFs
    doc = json.loads((out / "results.json").read_text())
    assert doc["unavailable"] == {}
    rows = doc["rows"]
    assert {(r["video"], r["crf"], r["candidate"]) for r in rows} >= {("all", 23, "bicubic"), ("all", 33, "tiny")}
    for r in rows:
        assert all(r["pooled"][k] is not None for k in ("psnr_y", "ssim_rgb", "lpips", "vmaf", "flicker", "grid"))
        assert r["frames"] >= 4
    by = {(r["video"], r["crf"], r["candidate"]): r for r in rows}
    assert by[("all", 23, "bicubic")]["pooled"]["grid"] == 0.0 < by[("all", 23, "tiny")]["pooled"]["grid"] < 1
    # a lower CRF spends more bits and gives bicubic a better picture
    assert by[("all", 23, "bicubic")]["bitrate_kbps"] > by[("all", 33, "bicubic")]["bitrate_kbps"]
    assert by[("all", 23, "bicubic")]["pooled"]["vmaf"] > by[("all", 33, "bicubic")]["pooled"]["vmaf"]
    assert doc["bd_rate"]["anchor"] == "bicubic" and "tiny" in doc["bd_rate"]["all"]
    md = (out / "results.md").read_text()
    assert "| all | 23 | bicubic |" in md and "Gaussian window 11x11 sigma 1.5" in md and "BD-rate" in md
    assert "Grid ↓" in md and "grid" in (out / "results.csv").read_text().splitlines()[0].split(",")
    assert "| all | 23 | bicubic |" in stdout
    from PIL import Image

    with Image.open(crops[0]) as im:  # bicubic | tiny | ground truth, 144-px squares
        assert im.width == 3 * 144 + 2 * 4 and im.height > 144


def test_authors_checkpoint_beats_bicubic(clips: list[Path], shared_anchors: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "res"
    rc, _, _ = _run(["eval", "run", str(clips[0]), "--out", str(out), "--size", "256x144", "--frames", "4",
                     "--authors", str(shared_anchors / "srunet_2x_crf23.pth"), "--no-default", "--no-vmaf",
                     "--preset", "ultrafast", "--no-progress"], capsys)
    assert rc == 0
    rows = {r["candidate"]: r["pooled"] for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["authors-2x"]["lpips"] < rows["bicubic"]["lpips"]  # the paper's headline, at CRF 23


def test_missing_libvmaf_marks_the_column_and_computes_the_rest(
    clips: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    debian = Path("/usr/bin/ffmpeg")
    if not debian.exists():
        pytest.skip("no /usr/bin/ffmpeg (Debian's build, without libvmaf)")
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(debian))
    out = tmp_path / "res"
    rc, _, _ = _run(["eval", "run", str(clips[0]), "--out", str(out), "--size", "256x144", "--frames", "3",
                     "--no-default", "--preset", "ultrafast", "--no-progress"], capsys)
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    assert "without libvmaf" in doc["unavailable"]["vmaf"]
    (row,) = doc["rows"]
    assert row["pooled"]["vmaf"] is None and row["pooled"]["lpips"] > 0 and row["pooled"]["psnr_y"] > 20
    md = (out / "results.md").read_text()
    assert "n/a" in md and "without libvmaf" in md


def test_reference_smaller_than_target_is_refused(clips: list[Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "res"
    rc, _, err = _run(["eval", "run", str(clips[0]), "--out", str(out), "--size", "512x288", "--no-default",
                      "--no-progress"], capsys)
    assert rc == 2
    assert err.count("\n") == 1 and "smaller than the 512x288 target" in err
    assert not out.exists()  # nothing half-written


def test_unknown_weights_file_is_refused(clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, err = _run(["eval", "run", str(clips[0]), "--out", str(tmp_path / "r"), "--size", "256x144",
                       "--no-default", "--weights", str(tmp_path / "nope.safetensors")], capsys)
    assert rc == 2 and "nope.safetensors" in err and err.count("\n") == 1


def test_bad_crf_list_is_refused(clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, err = _run(["eval", "run", str(clips[0]), "--out", str(tmp_path / "r"), "--crf", "23,abc"], capsys)
    assert rc == 2 and "--crf" in err


def test_score_identical_is_perfect_and_mismatch_is_refused(clips: list[Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = _run(["eval", "score", str(clips[0]), str(clips[0]), "--json"], capsys)
    assert rc == 0
    pooled = json.loads(out)["pooled"]
    assert pooled["psnr_y"] == "inf" and pooled["ssim_rgb"] == pytest.approx(1.0)
    assert pooled["lpips"] == pytest.approx(0.0, abs=1e-6) and pooled["flicker"] == 0.0
    assert pooled["vmaf"] > 97
    from mpv_srunet.evaluation.clips import write_lossless

    ref = load_reference(str(clips[0]), None)
    three = tmp_path / "three.mkv"
    write_lossless(ref.frames[:3], three, 24)
    rc, _, err = _run(["eval", "score", str(clips[0]), str(three)], capsys)
    assert rc == 2 and "3 frames" in err and "4" in err and err.count("\n") == 1


def test_make_clips_command(real_photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / real_photo.name).symlink_to(real_photo)
    rc, out, _ = _run(["eval", "make-clips", str(tmp_path / "c"), "--photos", str(photos), "--count", "1",
                       "--frames", "3", "--size", "256x144"], capsys)
    assert rc == 0
    (clip,) = [Path(line) for line in out.split()]
    ref = load_reference(str(clip), None)
    assert len(ref.frames) == 3 and ref.frames[0].shape == (144, 256, 3)
    rc, _, err = _run(["eval", "make-clips", str(tmp_path / "c2"), "--photos", str(tmp_path / "none")], capsys)
    assert rc == 2 and "no such file or folder" in err and err.count("\n") == 1


def test_make_clips_takes_named_photos_in_the_order_given(real_photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Named files make a clip set that does not depend on what else a folder holds."""
    from PIL import Image

    with Image.open(real_photo) as im:
        small = im.convert("RGB").resize((300, 200))
        small.save(tmp_path / "b_small.png")
        im.convert("RGB").resize((320, 180)).save(tmp_path / "a_other.png")
    rc, out, _ = _run(["eval", "make-clips", str(tmp_path / "c"), "--photos", str(real_photo), str(tmp_path / "a_other.png"),
                       "--count", "2", "--frames", "2", "--size", "256x144"], capsys)
    assert rc == 0
    names = [Path(line).name for line in out.split()]
    assert names[0].startswith("00_" + real_photo.stem[:40]) and names[1].startswith("01_a_other")
    # a named photo smaller than the clips is refused, not skipped
    rc, _, err = _run(["eval", "make-clips", str(tmp_path / "c3"), "--photos", str(tmp_path / "b_small.png"),
                       "--size", "320x240"], capsys)
    assert rc == 2 and "smaller than the clip size 320x240" in err and err.count("\n") == 1
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    rc, _, err = _run(["eval", "make-clips", str(tmp_path / "c4"), "--photos", str(tmp_path / "broken.jpg")], capsys)
    assert rc != 0 and "not a readable image" in err and err.count("\n") == 1


def test_pooled_psnr_of_identical_frames_is_infinite() -> None:
    from mpv_srunet.evaluation.protocol import _mean

    assert _mean([math.inf, math.inf]) == math.inf
    assert _mean([30.0, 32.0]) == pytest.approx(31.0)


def test_720p_experiment_measures_against_the_natively_encoded_reference(
    clips: list[Path], tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # 192x108 reference -> 128x72 stream -> (2x: 256x144 then bicubic down) -> 192x108, vs 192x108 at the same CRF
    out = tmp_path / "res"
    rc, _, _ = _run(["eval", "run", str(clips[0]), "--out", str(out), "--experiment", "720p", "--size", "192x108",
                     "--frames", "3", "--crf", "23,30,37", "--weights", str(tiny_weights), "--no-default",
                     "--preset", "ultrafast", "--no-progress"], capsys)
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    by = {(r["crf"], r["candidate"]): r for r in doc["rows"]}
    for crf in (23, 30, 37):
        assert by[(crf, "native-108p")]["bitrate_kbps"] > by[(crf, "bicubic")]["bitrate_kbps"]
        assert by[(crf, "native-108p")]["pooled"]["vmaf"] > by[(crf, "bicubic")]["pooled"]["vmaf"]
    assert doc["bd_rate"]["anchor"] == "native-108p"
    assert set(doc["bd_rate"][by[(23, "bicubic")]["video"]]) == {"bicubic", "tiny"}
    assert "BD-rate against native-108p" in (out / "results.md").read_text()
    rc, _, err = _run(["eval", "run", str(clips[0]), "--out", str(out), "--experiment", "720p", "--size", "256x144",
                       "--no-default"], capsys)
    assert rc == 2 and "divisible by 3" in err


def test_image_folder_reference_and_per_video_weights(
    clips: list[Path], photo_rgb_540p: np.ndarray, tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    from PIL import Image

    from mpv_srunet.weights import SIDECAR_SUFFIX

    folder = tmp_path / "stills"
    folder.mkdir()
    for i in range(2):  # larger than the target: Lanczos-downscaled to 256x144
        Image.fromarray(photo_rgb_540p[:, 100 * i: 100 * i + 600][:340]).save(folder / f"{i}.png")
    video = tmp_path / "clip.mkv"
    shutil.copy(clips[1], video)
    shutil.copy(tiny_weights, video.with_name(video.name + SIDECAR_SUFFIX))
    out = tmp_path / "res"
    rc, _, _ = _run(["eval", "run", str(folder), str(video), "--out", str(out), "--size", "256x144", "--frames", "3",
                     "--no-default", "--preset", "ultrafast", "--no-progress"], capsys)
    assert rc == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    stills = [r for r in rows if r["video"] == "stills"]
    assert {r["candidate"] for r in stills} == {"bicubic"} and stills[0]["frames"] == 2
    assert stills[0]["pooled"]["flicker"] is None and stills[0]["pooled"]["lpips"] > 0  # no temporal metric for stills
    assert {r["candidate"] for r in rows if r["video"] == "clip"} == {"bicubic", "per-video"}
    assert "per-video" in (out / "results.md").read_text()


@pytest.mark.mpv
def test_mpv_scalers_and_shaders_are_candidates_and_a_black_render_fails_only_its_own(
    clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """mpv renders the same H.265 stream (real mpv, Xvfb, llvmpipe); a shader that paints every frame
    black passes mpv (exit 0) but not the frame check: it fails alone, with one line, after retries."""
    import shutil

    for tool in ("mpv", "Xvfb"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found: install Debian mpv and xvfb (./install.sh --dev)")
    black = tmp_path / "black.glsl"
    black.write_text("//!HOOK MAIN\n//!BIND HOOKED\n//!DESC black\nvec4 hook() { return vec4(0.0, 0.0, 0.0, 1.0); }\n")
    out = tmp_path / "res"
    rc, _, _ = _run(["eval", "run", str(clips[0]), "--out", str(out), "--size", "256x144", "--frames", "3",
                     "--no-default", "--no-vmaf", "--preset", "ultrafast", "--no-progress", "--mpv", "default,lanczos",
                     "--mpv-shader", f"black={black}"], capsys)
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    rows = {r["candidate"]: r["pooled"] for r in doc["rows"]}
    assert set(rows) == {"bicubic", "mpv-default", "mpv-lanczos"}
    for name in ("mpv-default", "mpv-lanczos"):  # a real 2x rendering: close to bicubic, not equal to it
        assert abs(rows[name]["psnr_y"] - rows["bicubic"]["psnr_y"]) < 3.0, name
        assert 0.0 < rows[name]["grid"] < 0.5, name
    assert rows["mpv-lanczos"]["psnr_y"] > rows["mpv-default"]["psnr_y"]  # bilinear is the softest
    why = doc["unavailable"]["mpv-black"]
    from mpv_srunet.evaluation.mpv_scalers import ATTEMPTS
    assert f"failed {ATTEMPTS} times" in why and "black or garbled" in why and "\n" not in why


def test_mpv_candidate_bad_input_is_one_line(clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["eval", "run", str(clips[0]), "--out", str(tmp_path / "r"), "--size", "256x144", "--no-progress"]
    for extra, msg in ((["--mpv", "nearest"], "expected one of default, lanczos, gpu-hq"),
                       (["--mpv-shader", f"x={tmp_path / 'none.glsl'}"], "expected NAME=PATH")):
        rc, _, err = _run(base + extra, capsys)
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_mpv_frame_check_tells_renderings_from_black_sheared_and_missing_frames(photo_rgb_540p: np.ndarray) -> None:
    from PIL import Image

    from mpv_srunet.evaluation.mpv_scalers import _frames_problem
    from mpv_srunet.metrics.grid import bicubic_to
    from mpv_srunet.metrics.image import rgb_to_y

    lr = photo_rgb_540p[300:372, 100:228]  # textured: a shift of its rows is visible
    ref = [rgb_to_y(bicubic_to(lr, (256, 144)))]
    lanczos = np.asarray(Image.fromarray(lr).resize((256, 144), Image.LANCZOS))
    assert _frames_problem([lanczos], ref, (256, 144)) is None  # another scaler: a valid rendering
    sheared = lanczos.copy()
    sheared[100:] = np.roll(lanczos[100:], 37, axis=1)  # a torn band at the bottom
    for bad, why in ((np.zeros_like(lanczos), "black or garbled"), (sheared, "sheared or torn"),
                     (lanczos[:-2], "expected 256x144")):
        assert why in _frames_problem([bad], ref, (256, 144))
    assert "0 frames rendered, 1 expected" == _frames_problem([], ref, (256, 144))


@pytest.mark.mpv
def test_sigterm_during_an_mpv_render_ends_mpv_and_xvfb_and_writes_nothing(clips: list[Path], tmp_path: Path) -> None:
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    for tool in ("mpv", "Xvfb"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found: install Debian mpv and xvfb (./install.sh --dev)")
    tmp = tmp_path / "tmp"  # every process of this run has TMPDIR=tmp in its environment
    tmp.mkdir()
    mark = f"TMPDIR={tmp}".encode()

    def children(parent: int) -> dict[int, str]:
        """pid -> name of this run's live processes other than ``parent`` (zombies left out)."""
        found = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if int(pid) == parent or mark not in open(f"/proc/{pid}/environ", "rb").read().split(b"\0"):
                    continue
                stat = open(f"/proc/{pid}/stat").read()
            except OSError:
                continue
            if stat.rsplit(") ", 1)[1][0] != "Z":
                found[int(pid)] = stat[stat.index("(") + 1:stat.rindex(")")]
        return found

    out = tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-m", "mpv_srunet.cli", "eval", "run", str(clips[0]), "--out", str(out),
                             "--size", "256x144", "--frames", "4", "--no-default", "--no-vmaf", "--preset", "ultrafast",
                             "--no-progress", "--mpv", "gpu-hq,lanczos,default"],
                            env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while "mpv" not in children(proc.pid).values():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no mpv child started in 300 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143 and "interrupted by SIGTERM" in err.decode()
    deadline = time.monotonic() + 10  # Xvfb was sent SIGTERM and waited for; allow the kernel a moment
    while children(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert children(proc.pid) == {} and not out.exists()
