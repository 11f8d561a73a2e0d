"""Reading the family's weights: each checkpoint format, prefixes, EMA, LoRA, refusals, a diffusers folder."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from safetensors.torch import save_file  # noqa: E402

from adabench.errors import UserError  # noqa: E402
from adabench.wan.config import TINY, WanConfig  # noqa: E402
from adabench.wan.model import CausalWanModel  # noqa: E402
from adabench.wan.weights import merge_lora, read_generator, wan_to_diffusers  # noqa: E402
from tests.wan_helpers import tiny_diffusers  # noqa: E402


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(11)
    return {k: v.clone() for k, v in CausalWanModel(TINY).state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def fsdp(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """How an FSDP run names them: model._fsdp_wrapped_module.blocks.0._fsdp_wrapped_module.self_attn..."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] == "blocks":
            k = f"blocks.{parts[1]}._fsdp_wrapped_module." + ".".join(parts[2:])
        out["model._fsdp_wrapped_module." + k] = v
    return out


@pytest.mark.parametrize("layout", ["generator", "generator_ema", "model", "bare", "fsdp"])
def test_pt_checkpoints_of_each_layout(tmp_path, weights, layout):
    other = {k: v + 1 for k, v in weights.items()}
    obj = {"generator": prefixed(weights, "model."), "generator_ema": prefixed(other, "model.")} if layout == "generator_ema" \
        else {"generator": prefixed(weights, "model.")} if layout == "generator" \
        else {"model": weights, "step": torch.tensor(3)} if layout == "model" \
        else {"generator": fsdp(weights)} if layout == "fsdp" else weights
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    state, what = read_generator(path, TINY, ema=True)
    assert same(state, other if layout == "generator_ema" else weights), what
    if layout == "generator_ema":
        assert same(read_generator(path, TINY, ema=False)[0], weights)


def test_safetensors_in_wan_and_diffusers_names(tmp_path, weights):
    save_file(weights, tmp_path / "wan.safetensors")
    save_file({wan_to_diffusers(k): v for k, v in weights.items()}, tmp_path / "dif.safetensors")
    assert same(read_generator(tmp_path / "wan.safetensors", TINY)[0], weights)
    state, what = read_generator(tmp_path / "dif.safetensors", TINY)
    assert same(state, weights) and "diffusers" in what


def test_lora_is_merged_as_w_plus_scaled_b_a(tmp_path, weights):
    g = torch.Generator().manual_seed(2)
    a = torch.randn(4, TINY.dim, generator=g)                   # rank 4
    b = torch.randn(TINY.dim, 4, generator=g)
    ffn_a, ffn_b = torch.randn(4, TINY.dim, generator=g), torch.randn(TINY.ffn_dim, 4, generator=g)
    lora = {"base_model.model.blocks.1.self_attn.q.lora_A.weight": a,
            "base_model.model.blocks.1.self_attn.q.lora_B.weight": b,
            "base_model.model.blocks.0.ffn.0.lora_A.weight": ffn_a,
            "base_model.model.blocks.0.ffn.0.lora_B.weight": ffn_b}
    torch.save({"generator_lora": lora}, tmp_path / "lora.pt")
    state = dict(weights)
    merge_lora(state, tmp_path / "lora.pt")                     # alpha = rank: scale 1 (LongLive)
    assert torch.allclose(state["blocks.1.self_attn.q.weight"], weights["blocks.1.self_attn.q.weight"] + b @ a, atol=1e-5)
    assert torch.allclose(state["blocks.0.ffn.0.weight"], weights["blocks.0.ffn.0.weight"] + ffn_b @ ffn_a, atol=1e-5)
    assert torch.equal(state["blocks.0.self_attn.q.weight"], weights["blocks.0.self_attn.q.weight"])
    # diffusers' names and an explicit alpha (scale alpha / rank)
    save_file({"transformer.blocks.1.attn1.to_q.lora_A.weight": a.contiguous(),
               "transformer.blocks.1.attn1.to_q.lora_B.weight": b.contiguous()}, tmp_path / "lora.safetensors")
    state = dict(weights)
    merge_lora(state, tmp_path / "lora.safetensors", alpha=2.0)
    assert torch.allclose(state["blocks.1.self_attn.q.weight"], weights["blocks.1.self_attn.q.weight"] + 0.5 * b @ a,
                          atol=1e-5)


