"""Shared pieces of the Wan tests: a tiny random diffusers transformer (the oracle) and its twin in adabench."""

from __future__ import annotations

import torch

from adabench.wan.config import TINY, WanConfig
from adabench.wan.model import CausalWanModel
from adabench.wan.weights import check_state, to_wan_names


def tiny_diffusers(config: WanConfig = TINY, seed: int = 0):
    """diffusers' WanTransformer3DModel of the tiny configuration, randomly initialised (float32)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(patch_size=config.patch, num_attention_heads=config.num_heads,
                                  attention_head_dim=config.head_dim, in_channels=config.in_dim,
                                  out_channels=config.out_dim, text_dim=config.text_dim, freq_dim=config.freq_dim,
                                  ffn_dim=config.ffn_dim, num_layers=config.num_layers, cross_attn_norm=True,
                                  eps=config.eps)
    with torch.no_grad():                       # non-trivial norms, so a swapped or dropped one shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def wan_twin(diffusers_model, config: WanConfig = TINY) -> CausalWanModel:
    """adabench's model holding the diffusers model's weights, through the name map."""
    state, layout = to_wan_names(diffusers_model.state_dict())
    assert layout == "diffusers"
    model = CausalWanModel(config)
    model.load_state_dict(check_state(state, config, "oracle"), strict=True)
    return model.eval()
