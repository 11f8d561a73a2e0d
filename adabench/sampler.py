"""Few-step flow-matching sampler (Euler on a shifted schedule)."""

from __future__ import annotations

from typing import Callable

import torch

from adabench.errors import UserError


def shifted_schedule(steps: int, shift: float) -> torch.Tensor:
    """Times from 1 (noise) to 0 (clean), [steps + 1]; shift > 1 spends more steps at high noise,
    as the real systems' 1000/750/500/250 schedule with shift 5 does."""
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * s / (1.0 + (shift - 1.0) * s)).float()


class FlowSampler:
    """Integrates dx/dt = v(x, t) from t=1 to t=0 with Euler steps."""

    def __init__(self, steps: int = 4, shift: float = 3.0) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise UserError(f"sampler steps={steps!r} is invalid; accepted: an integer >= 1")
        if not isinstance(shift, (int, float)) or shift <= 0:
            raise UserError(f"sampler shift={shift!r} is invalid; accepted: a number > 0")
        self.steps, self.shift = steps, float(shift)
        self.times = shifted_schedule(steps, self.shift)

    def sample(self, velocity: Callable[[torch.Tensor, float], torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        """x0 from ``noise``; ``velocity(x, t)`` predicts noise - x0 at time t."""
        x = noise
        for t_now, t_next in zip(self.times[:-1].tolist(), self.times[1:].tolist()):
            x = x + (t_next - t_now) * velocity(x, t_now)
        return x

    def describe(self) -> dict:
        return {"sampler": "euler", "steps": self.steps, "shift": self.shift}
