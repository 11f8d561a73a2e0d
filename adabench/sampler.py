"""Few-step flow-matching sampler (Euler on a shifted schedule), optionally staggered.

Staggered ("pyramid", as in rolling diffusion and diffusion forcing) sampling denoises the
frames of a chunk in one batch of passes but lets frame k start ``k * stagger`` steps after
the chunk's first frame, so later frames are resolved while earlier ones are already cleaner
and can be copied forward: a jointly denoised chunk otherwise has to place its last frame
``F`` frames away from the last clean context (docs/models.md, "Why the speed is lost").
Every frame still takes the same ``steps`` Euler steps of the schedule; a chunk of F frames
costs ``steps + (F - 1) * stagger`` model passes instead of ``steps``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from adabench.errors import UserError

# Euler steps per frame at most: 25 times the 4 the embedded models are fine-tuned and shipped
# with (docs/models.md goes to 32). A documented cap, not a property of flow matching: beyond
# it a rollout only gets slower (each step is one model pass per chunk), so a typo such as
# steps=100000 is refused instead of running for minutes.
MAX_STEPS = 100


def shifted_schedule(steps: int, shift: float) -> torch.Tensor:
    """Times from 1 (noise) to 0 (clean), [steps + 1]; shift > 1 spends more steps at high noise,
    as the real systems' 1000/750/500/250 schedule with shift 5 does."""
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return shift_time(s, shift).float()


def shift_time(s: torch.Tensor, shift: float) -> torch.Tensor:
    """The schedule's time warp: s in [0, 1] (linear noise level) -> shift * s / (1 + (shift - 1) * s)."""
    return shift * s / (1.0 + (shift - 1.0) * s)


def frame_lags(state_frames: int, frames: int, stagger: int) -> torch.Tensor:
    """Steps each frame of a block starts after the first, [state_frames + frames]: state frames
    start with the chunk's first frame; content frame k after k * stagger steps."""
    lag = torch.arange(frames) * stagger
    return torch.cat([torch.zeros(state_frames, dtype=lag.dtype), lag])


class FlowSampler:
    """Integrates dx/dt = v(x, t) from t=1 to t=0 with Euler steps, per frame."""

    def __init__(self, steps: int = 4, shift: float = 3.0, stagger: int = 0) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise UserError(f"sampler steps={steps!r} is invalid; accepted: an integer >= 1 and <= {MAX_STEPS} "
                            f"(the documented cap; the shipped models use 4)")
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not (math.isfinite(shift) and shift > 0):
            raise UserError(f"sampler shift={shift!r} is invalid; accepted: a finite number > 0")
        if isinstance(stagger, bool) or not isinstance(stagger, int) or not 0 <= stagger <= steps:
            raise UserError(f"sampler stagger={stagger!r} is invalid; accepted: an integer >= 0 and <= steps ({steps}) "
                            f"(steps between the starts of consecutive frames of a chunk; beyond steps a frame "
                            f"would wait after the one before it had finished)")
        self.steps, self.shift, self.stagger = steps, float(shift), stagger
        self.times = shifted_schedule(steps, self.shift)

    def passes(self, frames: int) -> int:
        """Model passes that denoise a chunk of ``frames`` content frames."""
        return self.steps + max(frames - 1, 0) * self.stagger

    def frame_times(self, lags: torch.Tensor) -> list[torch.Tensor]:
        """Each frame's time before every pass and after the last, [passes + 1] x [n]."""
        index = torch.arange(self.steps + int(lags.max()) + 1)[:, None] - lags[None, :]   # [P + 1, n]
        return list(self.times[index.clamp(0, self.steps)])

    def sample(self, velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
               state_frames: int = 0) -> torch.Tensor:
        """x0 from ``noise`` [B, n, ...]; ``velocity(x, t)`` predicts noise - x0 with t either a
        float (all frames at one time) or per-frame times [n]. The first ``state_frames`` frames
        are hidden state (never staggered)."""
        lags = frame_lags(state_frames, noise.shape[1] - state_frames, self.stagger)
        x = noise
        if not bool(lags.any()):       # every frame at one time: the classic sampler
            for t_now, t_next in zip(self.times[:-1].tolist(), self.times[1:].tolist()):
                x = x + (t_next - t_now) * velocity(x, t_now)
            return x
        times = self.frame_times(lags)
        for t_now, t_next in zip(times[:-1], times[1:]):
            dt = (t_next - t_now).to(x.device, x.dtype).view(1, -1, *([1] * (x.dim() - 2)))   # [1, n, 1, ...]
            x = x + dt * velocity(x, t_now)
        return x

    def describe(self) -> dict:
        return {"sampler": "euler", "steps": self.steps, "shift": self.shift, "stagger": self.stagger}
