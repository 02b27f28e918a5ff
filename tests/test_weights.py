"""Our weights format, the authors' .pth import, and clear errors for bad files."""

from __future__ import annotations

import pytest
import torch

from mpv_srunet.cli import main
from mpv_srunet.errors import WeightsError
from mpv_srunet.model import create_model, reparameterize_model
from mpv_srunet.weights import (
    import_authors_checkpoint, load_model, read_weights, save_weights, sidecar_weights_for,
)


def test_roundtrip_train_and_deploy(tmp_path):
    torch.manual_seed(1)
    m = create_model("default", n_filters=16).eval()
    save_weights(tmp_path / "t.safetensors", m, {"provenance": {"data": "x"}, "note": "hi"})
    loaded, info = load_model(tmp_path / "t.safetensors")
    assert info.form == "train" and loaded.deploy and info.cfg == m.cfg
    assert info.metadata["provenance"] == {"data": "x"} and info.metadata["note"] == "hi"
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(m(x), loaded(x), atol=1e-5)
    train, _ = load_model(tmp_path / "t.safetensors", deploy=False)
    assert not train.deploy
    save_weights(tmp_path / "d.safetensors", reparameterize_model(m), half=True)
    with pytest.raises(WeightsError, match="training needs a train-form"):
        load_model(tmp_path / "d.safetensors", deploy=False)
    assert (tmp_path / "d.safetensors").stat().st_size < (tmp_path / "t.safetensors").stat().st_size / 2


def test_import_authors_checkpoint_matches_original(shared_anchors, tmp_path):
    src = shared_anchors / "srunet_2x_crf23.pth"
    rc = main(["import-weights", str(src), "-o", str(tmp_path / "a.safetensors")])
    assert rc == 0
    ours, info = load_model(tmp_path / "a.safetensors")
    assert info.metadata["provenance"]["imported_from"] == "srunet_2x_crf23.pth"
    ref = create_model("default").eval()
    ref.load_state_dict(torch.load(src, map_location="cpu", weights_only=True), strict=True)
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(ref(x), ours(x), atol=1e-5)
    w = import_authors_checkpoint(shared_anchors / "srunet_1.5x_crf23.pth", tmp_path / "b.safetensors", out_scale=0.75)
    assert w.cfg.n_filters == 48 and w.cfg.total_scale == 1.5


def test_bad_weight_files(tmp_path, capsys):
    good = tmp_path / "good.safetensors"
    save_weights(good, create_model("default", n_filters=16))
    data = good.read_bytes()
    cases = {
        "missing.safetensors": None,
        "empty.safetensors": b"",
        "trunc.safetensors": data[: len(data) // 2],
        "garbage.safetensors": b"\x00" * 1000,
        "garbage.pth": b"not a pickle at all",
        "weights.onnx": b"x",
    }
    for name, content in cases.items():
        p = tmp_path / name
        if content is not None:
            p.write_bytes(content)
        with pytest.raises(WeightsError) as e:
            load_model(p)
        msg = str(e.value)
        assert name in msg and "\n" not in msg
    # a real safetensors file of another network
    from safetensors.torch import save_file

    save_file({"conv.weight": torch.zeros(3, 3, 3, 3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsError, match="not an SR-UNet state dict"):
        load_model(tmp_path / "other.safetensors")
    # mismatched config metadata vs tensors
    sd, cfg, form, meta = read_weights(good)
    sd["conv_last.weight"] = torch.zeros(12, 4, 1, 1)
    save_file(sd, str(tmp_path / "mism.safetensors"), metadata={"srunet.config": '{"n_filters": 16}', "srunet.form": "train"})
    with pytest.raises(WeightsError, match="conv_last.weight has shape"):
        load_model(tmp_path / "mism.safetensors")
    # and through the CLI: one line, exit 2
    assert main(["info", str(tmp_path / "trunc.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mpv-srunet: error:") and len(err.splitlines()) == 1


def test_sidecar_lookup(tmp_path):
    video = tmp_path / "clip.mkv"
    video.write_bytes(b"x")
    assert sidecar_weights_for(video) is None
    side = tmp_path / "clip.mkv.srunet.safetensors"
    side.write_bytes(b"x")
    assert sidecar_weights_for(video) == side
    assert sidecar_weights_for("https://example.invalid/clip.mkv") is None


def test_every_cli_command_imports():
    """A command module that fails to import would only say 'unavailable' at run time: catch it here."""
    import importlib

    from mpv_srunet.cli import COMMAND_MODULES

    for name in COMMAND_MODULES:
        importlib.import_module(name)
