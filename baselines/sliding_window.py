"""Sliding window: only the most recent ``window`` frames are cached (no anchor, no state)."""

from __future__ import annotations

from adabench.cache import CachePolicy


class SlidingWindow(CachePolicy):
    name = "sliding-window"

    def __init__(self, window: int = 4, pos: str = "absolute") -> None:
        super().__init__(sink=0, state=0, window=window, pos=pos)
