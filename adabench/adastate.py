"""AdaState's adaptive state (Dalva & Yanardag, 2026) as a cache policy.

``state`` hidden latent frames are denoised from fresh noise together with every chunk,
never rendered, and their clean K/V overwrite the state slot after the chunk; the next
chunk attends to that state plus a rolling window. There is no first-frame sink. The
default ``relative`` layout puts the state at slot 0, the window next and the current
chunk last at every chunk, so the state transition is the same function at every step.
"""

from __future__ import annotations

from adabench.cache import CachePolicy
from adabench.errors import UserError


class AdaptiveState(CachePolicy):
    name = "adastate"

    def __init__(self, state: int = 1, window: int = 3, pos: str = "relative") -> None:
        super().__init__(sink=0, state=state, window=window, pos=pos)
        if self.state < 1:
            raise UserError(f"adastate needs state >= 1 (got {state}); use sliding-window for no state")
