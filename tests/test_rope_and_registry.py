"""RoPE's relative property and the registry's argument strings and suggestions."""

from __future__ import annotations

import pytest
import torch

from adabench.errors import UserError
from adabench.registry import GENERATORS, POLICIES, parse_spec, split_specs
from adabench.rope import apply_rope, rope_angles


def _rot(x, t, y, xx):
    ang = rope_angles(torch.tensor([t]), torch.tensor([y]), torch.tensor([xx]), 8, 32)
    return apply_rope(x, ang.cos().float(), ang.sin().float())


def test_rope_scores_depend_only_on_offsets():
    q, k = torch.randn(1, 32), torch.randn(1, 32)
    a = (_rot(q, 10.0, 2.0, 3.0) * _rot(k, 7.0, 1.0, 1.0)).sum()
    b = (_rot(q, 103.0, 5.0, 4.0) * _rot(k, 100.0, 4.0, 2.0)).sum()   # same offsets (3, 1, 2)
    c = (_rot(q, 104.0, 5.0, 4.0) * _rot(k, 100.0, 4.0, 2.0)).sum()   # time offset 4
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, c, atol=1e-3)
    assert torch.allclose(_rot(q, 50.0, 3.0, 1.0).norm(), q.norm())


def test_parse_spec_types():
    assert parse_spec("ff-anchor:sink=3,window=9,pos=relative,x=0.5,y=true") == (
        "ff-anchor", {"sink": 3, "window": 9, "pos": "relative", "x": 0.5, "y": True})
    with pytest.raises(UserError, match="key=value"):
        parse_spec("ff-anchor:sink")


def test_unknown_names_suggest():
    with pytest.raises(UserError, match="did you mean 'adastate'"):
        GENERATORS.entry("adastat")
    with pytest.raises(UserError, match="did you mean 'window'"):
        POLICIES.build("sliding-window:windo=3")


def test_adastate_generator_leaves_the_shipped_gap_before_its_window():
    gen = GENERATORS.build("adastate:checkpoint=random")
    assert gen.policy.spec() == "adastate:sink=0,state=1,window=3,pos=relative,gap=14"
    assert GENERATORS.build("adastate:checkpoint=random,gap=0").policy.gap == 0


def test_embedded_generators_stagger_their_chunks_at_shift_5_by_default():
    gen = GENERATORS.build("adastate:checkpoint=random")
    assert gen.sampler.stagger == 1 and gen.describe()["stagger"] == 1 and gen.sampler.shift == 5.0
    assert gen.sampler.passes(gen.chunk_frames) == 4 + 2
    assert GENERATORS.build("adastate:checkpoint=random,stagger=0").sampler.passes(3) == 4
    with pytest.raises(UserError, match="stagger=-1 is invalid; accepted: an integer >= 0"):
        GENERATORS.build("base:checkpoint=random,stagger=-1")


def test_embedded_generators_take_a_chunk_size():
    assert GENERATORS.build("ff-anchor:checkpoint=random").chunk_frames == 3       # the training chunking
    gen = GENERATORS.build("adastate:checkpoint=random,chunk=2")
    assert gen.chunk_frames == 2 and gen.describe()["chunk_frames"] == 2
    chunks = list(gen.stream("a slow pan left over a city with red circles", seed=0, num_frames=7))
    assert [c.num_frames for c in chunks] == [2, 2, 2, 1]
    for bad in ("0", "1.5", "true"):
        with pytest.raises(UserError, match="chunk=.* is invalid; accepted: an integer >= 1"):
            GENERATORS.build(f"base:checkpoint=random,chunk={bad}")


def test_spec_lists_keep_each_specs_own_arguments():
    text = "base:checkpoint=runs/a.safetensors,chunk=1, ff-anchor,adastate:chunk=1,window=2,panworld-gt"
    assert split_specs(text) == ["base:checkpoint=runs/a.safetensors,chunk=1", "ff-anchor",
                                 "adastate:chunk=1,window=2", "panworld-gt"]
    assert split_specs("") == [] and split_specs("flow,motion-fidelity") == ["flow", "motion-fidelity"]
    assert parse_spec(split_specs("base:checkpoint=x,chunk=1")[0]) == ("base", {"checkpoint": "x", "chunk": 1})
