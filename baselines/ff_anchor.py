"""First-frame anchor: the first ``sink`` frames stay in the cache for the whole rollout
as an attention sink, plus a rolling window (LongLive, Rolling Forcing, Infinity-RoPE)."""

from __future__ import annotations

from adabench.cache import CachePolicy
from adabench.errors import UserError


class FirstFrameAnchor(CachePolicy):
    name = "ff-anchor"

    def __init__(self, sink: int = 1, window: int = 3, pos: str = "absolute") -> None:
        super().__init__(sink=sink, state=0, window=window, pos=pos)
        if self.sink < 1:
            raise UserError(f"ff-anchor needs sink >= 1 (got {sink}); use sliding-window for no anchor")