class Payload:
    """A pickled object whose loading would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


def test_pickle_holding_an_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.pt"
    torch.save({"generator": {"blocks.0.self_attn.q.weight": torch.zeros(1)}, "x": Payload(marker)}, path)
    with pytest.raises(UserError, match="evil.pt holds Python objects") as info:
        read_generator(path, TINY)
    assert not marker.exists()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("mistake,message", [
    ("shape", "tensor .* is \\[.*\\], the model expects"),
    ("missing", "lacks tensor"),
    ("nothing", "holds no generator weights"),
    ("suffix", "accepted: .safetensors"),
    ("absent", "not found"),
])
def test_mismatched_or_unreadable_files_get_one_line(tmp_path, weights, mistake, message):
    path = tmp_path / ("ckpt.txt" if mistake == "suffix" else "ckpt.pt")
    if mistake == "shape":
        torch.save(CausalWanModel(WanConfig(dim=36, ffn_dim=32, freq_dim=16, text_dim=32, num_heads=3,
                                            num_layers=2)).state_dict(), path)
    elif mistake == "missing":
        torch.save({k: v for k, v in weights.items() if k != "head.head.bias"}, path)
    elif mistake == "nothing":
        torch.save({"optimizer": {"lr": torch.tensor(1.0)}, "step": 3}, path)
    elif mistake == "suffix":
        path.write_text("hello")
    with pytest.raises(UserError, match=message) as info:
        read_generator(path, TINY)
    assert "\n" not in str(info.value) and str(path.name) in str(info.value)


def make_folder(root: Path) -> Path:
    """A tiny Wan2.1 folder in diffusers' layout, every part saved by its own library."""
    from adabench.wan.text import UMT5_TINY, char_tokenizer, random_umt5
    from adabench.wan.vae import random_vae

    (root / "model_index.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    tiny_diffusers().save_pretrained(root / "transformer")
    random_vae("tiny", torch.device("cpu"), torch.float32).save_pretrained(root / "vae")
    random_umt5(UMT5_TINY, torch.device("cpu"), torch.float32).save_pretrained(root / "text_encoder")
    char_tokenizer().save_pretrained(root / "tokenizer")
    return root


def test_a_diffusers_folder_with_a_checkpoint_and_a_lora(tmp_path, weights):
    from adabench.registry import GENERATORS

    folder = make_folder(tmp_path / "Wan2.1-T2V-tiny")
    base = GENERATORS.build(f"wan:path={folder},height=32,width=32", device="cpu")
    oracle = {wan_to_diffusers(k): v for k, v in base.model.state_dict().items()}
    assert same(oracle, tiny_diffusers().state_dict())
    frames = torch.cat([c.frames for c in base.stream("a fox in the snow", 0, 5)])
    assert frames.shape == (5, 3, 32, 32)
    torch.save({"generator_ema": prefixed(weights, "model.")}, tmp_path / "self_forcing_dmd.pt")
    lora = {"base_model.model.head.head.lora_A.weight": torch.ones(2, TINY.dim),
            "base_model.model.head.head.lora_B.weight": torch.ones(TINY.out_dim * 4, 2)}
    torch.save(lora, tmp_path / "lora.pt")
    gen = GENERATORS.build(f"wan:path={folder},checkpoint={tmp_path / 'self_forcing_dmd.pt'},"
                           f"lora={tmp_path / 'lora.pt'},preset=longlive,height=32,width=32", device="cpu")
    merged = gen.model.state_dict()
    assert torch.allclose(merged["head.head.weight"], weights["head.head.weight"] + 2.0)
    assert torch.equal(merged["blocks.0.self_attn.q.weight"], weights["blocks.0.self_attn.q.weight"])
    info = gen.describe()
    assert "self_forcing_dmd.pt (generator_ema, wan names)" in info["weights"] and "LoRA lora.pt" in info["weights"]
    assert (info["policy"], info["sink"], info["window"]) == ("ff-anchor", 3, 6)


def test_a_folder_missing_its_parts_is_one_line(tmp_path, capsys):
    from adabench.cli import main

    (tmp_path / "model_index.json").write_text("{}")
    code = main(["generate", "--model", f"wan:path={tmp_path}", "--prompt", "a fox", "--frames", "5",
                 "--out", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "lacks transformer, vae, text_encoder, tokenizer" in err[0], err
