"""Shipping: a decoder retrained on a frozen encoder is grafted into a model's checkpoint only
when the latents it decodes are exactly the ones the model was trained on."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from adabench.checkpoints import load_model
from adabench.errors import UserError
from adabench.training import loop, ship
from tests.test_training import tiny


def test_graft_takes_the_decoder_and_keeps_everything_else():
    model = {"model.w": torch.ones(2), "codec.encoder.0.weight": torch.ones(3), "codec.latent_std": torch.ones(1),
             "codec.decoder.0.weight": torch.zeros(3)}
    codec = {"model.w": torch.full((2,), 9.0), "codec.encoder.0.weight": torch.ones(3),
             "codec.latent_std": torch.ones(1), "codec.decoder.0.weight": torch.full((3,), 5.0)}
    grafted = ship.graft_decoder(model, codec, "m", "c")
    assert torch.equal(grafted["codec.decoder.0.weight"], torch.full((3,), 5.0))
    assert torch.equal(grafted["model.w"], torch.ones(2))         # the codec checkpoint's DiT is not taken
    other_encoder = {**codec, "codec.encoder.0.weight": torch.ones(3) * 1.001}
    with pytest.raises(UserError, match="codec.encoder.0.weight"):
        ship.graft_decoder(model, other_encoder, "m", "c")
    other_normalisation = {**codec, "codec.latent_std": torch.ones(1) * 2}
    with pytest.raises(UserError, match=r"latent normalisation differs \(codec.latent_std\)"):
        ship.graft_decoder(model, other_normalisation, "m", "c")


def test_ship_with_a_grafted_decoder_end_to_end(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    loop.train(tiny("codec", steps=2), runs, progress=False)
    loop.train(tiny("codec-decoder", steps=2), runs, progress=False)
    loop.train(tiny("base", steps=1), runs, progress=False)
    monkeypatch.setattr(ship, "PACKAGE_WEIGHTS", tmp_path / "weights")
    monkeypatch.setattr(ship, "LOGS", tmp_path / "logs")
    (tmp_path / "weights").mkdir()
    assert ship.main(["--runs", str(runs), "--codec", str(runs / "codec-decoder.safetensors"), "base"]) == 0
    model, codec, meta = load_model(tmp_path / "weights" / "base.safetensors")
    trained_model, trained_codec, _ = load_model(runs / "base.safetensors")
    _, decoder_codec, _ = load_model(runs / "codec-decoder.safetensors")
    for key, value in codec.state_dict().items():
        source = decoder_codec if key.startswith("decoder.") else trained_codec
        assert torch.equal(value, source.state_dict()[key].half().float()), key
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained_model.state_dict()[key].half().float()), key
    assert meta["decoder"] == "codec-decoder"
    manifest = json.loads((tmp_path / "weights" / "manifest.json").read_text())
    assert manifest["base"]["decoder"]["recipe"] == "codec-decoder"
    assert manifest["base"]["init"] == "codec"                    # the tiny base recipe starts from the codec
    assert (tmp_path / "logs" / "codec-decoder.log.jsonl").is_file()


def test_the_dit_trains_to_the_same_weights_whichever_decoder_its_codec_carries(tmp_path):
    """Why grafting equals rebuilding: DiT training reads only the encoder's latents."""
    runs = tmp_path / "runs"
    loop.train(tiny("codec", steps=2), runs, progress=False)
    loop.train(tiny("codec-decoder", steps=2, lr=1e-2), runs, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(runs / "codec-decoder.safetensors", other / "codec.safetensors")   # the new decoder as the init
    a = load_model(loop.train(tiny("base", steps=2), runs, progress=False))
    b = load_model(loop.train(tiny("base", steps=2), other, progress=False))
    assert all(torch.equal(x, y) for x, y in zip(a[0].state_dict().values(), b[0].state_dict().values()))
    decoders = [{k: v for k, v in m[1].state_dict().items() if k.startswith("decoder.")} for m in (a, b)]
    assert any(not torch.equal(decoders[0][k], decoders[1][k]) for k in decoders[0])   # the premise


def test_ship_refuses_a_missing_codec_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ship, "PACKAGE_WEIGHTS", tmp_path)
    assert ship.main(["--runs", str(tmp_path), "--codec", str(tmp_path / "nope.safetensors"), "base"]) == 2
    err = capsys.readouterr().err
    assert "nope.safetensors not found" in err and len(err.strip().splitlines()) == 1
