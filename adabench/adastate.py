"""AdaState's adaptive state (Dalva & Yanardag, 2026) as a cache policy.

``state`` hidden latent frames are denoised from fresh noise together with every chunk,
never rendered, and their clean K/V overwrite the state slot after the chunk; the next
chunk attends to that state plus a rolling window. There is no first-frame sink. The
default ``relative`` layout puts the state at slot 0, the window next and the current
chunk last at every chunk, so the state transition is the same function at every step.
The paper leaves the exact indices open; ``gap`` leaves that many empty positions between
the state and the window, so the state does not sit where the frame just before the
window would (a backbone trained on contiguous clips reads it as one more recent frame).
"""

from __future__ import annotations

from adabench.cache import CachePolicy
from adabench.errors import UserError

# With the shipped cache (state 1, window 3, chunks of 3) a gap of 14 gives every chunk the
# positions of the last chunk of a 21-frame training clip (18-20), its window those of the
# frames before it (15-17), and the state the first frame's position (0): a layout the
# backbone was trained on, with the state where a clip's oldest frame sits. Measured: the
# AdaState fine-tune moves the camera at 0.61 of the true speed with it, 0.52 without
# (21 frames, seeds 2 and 3; docs/models.md).
DEFAULT_GAP = 14


class AdaptiveState(CachePolicy):
    name = "adastate"

    def __init__(self, state: int = 1, window: int = 3, pos: str = "relative", gap: int = DEFAULT_GAP) -> None:
        super().__init__(sink=0, state=state, window=window, pos=pos, gap=gap)
        if self.state < 1:
            raise UserError(f"adastate needs state >= 1 (got {state}); use sliding-window for no state")
