"""KV-cache policies and the preallocated per-layer frame cache they drive.

A :class:`CachePolicy` is pure bookkeeping: for the chunk about to be generated it says
which cached frames are visible, in what key order, with which segment label and at
which RoPE time position (:meth:`CachePolicy.layout`). Every policy here is the same
three-part structure with different sizes and positions:

    [anchor frames (sink)] [state frames] [rolling window of recent frames] | query block

:class:`FrameCache` holds K/V for ``sink + state + window`` frame slots per layer, allocated
once. Anchors live in fixed slots, state frames are overwritten in place, window frames go
round a ring, so committing a chunk touches only that chunk's slots: O(1) in rollout length.

Positional schemes: ``absolute`` caches K rotated at its birth position (the video frame
index; Self-Forcing, LongLive); ``relative`` caches raw K and rotates it by its slot in a
fixed layout at read time (Infinity-RoPE, AdaState): anchors/state at 0.., the window
right-aligned after them, the current chunk last, whatever the chunk's index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from adabench.attention import KeyLayout, Segment
from adabench.errors import UserError

POSITION_SCHEMES = ("absolute", "relative")


@dataclass(frozen=True)
class CachedItem:
    """A logical thing the cache can hold: video frame ``index`` or state slot ``index``."""

    kind: Literal["frame", "state"]
    index: int


@dataclass(frozen=True)
class VisibleFrame:
    item: CachedItem
    segment: Segment
    position: float


@dataclass(frozen=True)
class ChunkLayout:
    """What the query block of one chunk sees, and where everything sits in time."""

    keys: tuple[VisibleFrame, ...]          # cached frames visible to the queries, in key order
    state_positions: tuple[float, ...]      # positions of the state frames denoised with the chunk
    frame_positions: tuple[float, ...]      # positions of the chunk's own frames

    @property
    def query_positions(self) -> tuple[float, ...]:
        return self.state_positions + self.frame_positions

    def key_layout(self, tokens_per_frame: int) -> KeyLayout:
        """Segment label and position of every key frame, the query block included (last)."""
        query_segments = (Segment.STATE,) * len(self.state_positions) + (Segment.CURRENT,) * len(self.frame_positions)
        return KeyLayout(
            segments=tuple(k.segment for k in self.keys) + query_segments,
            positions=tuple(k.position for k in self.keys) + self.query_positions,
            tokens_per_frame=tokens_per_frame,
            query_frames=len(query_segments),
        )


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"policy parameter {name}={value!r} is invalid; accepted: an integer >= {minimum}")
    return value


class CachePolicy:
    """Anchor frames + state frames + rolling window, under one positional scheme.

    Subclasses only choose defaults and a name; a new policy is one class and one
    registry entry (see ``adabench/builtins.py``).
    """

    name = "cache-policy"

    def __init__(self, sink: int = 0, state: int = 0, window: int = 4, pos: str = "absolute", gap: int = 0) -> None:
        self.sink = _count("sink", sink, 0)
        self.state = _count("state", state, 0)
        self.window = _count("window", window, 0)
        if pos not in POSITION_SCHEMES:
            raise UserError(f"policy parameter pos={pos!r} is invalid; accepted: {', '.join(POSITION_SCHEMES)}")
        self.pos = pos
        # empty positions between the fixed slots and the window where those slots' positions are
        # synthetic (relative layout, the absolute scheme's state); why: adabench/adastate.py
        self.gap = _count("gap", gap, 0)

    # --- description ------------------------------------------------------------------
    @property
    def budget(self) -> int:
        """Cached frames visible to a chunk once the cache is full (anchor + state + window)."""
        return self.sink + self.state + self.window

    @property
    def capacity(self) -> int:
        """Physical frame slots per layer: exactly the budget (every slot is visible when full)."""
        return self.budget

    def describe(self) -> dict:
        return {"policy": self.name, "sink": self.sink, "state": self.state, "window": self.window,
                "pos": self.pos, "gap": self.gap, "budget_frames": self.budget}

    def spec(self) -> str:
        gap = f",gap={self.gap}" if self.gap else ""
        return f"{self.name}:sink={self.sink},state={self.state},window={self.window},pos={self.pos}{gap}"

    # --- bookkeeping --------------------------------------------------------------------
    def layout(self, start: int, num_frames: int, committed: int, has_state: bool,
               with_state: bool = True) -> ChunkLayout:
        """Layout for the chunk of frames ``start .. start+num_frames-1``.

        ``committed`` frames (0 .. committed-1) are already in the cache history;
        ``has_state`` says whether a state has been committed; ``with_state`` whether this
        block denoises state frames (False for image-to-video prefill, which has no state).
        """
        anchors = list(range(min(self.sink, committed)))
        first_window = max(self.sink, committed - self.window) if self.window else committed
        window = list(range(first_window, committed))
        states = list(range(self.state)) if has_state else []
        n_state_queries = self.state if with_state else 0
        fixed = self.sink + self.state

        keys: list[VisibleFrame] = []
        if self.pos == "relative":
            keys += [VisibleFrame(CachedItem("frame", f), Segment.ANCHOR, float(i)) for i, f in enumerate(anchors)]
            keys += [VisibleFrame(CachedItem("state", j), Segment.STATE, float(self.sink + j)) for j in states]
            offset = fixed + self.gap + self.window - len(window)     # window right-aligned before the chunk
            keys += [VisibleFrame(CachedItem("frame", f), Segment.WINDOW, float(offset + i)) for i, f in enumerate(window)]
            state_pos = tuple(float(self.sink + j) for j in range(n_state_queries))
            frame_pos = tuple(float(fixed + self.gap + self.window + i) for i in range(num_frames))
        else:
            keys += [VisibleFrame(CachedItem("frame", f), Segment.ANCHOR, float(f)) for f in anchors]
            keys += [VisibleFrame(CachedItem("state", j), Segment.STATE, float(self._state_position(start - num_frames, j)))
                     for j in states]
            keys += [VisibleFrame(CachedItem("frame", f), Segment.WINDOW, float(f)) for f in window]
            state_pos = tuple(float(self._state_position(start, j)) for j in range(n_state_queries))
            frame_pos = tuple(float(start + i) for i in range(num_frames))
        return ChunkLayout(tuple(keys), state_pos, frame_pos)

    def _state_position(self, chunk_start: int, j: int) -> int:
        """Absolute scheme: a state born with the chunk at ``chunk_start`` sits where the
        relative layout would put it, shifted to that chunk's time."""
        return chunk_start - self.window - self.gap - self.state + j

    def slot(self, item: CachedItem) -> int | None:
        """Physical slot of an item (None: this policy does not keep it)."""
        if item.kind == "state":
            return self.sink + item.index if item.index < self.state else None
        if item.index < self.sink:
            return item.index
        if self.window == 0:
            return None
        return self.sink + self.state + (item.index - self.sink) % self.window


