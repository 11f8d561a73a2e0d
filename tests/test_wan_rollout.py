"""Chunk-by-chunk rollout of the Wan DiT under cache policies against one dense block-causal forward.

The oracle is written here from the layouts' definitions, without the cache, its slots or its
commit order: one forward of the tiny DiT over every block of the rollout at once (each
chunk's commit pass on its clean frames at t=0, then each chunk's denoising pass on its noisy
frames at their own per-frame timesteps), with an explicit mask that lets each block see its
own frames and what its chunk may see of earlier chunks' clean frames (and clean state). Each
query block reads its keys at the positions its chunk's layout gives them: the keys are
repeated once per query block, rotated by that block's positions, and the mask keeps every
block on its own copy (so a relative layout, where a frame's position depends on who reads
it, is one dense forward too).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from adabench.adastate import AdaptiveState  # noqa: E402
from adabench.baselines.ff_anchor import FirstFrameAnchor  # noqa: E402
from adabench.baselines.sliding_window import SlidingWindow  # noqa: E402
from adabench.cache import ChunkLayout, VisibleFrame  # noqa: E402
from adabench.rollout import Rollout  # noqa: E402
from adabench.rope import apply_rope  # noqa: E402
from adabench.wan.config import TINY, Geometry  # noqa: E402
from adabench.wan.model import AtResolution, CausalWanModel  # noqa: E402

GEOMETRY = Geometry(32, 48)         # latent 4 x 6, 2 x 3 tokens per frame
F, CHUNKS = 2, 4                    # frames per chunk, chunks per rollout


@pytest.fixture(scope="module")
def model() -> CausalWanModel:
    torch.manual_seed(3)
    return CausalWanModel(TINY).eval()


def blocks(state: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rows, cols = GEOMETRY.latent
    clean = [torch.randn(1, state + F, TINY.in_dim, rows, cols, generator=g) for _ in range(CHUNKS)]
    noisy = [torch.randn(1, state + F, TINY.in_dim, rows, cols, generator=g) for _ in range(CHUNKS)]
    times = [torch.rand(1, state + F, generator=g) * 1000 for _ in range(CHUNKS)]       # per-frame timesteps
    text = torch.randn(1, 6, TINY.text_dim, generator=g)
    return clean, noisy, times, text


@torch.no_grad()
def cached_rollout(model, policy, state: int, data, raw_keys: bool = True) -> list[torch.Tensor]:
    clean, noisy, times, text = data
    backbone = AtResolution(model, GEOMETRY)
    rollout = Rollout(backbone, policy, raw_keys=raw_keys)
    outs = []
    for k in range(CHUNKS):
        layout = rollout.layout(F)
        ctx = rollout.context(layout)
        outs.append(backbone(noisy[k], times[k], text, None, context=ctx, state_frames=state, rope=ctx.rope))
        rollout.commit(layout, clean[k], text, ctx)
    return outs


# --- the layouts, written out by hand ---------------------------------------------------------
def full_context(k: int) -> tuple[list[tuple[int, float]], list[float], list[float]]:
    """(visible earlier frames as (frame, position)), state query positions, chunk positions."""
    start = k * F
    return [(f, float(f)) for f in range(start)], [], [float(start + i) for i in range(F)]


def sink_window(sink: int, window: int):
    def layout(k: int):
        start = k * F
        seen = sorted(set(range(min(sink, start))) | set(range(max(sink, start - window), start)))
        return [(f, float(f)) for f in seen], [], [float(start + i) for i in range(F)]
    return layout


def adastate_relative(window: int, gap: int):
    """State at 0, the window right-aligned after 1 + gap, the chunk last; the previous state at 0."""
    def layout(k: int):
        start = k * F
        seen = list(range(max(0, start - window), start))
        base = 1 + gap + window
        frames = [(f, float(base - len(seen) + i)) for i, f in enumerate(seen)]
        return frames, [0.0], [float(base + i) for i in range(F)]
    return layout


class DenseOracle:
    """Attention context of the dense forward: key copies per query block and the block-causal mask."""

    probe = None
    layout = None

    def __init__(self, model, key_positions: torch.Tensor, visible: torch.Tensor, block_of: torch.Tensor,
                 tokens: int) -> None:
        self.model, self.key_positions = model, key_positions           # [Q, n] positions of each key frame per block
        q_blocks, n = visible.shape
        mask = torch.zeros(n * tokens, q_blocks * n * tokens, dtype=torch.bool)    # [query tokens, key copies]
        for frame in range(n):
            b = int(block_of[frame])
            rows = slice(frame * tokens, (frame + 1) * tokens)
            mask[rows, b * n * tokens:(b + 1) * n * tokens] = visible[b].repeat_interleave(tokens)
        self.mask = mask

    def extend(self, layer, k_rot, v, k_raw):
        copies = [apply_rope(k_raw, *self.model.rope(pos, GEOMETRY.grid, k_raw.device)) for pos in self.key_positions]
        return torch.cat(copies, dim=2), v.repeat(1, 1, len(copies), 1)


@torch.no_grad()
def dense_forward(model, layout_of, state: int, data) -> list[torch.Tensor]:
    clean, noisy, times, text = data
    per = state + F
    n = 2 * CHUNKS * per                       # commit blocks first, then denoising blocks
    q_blocks = 2 * CHUNKS
    visible = torch.zeros(q_blocks, n, dtype=torch.bool)
    key_pos = torch.zeros(q_blocks, n)
    query_pos = torch.zeros(n)
    block_of = torch.arange(n) // per
    for k in range(CHUNKS):
        frames, state_pos, chunk_pos = layout_of(k)
        for b in (k, CHUNKS + k):                                   # commit pass and denoising pass of chunk k
            own = torch.arange(b * per, (b + 1) * per)
            visible[b, own] = True
            key_pos[b, own] = torch.tensor(state_pos + chunk_pos)
            query_pos[own] = torch.tensor(state_pos + chunk_pos)
            for f, pos in frames:                                    # clean frame f: in commit block f // F
                col = (f // F) * per + state + f % F
                visible[b, col], key_pos[b, col] = True, pos
            if state and k > 0:                                      # the previous chunk's clean state
                col = (k - 1) * per
                visible[b, col], key_pos[b, col] = True, state_pos[0]
    latents = torch.cat(clean + noisy, dim=1)                                        # [1, n, C, h, w]
    t = torch.cat([torch.zeros(1, CHUNKS * per)] + times, dim=1)                     # [1, n] per-frame timesteps
    oracle = DenseOracle(model, key_pos, visible, block_of, GEOMETRY.tokens_per_frame)
    rope = model.rope(query_pos, GEOMETRY.grid, "cpu")
    out = model(latents, t, text, context=oracle, rope=rope)
    return [out[:, (CHUNKS + k) * per:(CHUNKS + k + 1) * per] for k in range(CHUNKS)]


CASES = {
    "full-context": (SlidingWindow(window=CHUNKS * F, pos="absolute"), 0, full_context),
    "sink+window": (FirstFrameAnchor(sink=2, window=3, pos="absolute"), 0, sink_window(2, 3)),
    "adastate": (AdaptiveState(state=1, window=3, pos="relative", gap=2), 1, adastate_relative(3, 2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cached_rollout_equals_dense_block_causal_forward(model, case):
    policy, state, layout_of = CASES[case]
    data = blocks(state)
    got = cached_rollout(model, policy, state, data)
    expected = dense_forward(model, layout_of, state, data)
    for k, (a, b) in enumerate(zip(got, expected)):
        err = (a - b).abs().max().item()
        assert err < 1e-4 * b.abs().max().item(), (case, k, err)


SHIFT = 5000.0     # far past the 1,024 positions of upstream's RoPE table: angles come from positions here


class Shifted(AdaptiveState):
    """AdaState's relative layout with every position moved by a constant."""

    def layout(self, *args, **kwargs) -> ChunkLayout:
        lay = super().layout(*args, **kwargs)
        return ChunkLayout(tuple(VisibleFrame(v.item, v.segment, v.position + SHIFT) for v in lay.keys),
                           tuple(p + SHIFT for p in lay.state_positions), tuple(p + SHIFT for p in lay.frame_positions))


def test_shifting_every_relative_position_changes_nothing(model):
    data = blocks(1, seed=5)
    plain = cached_rollout(model, AdaptiveState(state=1, window=3, pos="relative", gap=2), 1, data)
    shifted = cached_rollout(model, Shifted(state=1, window=3, pos="relative", gap=2), 1, data)
    for a, b in zip(plain, shifted):
        assert (a - b).abs().max().item() < 1e-4 * a.abs().max().item()


def test_absolute_raw_keys_equal_rotating_at_birth(model):
    """The claim behind caching raw keys: rotating at read by the policy's absolute positions is rotating at birth."""
    data = blocks(0, seed=7)
    policy = FirstFrameAnchor(sink=1, window=3, pos="absolute")
    at_read = cached_rollout(model, policy, 0, data, raw_keys=True)
    at_birth = cached_rollout(model, policy, 0, data, raw_keys=False)
    for a, b in zip(at_read, at_birth):
        assert (a - b).abs().max().item() < 1e-5 * a.abs().max().item()
