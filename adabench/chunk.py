"""The unit that flows from a generator to metrics, writers and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Chunk:
    """Frames produced by one step of a streaming generator.

    ``frames`` are RGB floats in [0, 1], shape [F, 3, H, W], on the CPU. Hidden state
    frames (AdaState) never appear here. ``start_frame`` is the video index of
    ``frames[0]``; the last chunk of a rollout may hold fewer frames than the others.
    """

    index: int                      # chunk number within the rollout, from 0
    start_frame: int                # video index of frames[0]
    frames: torch.Tensor            # [F, 3, H, W] float32 in [0, 1]
    fps: float                      # playback frame rate
    timings: dict[str, float] = field(default_factory=dict)   # seconds, per stage ("total", "denoise", ...)
    cache_frames: int = 0           # cached frames visible to this chunk's queries
    cache_bytes: int = 0            # bytes of K/V held in the cache after the chunk is committed
    attention: dict[str, Any] | None = None   # attention-probe statistics, when a probe is attached

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])
