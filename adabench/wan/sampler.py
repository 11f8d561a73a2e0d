"""The few-step sampler of the distilled Wan family: predict x0 at each listed timestep, re-noise.

At each timestep ``t`` of the list the model's flow prediction ``v`` gives
``x0 = x_t - sigma(t) * v``; unless ``t`` is the last one, x0 is re-noised with fresh noise to
the next timestep, ``x = (1 - sigma') * x0 + sigma' * noise``. The output is the last x0.

Timesteps are on Wan's 0..1000 scale. The schedule is upstream's 1000-point flow-matching
grid warped by ``shift`` (``adabench.sampler.shift_time``): ``sigma(t)`` is the sigma of the
grid point nearest ``t``, as upstream's scheduler looks it up. A published step list is
either *warped* onto that grid (Self-Forcing, LongLive: 1000, 750, 500, 250 become 1000,
937.5, 833.3, 625 at shift 5) or used as it is (CausVid: 1000, 757, 522 at shift 8).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from adabench.errors import UserError
from adabench.sampler import MAX_STEPS, shift_time

GRID = 1000           # points of upstream's training schedule


def schedule_grid(shift: float) -> torch.Tensor:
    """Upstream's timesteps, [1000] float64 from 1000 down to about 1000 * shift(0.001)."""
    s = torch.linspace(1.0, 0.0, GRID + 1, dtype=torch.float64)[:-1]
    return shift_time(s, shift) * GRID


def parse_steps(steps: object) -> tuple[float, ...]:
    """``4`` (evenly spaced from 1000: 1000, 750, 500, 250) or ``"1000/757/522"`` -> timesteps."""
    if isinstance(steps, int) and not isinstance(steps, bool):
        if not 1 <= steps <= MAX_STEPS:
            raise UserError(f"steps={steps} is invalid; accepted: an integer from 1 to {MAX_STEPS}, or timesteps "
                            "like 1000/750/500/250")
        return tuple(GRID * (1 - i / steps) for i in range(steps))
    if isinstance(steps, str):
        try:
            values = tuple(float(v) for v in steps.split("/"))
        except ValueError:
            values = ()
        if values and all(math.isfinite(v) and 0 < v <= GRID for v in values) and list(values) == sorted(values, reverse=True) \
                and len(set(values)) == len(values) and len(values) <= MAX_STEPS:
            return values
    raise UserError(f"steps={steps!r} is invalid; accepted: a number of steps (1 to {MAX_STEPS}) or decreasing "
                    "timesteps in (0, 1000] separated by '/', e.g. 1000/750/500/250")


class DistilledSampler:
    """x0 prediction at each listed timestep, re-noised with fresh seeded noise in between."""

    def __init__(self, steps: tuple[float, ...], shift: float, warp: bool, context_noise: float = 0.0) -> None:
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not (math.isfinite(shift) and shift > 0):
            raise UserError(f"shift={shift!r} is invalid; accepted: a finite number > 0")
        if isinstance(context_noise, bool) or not isinstance(context_noise, (int, float)) \
                or not 0 <= context_noise < GRID:
            raise UserError(f"context_noise={context_noise!r} is invalid; accepted: a timestep in [0, 1000) "
                            "(0: clean context, as published)")
        self.published, self.shift, self.warp = tuple(float(s) for s in steps), float(shift), bool(warp)
        self.context_noise = float(context_noise)
        self.grid = schedule_grid(self.shift)
        if warp:
            with_zero = torch.cat([self.grid, torch.zeros(1, dtype=torch.float64)])
            for s in self.published:
                if s != int(s):
                    raise UserError(f"steps {s} cannot be warped; accepted: integer timesteps with warp=true")
            self.timesteps = tuple(float(with_zero[GRID - int(s)]) for s in self.published)
        else:
            self.timesteps = self.published

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def passes(self, frames: int) -> int:
        """Model passes that denoise a chunk (any length): one per timestep."""
        return len(self.timesteps)

    def sigma(self, t: float) -> float:
        """Sigma of the grid point nearest ``t`` (0 for t = 0)."""
        if t <= 0:
            return 0.0
        return float(self.grid[(self.grid - t).abs().argmin()]) / GRID

    def sample(self, flow: Callable[[torch.Tensor, float], torch.Tensor], noise: Callable[[], torch.Tensor]) -> torch.Tensor:
        """x0 of a block: ``noise()`` draws fresh float32 noise of the block's shape; ``flow(x, t)`` is the
        model's prediction at timestep t. Runs in float32 whatever the model's dtype."""
        x = noise()
        x0 = x
        for i, t in enumerate(self.timesteps):
            x0 = x - self.sigma(t) * flow(x, t).float()
            if i + 1 < len(self.timesteps):
                s = self.sigma(self.timesteps[i + 1])
                x = (1.0 - s) * x0 + s * noise()
        return x0

    def context_input(self, clean: torch.Tensor, noise: Callable[[], torch.Tensor]) -> torch.Tensor:
        """What the commit pass sees: the clean block, re-noised to ``context_noise`` if it is > 0."""
        if self.context_noise <= 0:
            return clean
        s = self.sigma(self.context_noise)
        return (1.0 - s) * clean + s * noise()

    def describe(self) -> dict:
        return {"sampler": "x0-renoise", "timesteps": [round(t, 4) for t in self.timesteps],
                "published_steps": list(self.published), "shift": self.shift, "warp": self.warp,
                "context_noise": self.context_noise, "steps": self.steps}
