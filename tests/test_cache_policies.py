"""Each policy's visible set and positions per chunk, against hand-written expectations."""

from __future__ import annotations

import pytest

from adabench.adastate import AdaptiveState
from adabench.attention import Segment
from adabench.baselines.ff_anchor import FirstFrameAnchor
from adabench.baselines.sliding_window import SlidingWindow
from adabench.cache import CachedItem
from adabench.errors import UserError
from adabench.registry import POLICIES

A, S, W = Segment.ANCHOR, Segment.STATE, Segment.WINDOW


def seen(layout):
    """(kind-letter + index, segment, position) per visible key, for compact expectations."""
    return [(("f" if k.item.kind == "frame" else "s") + str(k.item.index), k.segment, k.position) for k in layout.keys]


def test_sliding_window_absolute():
    p = SlidingWindow(window=4)
    l0 = p.layout(0, 3, committed=0, has_state=False)
    assert seen(l0) == [] and l0.frame_positions == (0, 1, 2) and l0.state_positions == ()
    l1 = p.layout(3, 3, committed=3, has_state=False)
    assert seen(l1) == [("f0", W, 0), ("f1", W, 1), ("f2", W, 2)] and l1.frame_positions == (3, 4, 5)
    l2 = p.layout(6, 3, committed=6, has_state=False)
    assert seen(l2) == [("f2", W, 2), ("f3", W, 3), ("f4", W, 4), ("f5", W, 5)]
    l9 = p.layout(600, 3, committed=600, has_state=False)
    assert seen(l9) == [("f596", W, 596), ("f597", W, 597), ("f598", W, 598), ("f599", W, 599)]
    assert l9.frame_positions == (600, 601, 602)


def test_sliding_window_relative_is_right_aligned_and_index_free():
    p = SlidingWindow(window=4, pos="relative")
    l1 = p.layout(3, 3, committed=3, has_state=False)
    assert seen(l1) == [("f0", W, 1), ("f1", W, 2), ("f2", W, 3)] and l1.frame_positions == (4, 5, 6)
    l2 = p.layout(6, 3, committed=6, has_state=False)
    assert seen(l2) == [("f2", W, 0), ("f3", W, 1), ("f4", W, 2), ("f5", W, 3)] and l2.frame_positions == (4, 5, 6)
    l9 = p.layout(600, 3, committed=600, has_state=False)
    assert [k.position for k in l9.keys] == [0, 1, 2, 3] and l9.frame_positions == (4, 5, 6)


def test_ff_anchor_absolute_keeps_frame_zero():
    p = FirstFrameAnchor()            # sink 1, window 3
    assert seen(p.layout(0, 3, 0, False)) == []
    assert seen(p.layout(3, 3, 3, False)) == [("f0", A, 0), ("f1", W, 1), ("f2", W, 2)]
    assert seen(p.layout(6, 3, 6, False)) == [("f0", A, 0), ("f3", W, 3), ("f4", W, 4), ("f5", W, 5)]
    l = p.layout(30, 3, 30, False)
    assert seen(l) == [("f0", A, 0), ("f27", W, 27), ("f28", W, 28), ("f29", W, 29)] and l.frame_positions == (30, 31, 32)


def test_ff_anchor_relative_and_larger_sink():
    p = FirstFrameAnchor(sink=1, window=3, pos="relative")
    l = p.layout(30, 3, 30, False)
    assert seen(l) == [("f0", A, 0), ("f27", W, 1), ("f28", W, 2), ("f29", W, 3)] and l.frame_positions == (4, 5, 6)
    p3 = POLICIES.build("ff-anchor:sink=3,window=9")
    assert (p3.sink, p3.window, p3.pos, p3.budget) == (3, 9, "absolute", 12)
    l = p3.layout(30, 3, 30, False)
    assert seen(l)[:3] == [("f0", A, 0), ("f1", A, 1), ("f2", A, 2)]
    assert [k.item.index for k in l.keys[3:]] == list(range(21, 30))


