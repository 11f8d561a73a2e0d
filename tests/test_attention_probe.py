"""The attention probe against closed-form softmaxes, real cache layouts and a real generator."""

from __future__ import annotations

import math

import pytest
import torch

from adabench.adastate import AdaptiveState
from adabench.attention import KeyLayout, Segment
from adabench.baselines.ff_anchor import FirstFrameAnchor
from adabench.baselines.sliding_window import SlidingWindow
from adabench.chunk import Chunk
from adabench.generator import CausalGenerator
from adabench.metrics.attention import (AttentionProbe, AttentionSinkStats, frame_masses, frame_roles,
                                        head_homogenisation, sink_head_rate)
from adabench.sampler import FlowSampler
from tests.conftest import fixed_tokens

A, W, C, S = Segment.ANCHOR, Segment.WINDOW, Segment.CURRENT, Segment.STATE


def qk_for_scores(scores: torch.Tensor, scale: float, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """q [1, H, M, dim], k [1, H, N, dim] with q k^T * scale == scores [H, M, N] (M <= dim)."""
    h, m, n = scores.shape
    q = torch.eye(m, dim).expand(h, m, dim)                                     # one-hot query rows
    k = torch.zeros(h, n, dim)
    k[:, :, :m] = scores.transpose(1, 2) / scale                               # key j carries column j
    return q[None].contiguous(), k[None]


def dense(scores: torch.Tensor, tpf: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 reference: per-frame mass [.., M, F] and normalised entropy [.., M] of a score matrix."""
    p = scores.double().softmax(-1)
    mass = p.unflatten(-1, (-1, tpf)).sum(-1)
    ent = -(p * p.clamp_min(1e-300).log()).sum(-1) / math.log(scores.shape[-1])
    return mass, ent


# --- exact masses ---------------------------------------------------------------------------
@pytest.mark.parametrize("key_chunk", [1, 4, 7, 15, 64, 4096])
def test_chunked_lse_equals_dense_softmax(key_chunk):
    torch.manual_seed(1)
    tpf, nf, m = 3, 5, 6
    q, k = torch.randn(2, 3, m, 16), torch.randn(2, 3, nf * tpf, 16)
    scale = 16 ** -0.5 * 3                                                      # peaky enough to matter
    fm = frame_masses(q, k, scale, tpf, key_chunk=key_chunk)
    mass, ent = dense(q.double() @ k.double().transpose(-1, -2) * scale, tpf)
    torch.testing.assert_close(fm.mass, mass, rtol=0, atol=1e-6)
    torch.testing.assert_close(fm.entropy, ent, rtol=0, atol=1e-5)
    assert fm.largest_block == m * min(key_chunk, nf * tpf)


@pytest.mark.parametrize("key_chunk", [2, 5, 15, 4096])
def test_chunked_lse_respects_mask(key_chunk):
    torch.manual_seed(2)
    tpf, nf, m = 3, 5, 4
    q, k = torch.randn(1, 2, m, 8), torch.randn(1, 2, nf * tpf, 8)
    mask = torch.rand(m, nf * tpf) > 0.4
    mask[:, 0] = True                                                          # every row sees something
    mask[:, 3:6] = False                                                       # frame 1 hidden from all rows
    fm = frame_masses(q, k, 0.5, tpf, mask, key_chunk)
    scores = (q.double() @ k.double().transpose(-1, -2) * 0.5).masked_fill(~mask, -math.inf)
    p = scores.softmax(-1)
    mass = p.unflatten(-1, (-1, tpf)).sum(-1)
    ent = -(p * p.clamp_min(1e-300).log()).sum(-1) / mask.sum(-1).double().log()
    torch.testing.assert_close(fm.mass, mass, rtol=0, atol=1e-6)
    torch.testing.assert_close(fm.entropy, ent, rtol=0, atol=1e-5)
    assert fm.mass[..., 1].abs().max() == 0


def test_hand_built_scores_give_closed_form_statistics():
    tpf, scale = 2, 0.25
    layout = KeyLayout((A, W, W, C), (0.0, 5.0, 6.0, 7.0), tpf, 1)            # queries: the 2 CURRENT tokens
    s = torch.tensor([[4.0, 3.0, 0.0, 1.0, 0.5, 2.0, 1.0, 1.0],
                      [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])              # head 0: sink-heavy row, uniform row
    scores = torch.stack([s, s.flip(-1)])                                      # [H=2, M=2, N=8]
    q, k = qk_for_scores(scores, scale)
    probe = AttentionProbe(key_chunk=3)
    probe(0, q, k, scale, layout, None)
    out = probe.pop_chunk()
    heads = out["current"]["per_head"]

    mass, ent = dense(scores.double(), tpf)                                    # [H, M, F], [H, M]
    torch.testing.assert_close(heads["profile"][0], mass.mean(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(heads["anchor_mass"][0], mass[..., 0].mean(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(heads["anchor_mass_rel"][0], mass[..., 0].mean(1) / (2 / 8), rtol=0, atol=1e-5)
    torch.testing.assert_close(heads["recency_mass"][0], mass[..., 2].mean(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(heads["self_mass"][0], mass[..., 3].mean(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(heads["entropy"][0], ent.mean(1), rtol=0, atol=1e-5)
    e = torch.tensor([4.0, 3.0]).exp()
    hand = (e.sum() / (e.sum() + torch.tensor([0.0, 1.0, 0.5, 2.0, 1.0, 1.0]).exp().sum()) + 0.25) / 2
    assert heads["anchor_mass"][0, 0].item() == pytest.approx(hand.item(), abs=1e-6)   # by hand, head 0
    assert out["current"]["anchor_mass"] == pytest.approx(heads["anchor_mass"].mean().item(), abs=1e-12)
    assert out["anchor"] == "anchor" and out["segments"] == [0, 2, 2, 3]


# --- which keys are the anchor ----------------------------------------------------------------
def test_anchor_selection_follows_the_cache_policy():
    ff = FirstFrameAnchor(sink=1, window=3).layout(9, 3, 9, False).key_layout(4)
    roles = frame_roles(ff)
    assert ff.segments[0] == A and roles.anchor == (0,) and roles.anchor_kind == "anchor"

    ada = AdaptiveState(state=1, window=3).layout(9, 3, 9, True).key_layout(4)
    roles = frame_roles(ada)
    assert ada.segments == (S, W, W, W, S, C, C, C)                           # cached state, window, query block
    assert roles.anchor == (0,) and roles.anchor_kind == "state"              # not the query block's state (4)
    assert roles.recent == (3,) and roles.query_block == (4, 5, 6, 7)

    sw = SlidingWindow(window=4).layout(9, 3, 9, False).key_layout(4)
    roles = frame_roles(sw, recency_frames=2)
    assert sw.positions[:4] == (5.0, 6.0, 7.0, 8.0)
    assert roles.anchor == (0,) and roles.anchor_kind == "oldest-window" and roles.recent == (2, 3)

    empty = SlidingWindow(window=4).layout(0, 3, 0, False).key_layout(4)
    assert frame_roles(empty).anchor == () and frame_roles(empty).anchor_kind is None


def test_empty_cache_reports_nan_anchor_mass():
    layout = KeyLayout((C, C), (0.0, 1.0), 2, 2)
    probe = AttentionProbe()
    probe(0, torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), 0.3, layout, None)
    out = probe.pop_chunk()["current"]
    assert math.isnan(out["anchor_mass"]) and math.isnan(out["sink_head_rate"])
    assert out["self_mass"] == pytest.approx(1.0, abs=1e-9)


# --- layer/head aggregates --------------------------------------------------------------------
def test_sink_head_rate_counts_heads_above_threshold():
    anchor = torch.tensor([[0.5, 0.1, 0.3], [0.31, 0.9, 0.0]])               # 0.3 itself is not a sink
    assert sink_head_rate(anchor) == pytest.approx(3 / 6)
    assert math.isnan(sink_head_rate(torch.tensor([[math.nan, 0.5]])))


def test_head_homogenisation_is_one_for_identical_heads_and_lower_otherwise():
    p = torch.tensor([0.5, 0.1, 0.1, 0.3], dtype=torch.float64)
    same = p.expand(1, 3, 4)
    other = torch.stack([p, p.flip(0), torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)])[None]
    orthogonal = torch.eye(2, dtype=torch.float64)[None]
    assert head_homogenisation(same).item() == pytest.approx(1.0)
    assert head_homogenisation(other).item() < 0.9
    assert head_homogenisation(orthogonal).item() == pytest.approx(0.0)


# --- with the real generator ------------------------------------------------------------------
def make_generator(tiny_model, policy, stagger: int = 0) -> CausalGenerator:
    model, codec = tiny_model
    return CausalGenerator("test", model, codec, policy, FlowSampler(2, 3.0, stagger), fixed_tokens)


def probed_rollout(gen: CausalGenerator, probe: AttentionProbe, **kwargs) -> list[Chunk]:
    """The generator hands each chunk its probe statistics (``chunk.attention``)."""
    return list(gen.stream("p", probe=probe, **kwargs))


@pytest.mark.parametrize("policy", [FirstFrameAnchor(sink=1, window=3), AdaptiveState(state=1, window=3)],
                         ids=["ff-anchor", "adastate"])
def test_probe_leaves_frames_bit_identical_and_stats_sane(tiny_model, policy):
    gen = make_generator(tiny_model, policy)
    init = torch.rand(1, 3, 32, 32)
    plain = list(gen.stream("p", seed=5, num_frames=13, init=init))
    probe = AttentionProbe.for_generator(gen, max_queries=5, key_chunk=7, state_queries=True)
    probed = probed_rollout(gen, probe, seed=5, num_frames=13, init=init)
    assert all(torch.equal(a.frames, b.frames) for a, b in zip(plain, probed))
    assert probed[0].attention is None                                        # prefill is not probed
    assert probe.largest_block <= 5 * 7                                        # bounded score block

    for chunk in probed[1:]:
        stats = chunk.attention
        assert stats["passes"] == 2                                            # the 2 sampler steps, not the commit
        for group in ("current", "state") if policy.state else ("current",):
            g = stats[group]
            heads = g["per_head"]
            torch.testing.assert_close(heads["profile"].sum(-1), torch.ones(heads["profile"].shape[:2], dtype=torch.float64))
            has_window = Segment.WINDOW in stats["segments"]
            for name in ("anchor_mass", "recency_mass", "self_mass", "entropy", "sink_head_rate", "head_homogenisation"):
                if name == "recency_mass" and not has_window:
                    assert math.isnan(g[name])                                 # no cached window frame yet
                    continue
                assert math.isfinite(g[name]) and -1e-9 <= g[name] <= 1 + 1e-9, (name, g[name])
            assert g["anchor_mass_rel"] > 0

    metric = AttentionSinkStats()
    for chunk in probed:
        metric.update(chunk)
    result = metric.compute()
    assert len(result.series["anchor_attention_mass_per_chunk"]) == len(probed) - 1
    assert sum(result.series["attn_profile"]) == pytest.approx(1.0, abs=1e-9)
    assert len(result.series["attn_profile_segments"]) == len(result.series["attn_profile"])
    assert all(math.isfinite(v) for v in result.scalars.values())
    assert result.info["attn_entropy"].direction == "none"


def test_steps_choice_and_commit_exclusion(tiny_model):
    gen = make_generator(tiny_model, SlidingWindow(window=3))
    counts = {}
    for name, probe in {"all": AttentionProbe.for_generator(gen, max_queries=4),
                        "last": AttentionProbe.for_generator(gen, max_queries=4, steps="last"),
                        "every-pass": AttentionProbe(max_queries=4)}.items():
        counts[name] = [c.attention["passes"] for c in probed_rollout(gen, probe, seed=1, num_frames=6)]
    assert counts == {"all": [2, 2], "last": [1, 1], "every-pass": [3, 2]}     # last chunk is never committed
    staggered = make_generator(tiny_model, SlidingWindow(window=3), stagger=1)   # 2 steps + 2 lags per chunk of 3
    probe = AttentionProbe.for_generator(staggered, max_queries=4)
    assert [c.attention["passes"] for c in probed_rollout(staggered, probe, seed=1, num_frames=6)] == [4, 4]


def test_metric_ignores_chunks_without_attention():
    metric = AttentionSinkStats()
    metric.update(Chunk(0, 0, torch.zeros(3, 3, 4, 4), 16.0))
    result = metric.compute()
    assert math.isnan(result.scalars["anchor_attention_mass"]) and result.series["anchor_attention_mass_per_chunk"] == []
    assert result.series["attn_profile"] == []
