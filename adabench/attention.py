"""The single self-attention function of the backbone, where probes attach.

Every self-attention call of the DiT goes through :func:`attend` with post-RoPE q, k, v
and a :class:`KeyLayout` that labels each key token with its cache segment (anchor /
state / window / current) and its frame slot. A probe sees exactly what the softmax sees
and must not change the result: the output is computed the same way with or without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

import torch
import torch.nn.functional as F


class Segment(IntEnum):
    """What a key frame is, from the cache's point of view."""

    ANCHOR = 0    # permanent sink frame(s) (first-frame anchor)
    STATE = 1     # AdaState's hidden state (cached previous state, or the state being denoised)
    WINDOW = 2    # rolling window of recent frames
    CURRENT = 3   # the chunk being generated


@dataclass(frozen=True)
class KeyLayout:
    """Per-frame description of the keys one attention call sees, in key order.

    ``segments[i]`` and ``positions[i]`` describe key frame i (``tokens_per_frame`` tokens
    each); the last ``query_frames`` entries are the query block itself (current chunk,
    preceded by state frames being denoised, if any).
    """

    segments: tuple[Segment, ...]
    positions: tuple[float, ...]
    tokens_per_frame: int
    query_frames: int

    @property
    def num_frames(self) -> int:
        return len(self.segments)

    @property
    def cached_frames(self) -> int:
        return self.num_frames - self.query_frames


class ProbeFn(Protocol):
    """Observer of attention calls; gets the exact softmax inputs, returns nothing."""

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, scale: float,
                 layout: KeyLayout | None, mask: torch.Tensor | None) -> None: ...


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, layer: int,
           layout: KeyLayout | None = None, mask: torch.Tensor | None = None,
           probe: ProbeFn | None = None) -> torch.Tensor:
    """Softmax attention. q [B, H, Nq, Dh], k/v [B, H, Nk, Dh], mask [Nq, Nk] bool (True = visible).

    Returns [B, H, Nq, Dh]. The probe, when given, is called with detached inputs before the
    attention is computed; nothing it does can reach the output.
    """
    scale = q.shape[-1] ** -0.5
    if probe is not None:
        probe(layer, q.detach(), k.detach(), scale, layout, None if mask is None else mask.detach())
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
