"""The streaming engine against an independent full recomputation, plus determinism and output rules."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from adabench.adastate import AdaptiveState
from adabench.baselines.ff_anchor import FirstFrameAnchor
from adabench.baselines.sliding_window import SlidingWindow
from adabench.cache import CachePolicy
from adabench.generator import CausalGenerator
from adabench.sampler import FlowSampler
from tests.conftest import fixed_tokens
from tests.reference_rollout import Block_, reference_velocity

POLICIES = [
    SlidingWindow(window=4), SlidingWindow(window=4, pos="relative"),
    FirstFrameAnchor(sink=1, window=3), FirstFrameAnchor(sink=2, window=2, pos="relative"),
    AdaptiveState(state=1, window=3), AdaptiveState(state=2, window=2, pos="absolute"), AdaptiveState(gap=0),
]
IDS = [p.spec() for p in POLICIES]


def make_generator(tiny_model, policy: CachePolicy, steps: int = 2, chunk: int = 3, stagger: int = 0) -> CausalGenerator:
    model, codec = tiny_model
    return CausalGenerator("test", model, codec, policy, FlowSampler(steps, 3.0, stagger), fixed_tokens, chunk_frames=chunk)


def capture_calls(gen: CausalGenerator, **stream_kwargs):
    """Run a rollout, recording every backbone forward: (input latents, t, output, is_commit)."""
    calls = []

    def hook(module, args, kwargs, output):
        ctx = kwargs["context"]
        calls.append((args[0].clone(), args[1][0].clone(), output.clone(), ctx.recorded is not None))   # t [1 | n]

    handle = gen.model.register_forward_hook(hook, with_kwargs=True)
    try:
        chunks = list(gen.stream("p", **stream_kwargs))
    finally:
        handle.remove()
    return chunks, calls


@pytest.mark.parametrize("policy", POLICIES, ids=IDS)
@pytest.mark.parametrize("use_init", [False, True], ids=["t2v", "i2v"])
@pytest.mark.parametrize("chunk,stagger", [(3, 0), (1, 0), (3, 1)], ids=["chunk3", "chunk1", "chunk3-stagger1"])
def test_cached_rollout_equals_full_recomputation(tiny_model, policy, use_init, chunk, stagger):
    gen = make_generator(tiny_model, policy, chunk=chunk, stagger=stagger)
    init = torch.rand(1, 3, 32, 32) if use_init else None
    chunks, calls = capture_calls(gen, seed=3, num_frames=(1 if use_init else 0) + 18, init=init)
    prompt = torch.tensor([fixed_tokens("")])

    history: list[Block_] = []
    committed, has_state, i = 0, False, 0
    checked = 0
    if use_init:
        lat, t, out, is_commit = calls[0]
        assert is_commit
        layout = policy.layout(0, 1, 0, False, with_state=False)
        torch.testing.assert_close(out, reference_velocity(gen.model, [Block_(lat, t, layout, 0)], prompt), rtol=1e-4, atol=1e-4)
        history.append(Block_(lat, 0.0, layout, 0))
        committed, i = 1, 1
    while i < len(calls):
        layout = policy.layout(committed, chunk, committed, has_state)
        while i < len(calls):
            lat, t, out, is_commit = calls[i]
            ref = reference_velocity(gen.model, history + [Block_(lat, t, layout, committed)], prompt)
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
            checked += 1
            i += 1
            if is_commit:
                history.append(Block_(lat, 0.0, layout, committed))
                committed += chunk
                has_state = has_state or policy.state > 0
                break
    chunks_made = 18 // chunk
    passes = 2 + (chunk - 1) * stagger                     # 2 steps per frame, frames starting `stagger` apart
    assert checked == chunks_made * passes + chunks_made - 1   # + a commit for all but the last


def test_recomputation_detects_a_wrong_layout(tiny_model):
    """Negative control: the comparison is sensitive to the cache's contents and positions."""
    policy = FirstFrameAnchor(sink=1, window=3)
    gen = make_generator(tiny_model, policy)
    _, calls = capture_calls(gen, seed=3, num_frames=12)
    prompt = torch.tensor([fixed_tokens("")])
    history, committed, i = [], 0, 0
    for _chunk in range(3):       # replay three chunks (2 steps + commit each)
        layout = policy.layout(committed, 3, committed, False)
        for _ in range(3):
            lat, t, out, is_commit = calls[i]
            i += 1
        history.append(Block_(lat, 0.0, layout, committed))
        committed += 3
    lat, t, out, _ = calls[i]     # first step of chunk 3
    good = policy.layout(committed, 3, committed, False)
    torch.testing.assert_close(out, reference_velocity(gen.model, history + [Block_(lat, t, good, committed)], prompt),
                               rtol=1e-4, atol=1e-4)
    shifted = dataclasses.replace(good, keys=tuple(dataclasses.replace(k, position=k.position + 1) for k in good.keys))
    dropped = dataclasses.replace(good, keys=good.keys[1:])
    for wrong in (shifted, dropped):
        ref = reference_velocity(gen.model, history + [Block_(lat, t, wrong, committed)], prompt)
        assert (out - ref).abs().max() > 1e-3