def test_adastate_relative_layout_is_the_same_at_every_chunk():
    p = AdaptiveState(gap=0)          # state 1, window 3, relative, contiguous
    l0 = p.layout(0, 3, 0, has_state=False)
    assert seen(l0) == [] and l0.state_positions == (0,) and l0.frame_positions == (4, 5, 6)
    l1 = p.layout(3, 3, 3, has_state=True)
    assert seen(l1) == [("s0", S, 0), ("f0", W, 1), ("f1", W, 2), ("f2", W, 3)]
    for start in (6, 60, 600):
        l = p.layout(start, 3, start, has_state=True)
        assert seen(l) == [("s0", S, 0)] + [(f"f{start - 3 + i}", W, 1 + i) for i in range(3)]
        assert l.state_positions == (0,) and l.frame_positions == (4, 5, 6)


def test_adastate_default_puts_each_chunk_where_a_training_clip_ends():
    """State 1, window 3, gap 14: the chunk at 18-20 (the last chunk of a 21-frame clip), the
    window at 15-17, the state at 0, at every chunk."""
    p = AdaptiveState()
    for start in (3, 6, 600):
        l = p.layout(start, 3, start, has_state=True)
        assert seen(l) == [("s0", S, 0)] + [(f"f{start - 3 + i}", W, 15 + i) for i in range(3)]
        assert l.state_positions == (0,) and l.frame_positions == (18, 19, 20)


def test_adastate_absolute_state_sits_before_the_window():
    p = AdaptiveState(pos="absolute", gap=0)
    l = p.layout(6, 3, 6, has_state=True)
    # state born with the chunk at 3: 3 - window(3) - state(1) = -1; the new state: 6 - 3 - 1 = 2
    assert seen(l) == [("s0", S, -1), ("f3", W, 3), ("f4", W, 4), ("f5", W, 5)]
    assert l.state_positions == (2,) and l.frame_positions == (6, 7, 8)


def test_adastate_gap_leaves_empty_positions_before_the_window():
    rel = AdaptiveState(gap=2)
    l = rel.layout(9, 3, 9, has_state=True)
    assert seen(l) == [("s0", S, 0), ("f6", W, 3), ("f7", W, 4), ("f8", W, 5)]
    assert l.state_positions == (0,) and l.frame_positions == (6, 7, 8)
    assert rel.budget == 4 and rel.spec().endswith("gap=2")
    ab = AdaptiveState(pos="absolute", gap=2)
    l = ab.layout(6, 3, 6, has_state=True)
    # state born with the chunk at 3: 3 - window(3) - gap(2) - state(1) = -3; the new state: 6 - 3 - 2 - 1 = 0
    assert seen(l) == [("s0", S, -3), ("f3", W, 3), ("f4", W, 4), ("f5", W, 5)]
    assert l.state_positions == (0,) and l.frame_positions == (6, 7, 8)


def test_image_to_video_prefill_then_chunks():
    p = FirstFrameAnchor()
    pre = p.layout(0, 1, 0, has_state=False, with_state=False)
    assert seen(pre) == [] and pre.frame_positions == (0,)
    assert seen(p.layout(1, 3, 1, False)) == [("f0", A, 0)]
    assert seen(p.layout(4, 3, 4, False)) == [("f0", A, 0), ("f1", W, 1), ("f2", W, 2), ("f3", W, 3)]
    a = AdaptiveState()
    assert a.layout(0, 1, 0, False, with_state=False).state_positions == ()


def test_equal_budget_by_default():
    budgets = {name: POLICIES.build(name).budget for name in ("ff-anchor", "sliding-window", "adastate")}
    assert budgets == {"ff-anchor": 4, "sliding-window": 4, "adastate": 4}


def test_physical_slots_ring_and_fixed():
    p = FirstFrameAnchor(sink=1, window=3)
    assert p.slot(CachedItem("frame", 0)) == 0
    assert [p.slot(CachedItem("frame", f)) for f in range(1, 8)] == [1, 2, 3, 1, 2, 3, 1]
    a = AdaptiveState(state=2, window=3)
    assert a.slot(CachedItem("state", 1)) == 1 and a.slot(CachedItem("frame", 0)) == 2


@pytest.mark.parametrize("spec, word", [
    ("ff-anchor:sink=0", "sink"), ("adastate:state=0", "state"), ("sliding-window:window=-1", "window"),
    ("sliding-window:pos=diagonal", "pos"), ("adastate:windw=3", "windw"), ("adastate:gap=-1", "gap"),
])
def test_bad_policy_parameters_are_user_errors(spec, word):
    with pytest.raises(UserError, match=word):
        POLICIES.build(spec)
