"""The Wan DiT against diffusers' WanTransformer3DModel (the oracle), the name maps, and the schedule."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from adabench.wan.config import TINY, Geometry, latent_frames_for, pixel_frames_of  # noqa: E402
from adabench.wan.model import CausalWanModel  # noqa: E402
from adabench.wan.sampler import DistilledSampler, parse_steps  # noqa: E402
from adabench.wan.weights import diffusers_to_wan, wan_to_diffusers  # noqa: E402
from tests.wan_helpers import tiny_diffusers, wan_twin  # noqa: E402


@torch.no_grad()
def test_one_chunk_equals_diffusers_with_per_frame_timesteps():
    """A full-context chunk of 3 latent frames on a non-square grid, each frame at its own timestep."""
    oracle = tiny_diffusers()
    model = wan_twin(oracle)
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 3, TINY.in_dim, 4, 6, generator=g)                     # [B, n, C, h, w]
    text = torch.randn(2, 7, TINY.text_dim, generator=g)
    t = torch.tensor([[0.0, 625.0, 937.5], [1000.0, 250.0, 833.3]])                # [B, n] Wan timesteps
    tokens = (4 // 2) * (6 // 2)
    expected = oracle(latents.transpose(1, 2), t.repeat_interleave(tokens, dim=1), text).sample   # [B, C, n, h, w]
    got = model(latents, t, text)                                                   # [B, n, C, h, w]
    err = (got.transpose(1, 2) - expected).abs().max().item()
    assert err < 1e-5 * expected.abs().max().item(), err       # measured 6e-7 (float64 vs float32 sinusoid)


@torch.no_grad()
def test_every_frame_keeps_its_own_modulation():
    """Per-frame times act per frame: a frame's output moves when only its own time changes more than when
    another frame's does (attention couples them, modulation does not)."""
    model = CausalWanModel(TINY).eval()
    latents = torch.randn(1, 2, TINY.in_dim, 4, 4)
    text = torch.randn(1, 5, TINY.text_dim)
    base = model(latents, torch.tensor([[500.0, 500.0]]), text)
    moved = model(latents, torch.tensor([[500.0, 900.0]]), text)
    assert (moved[:, 1] - base[:, 1]).abs().max() > 10 * (moved[:, 0] - base[:, 0]).abs().max()


def test_name_maps_are_inverse_and_swap_norm2_norm3():
    oracle_keys = list(tiny_diffusers().state_dict())
    wan_keys = [diffusers_to_wan(k) for k in oracle_keys]
    assert set(wan_keys) == set(CausalWanModel(TINY).state_dict())
    assert [wan_to_diffusers(k) for k in wan_keys] == oracle_keys
    assert diffusers_to_wan("blocks.4.norm2.weight") == "blocks.4.norm3.weight"
    assert diffusers_to_wan("scale_shift_table") == "head.modulation"
    assert diffusers_to_wan("blocks.12.scale_shift_table") == "blocks.12.modulation"
    assert diffusers_to_wan("blocks.0.attn1.to_out.0.bias") == "blocks.0.self_attn.o.bias"
    assert diffusers_to_wan("blocks.0.ffn.net.0.proj.weight") == "blocks.0.ffn.0.weight"


def test_published_schedules():
    sf = DistilledSampler((1000, 750, 500, 250), shift=5.0, warp=True)
    assert sf.timesteps == pytest.approx([1000.0, 937.5, 2500 / 3, 625.0], abs=1e-9)
    assert sf.sigma(937.5) == pytest.approx(0.9375)
    cv = DistilledSampler((1000, 757, 522), shift=8.0, warp=False)
    assert cv.timesteps == (1000.0, 757.0, 522.0)
    assert abs(cv.sigma(757.0) - 0.757) < 2e-3            # nearest point of the shift-8 grid, as upstream looks it up
    assert parse_steps(4) == (1000.0, 750.0, 500.0, 250.0)
    assert parse_steps("1000/757/522") == (1000.0, 757.0, 522.0)


def test_frame_counts():
    assert latent_frames_for(81) == 21 and latent_frames_for(1) == 1 and latent_frames_for(2) == 2
    assert pixel_frames_of(0, 21) == 81 and pixel_frames_of(0, 3) == 9 and pixel_frames_of(3, 3) == 12
    assert Geometry(480, 832).tokens_per_frame == 1560