@pytest.mark.parametrize("num_frames", [1, 2, 3, 4, 7, 20])
@pytest.mark.parametrize("policy", [AdaptiveState(), AdaptiveState(state=3, window=5), FirstFrameAnchor()], ids=["as1", "as3", "ff"])
def test_exact_frame_count_and_state_never_rendered(tiny_model, policy, num_frames):
    gen = make_generator(tiny_model, policy)
    decoded = []
    original = gen.codec.decode
    gen.codec.decode = lambda lat: decoded.append(lat.clone()) or original(lat)
    try:
        chunks, calls = capture_calls(gen, seed=1, num_frames=num_frames)
    finally:
        gen.codec.decode = original
    assert sum(c.num_frames for c in chunks) == num_frames
    assert [c.start_frame for c in chunks] == list(range(0, num_frames, 3))
    assert sum(d.shape[0] for d in decoded) == num_frames          # only rendered frames are decoded
    commits = [c for c in calls if c[3]]
    for chunk_latents, dec in zip((c[0] for c in commits), decoded):
        # the decoded latents are the chunk's frames: the block minus its leading state frames
        torch.testing.assert_close(dec, chunk_latents[0, policy.state:])
        for j in range(policy.state):
            assert not any(torch.allclose(chunk_latents[0, j], d) for d in dec)


def test_same_seed_same_frames_different_seed_different(tiny_pixel_model):
    gen = make_generator(tiny_pixel_model, AdaptiveState())
    a = torch.cat([c.frames for c in gen.stream("p", 5, 12)])
    b = torch.cat([c.frames for c in gen.stream("p", 5, 12)])
    c = torch.cat([c.frames for c in gen.stream("p", 6, 12)])
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3


def test_probe_leaves_frames_bit_identical(tiny_model):
    gen = make_generator(tiny_model, FirstFrameAnchor())
    seen = []

    def probe(layer, q, k, scale, layout, mask):
        # an intrusive-looking probe: computes full attention probabilities in float64
        seen.append(torch.softmax((q.double() @ k.double().transpose(-1, -2)) * scale, -1).sum().item())

    plain = torch.cat([c.frames for c in gen.stream("p", 2, 15)])
    probed = torch.cat([c.frames for c in gen.stream("p", 2, 15, probe=probe)])
    assert seen and torch.equal(plain, probed)


def test_init_frames_are_emitted_exactly(tiny_model):
    gen = make_generator(tiny_model, FirstFrameAnchor())
    init = torch.rand(1, 3, 32, 32)
    chunks = list(gen.stream("p", 0, 7, init=init))
    assert torch.equal(chunks[0].frames, init) and [c.num_frames for c in chunks] == [1, 3, 3]


def test_cache_is_preallocated_and_written_in_place(tiny_model):
    """Commit is O(1): the same buffers (same storage) for the whole rollout, sized by the budget."""
    from adabench.rollout import Rollout
    model, codec = tiny_model
    policy = AdaptiveState()
    rollout = Rollout(model, policy)
    ptrs = [k.data_ptr() for k in rollout.cache.k]
    prompt = torch.tensor([fixed_tokens("")])
    with torch.inference_mode():
        for _ in range(40):
            layout = rollout.layout(3)
            rollout.commit(layout, torch.randn(1, 4, 4, 8, 8), prompt)
    assert [k.data_ptr() for k in rollout.cache.k] == ptrs
    assert rollout.cache.k[0].shape[2] == policy.capacity == 4
    assert all(h is not None for h in rollout.cache.held)
    assert sorted(h.index for h in rollout.cache.held if h.kind == "frame") == [117, 118, 119]


@pytest.mark.parametrize("policy", [FirstFrameAnchor(sink=1, window=3), AdaptiveState(state=1, window=3)],
                         ids=["ff-anchor", "adastate"])
def test_guidance_zero_is_the_null_prompt_and_one_is_the_prompt(tiny_model, policy):
    """Classifier-free guidance v_null + w (v_prompt - v_null): w = 0 must give exactly the rollout of the
    null prompt (its own cache included), w = 1 exactly the unguided rollout, any other w something else."""
    from adabench.backbone import null_prompt
    from adabench.errors import UserError

    model, codec = tiny_model
    null = null_prompt(torch.tensor([fixed_tokens("")]), model.config.vocab_size)[0].tolist()

    def frames(guidance: float, tokenize=fixed_tokens) -> torch.Tensor:
        gen = CausalGenerator("t", model, codec, policy, FlowSampler(2, 3.0, 1), tokenize, guidance=guidance)
        init = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        return torch.cat([c.frames for c in gen.stream("p", 0, 10, init=init)])

    unguided = frames(1.0)
    assert torch.equal(frames(0.0), frames(1.0, tokenize=lambda text: null))
    assert not torch.equal(frames(0.0), unguided)
    assert not torch.equal(frames(3.0), unguided)
    with pytest.raises(UserError, match="guidance=-1"):
        CausalGenerator("t", model, codec, policy, FlowSampler(2, 3.0), fixed_tokens, guidance=-1)