class FrameCache:
    """Preallocated K/V for ``policy.capacity`` frame slots in every layer.

    Buffers are [B, H, slots, tokens_per_frame, Dh] per layer. In relative mode they hold
    raw (unrotated) K; in absolute mode K rotated at birth.
    """

    def __init__(self, policy: CachePolicy, depth: int, heads: int, head_dim: int, tokens_per_frame: int,
                 batch: int = 1, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.policy = policy
        self.tokens_per_frame = tokens_per_frame
        shape = (batch, heads, policy.capacity, tokens_per_frame, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.held: list[CachedItem | None] = [None] * policy.capacity   # what each slot holds

    def detach(self) -> None:
        """Cut autograd history at the stored K/V (truncated back-propagation through the cache)."""
        self.k = [k.detach() for k in self.k]
        self.v = [v.detach() for v in self.v]

    @property
    def bytes_per_slot(self) -> int:
        k = self.k[0]
        return 2 * len(self.k) * k[:, :, 0].numel() * k.element_size()

    @property
    def bytes_held(self) -> int:
        return self.bytes_per_slot * sum(h is not None for h in self.held)

    def slot_index(self, keys: tuple[VisibleFrame, ...]) -> torch.Tensor:
        """Physical slots of the visible frames in key order [n], checked against what the slots hold."""
        slots = [self.policy.slot(vf.item) for vf in keys]
        for vf, s in zip(keys, slots):
            if s is None or self.held[s] != vf.item:
                raise RuntimeError(f"cache slot for {vf.item} holds {None if s is None else self.held[s]}")
        return torch.tensor(slots, dtype=torch.long, device=self.k[0].device)

    def gather(self, layer: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored K and V of the slots in ``index`` (from :meth:`slot_index`), each [B, H, n * tokens_per_frame, Dh]."""
        k = self.k[layer].index_select(2, index)
        v = self.v[layer].index_select(2, index)
        b, h, n, t, d = k.shape
        return k.reshape(b, h, n * t, d), v.reshape(b, h, n * t, d)

    def write(self, items: list[CachedItem], layer_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Store K/V of ``items`` (per layer [B, H, len(items) * tokens_per_frame, Dh]) into their slots.

        Items the policy does not keep are skipped. Out of place under autograd (training
        back-propagates through the cache), in place otherwise.
        """
        kept = [(i, self.policy.slot(item)) for i, item in enumerate(items)]
        kept = [(i, s) for i, s in kept if s is not None]
        last_writer = {s: i for i, s in kept}                 # a ring slot written twice keeps the newer frame
        src = torch.tensor(list(last_writer.values()), dtype=torch.long)
        dst = torch.tensor(list(last_writer.keys()), dtype=torch.long)
        if len(dst) == 0:
            return
        for layer, (k, v) in enumerate(layer_kv):
            b, h, _, d = k.shape
            k_frames = k.reshape(b, h, len(items), self.tokens_per_frame, d).index_select(2, src.to(k.device))
            v_frames = v.reshape(b, h, len(items), self.tokens_per_frame, d).index_select(2, src.to(v.device))
            idx = dst.to(k.device)
            if torch.is_grad_enabled() and (k.requires_grad or self.k[layer].requires_grad):
                self.k[layer] = self.k[layer].index_copy(2, idx, k_frames)
                self.v[layer] = self.v[layer].index_copy(2, idx, v_frames)
            else:
                self.k[layer].index_copy_(2, idx, k_frames)
                self.v[layer].index_copy_(2, idx, v_frames)
        for s, i in last_writer.items():
            self.held[s] = items[i]


def build_policy(owner: str, policy: str, policy_args: dict, owner_keys: tuple[str, ...],
                 defaults: dict | None = None) -> CachePolicy:
    """The registered cache policy ``policy`` (a spec, plug-ins included) for a generator ``owner`` whose
    spec mixes its own keys (``owner_keys``) with the policy's (``policy_args``): a key neither takes is a
    one-line error naming both lists. ``defaults`` fill in the policy's keys the spec leaves out."""
    import difflib

    from adabench.registry import POLICIES, accepted_kwargs, parse_spec

    name = parse_spec(str(policy))[0]
    accepted = accepted_kwargs(POLICIES.entry(name).load())          # None: the policy takes **kwargs
    for key in policy_args if accepted is not None else ():
        if key not in accepted:
            close = difflib.get_close_matches(key, [*accepted, *owner_keys], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{owner} has no parameter {key!r}{hint}; accepted: {', '.join(owner_keys)} and the "
                            f"parameters of cache policy {name!r}: {', '.join(sorted(accepted)) or 'none'}")
    filled = {k: v for k, v in (defaults or {}).items() if accepted is None or k in accepted}
    built = POLICIES.build(str(policy), **{**filled, **policy_args})
    if not isinstance(built, CachePolicy):
        raise UserError(f"{owner}: cache policy {name!r} builds a {type(built).__name__}; accepted: a policy "
                        "whose factory returns an adabench.cache.CachePolicy")
    return built
