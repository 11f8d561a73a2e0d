"""Motion fidelity: measured camera motion against the prompt's true content velocity.

Per pair the camera motion is the **median flow vector** over the frame (robust to moving
objects and to the borders where content enters); ``true_velocity = (vx, vy)`` is how far
the content moves per frame in px (x right, y down), as PanWorld renders it, which is what
flow measures. Scalars (means over pairs):

- ``motion_vx``, ``motion_vy``: measured velocity, px/frame (always);
- ``motion_ratio``: measured speed along the true direction / true speed
  (``m . t / |t|^2``; 1 = right speed, < 1 = motion damped);
- ``motion_error``: ``|m - t|``, px/frame;
- ``still_motion``: for a still prompt (``|t| < 1e-6``) the measured speed ``|m|``, px/frame,
  in place of the ratio (which is undefined).

Series per window of ``window`` seconds (default 1), a pair belonging to the window of
its later frame.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from adabench.chunk import Chunk
from adabench.errors import UserError
from adabench.metrics.base import MetricInfo, MetricResult
from adabench.metrics.flow import FlowBackend
from adabench.metrics.flow_magnitude import PairFlowMetric, parse_window, second_of, window_means

STILL = 1e-6


def camera_motion(flow: torch.Tensor) -> torch.Tensor:
    """flow [N, 2, H, W] -> median flow vector per pair [N, 2] (x, y)."""
    return flow.float().flatten(2).median(dim=2).values


def fidelity_per_pair(motion: torch.Tensor, true_velocity: Sequence[float]) -> dict[str, torch.Tensor]:
    """Measured motion [P, 2] against the true velocity -> per-pair values [P] by scalar name."""
    t = torch.tensor([float(v) for v in true_velocity], dtype=torch.float64)
    m = motion.double()
    speed2 = float(t.pow(2).sum())
    out = {"motion_vx": m[:, 0], "motion_vy": m[:, 1], "motion_error": (m - t).norm(dim=1)}
    if speed2 < STILL ** 2:
        out["still_motion"] = m.norm(dim=1)
    else:
        out["motion_ratio"] = (m @ t) / speed2
    return out


UNITS = {"motion_vx": "px/frame", "motion_vy": "px/frame", "motion_error": "px/frame",
         "still_motion": "px/frame", "motion_ratio": "ratio"}
DIRECTIONS = {"motion_error": "lower", "still_motion": "lower"}


class MotionFidelity(PairFlowMetric):
    """Streaming motion fidelity; keeps the last frame and three floats per pair."""

    needs = frozenset({"frames", "ground_truth", "device"})

    def __init__(self, true_velocity: Sequence[float] | str | None = None, backend: str | FlowBackend = "dis",
                 window: Any = 1, device: str | None = None) -> None:
        super().__init__(backend, device)
        if isinstance(true_velocity, str):   # from a spec string: "1.5;-0.5" (commas separate arguments)
            true_velocity = tuple(float(v) for v in true_velocity.replace(";", " ").split()) or None
        if true_velocity is not None and len(tuple(true_velocity)) != 2:
            raise UserError(f"true_velocity must be (vx, vy) in px/frame, got {true_velocity!r}")
        kind, self.window_seconds = parse_window(window)
        if kind != "seconds":
            raise UserError(f"motion-fidelity window must be in seconds, got {window!r}")
        self.true_velocity = tuple(float(v) for v in true_velocity) if true_velocity is not None else None
        self.add_state("records", [], reduce="cat")    # per pair: index of the later frame, vx, vy

    @property
    def info(self) -> MetricInfo:
        return MetricInfo("motion_ratio", "ratio", "none", self.backend_label,
                          "measured camera speed along the true direction / true speed (1 = faithful)")

    def record(self, chunk: Chunk, next_index: torch.Tensor, flow: torch.Tensor) -> None:
        self.records.append(torch.cat([next_index.double()[:, None], camera_motion(flow).double()], 1))  # [N, 3]

    def compute(self) -> MetricResult:
        rows = self.rows(self.records, 3)
        per_pair = fidelity_per_pair(rows[:, 1:], self.true_velocity or (0.0, 0.0))
        if self.true_velocity is None:       # nothing to compare with: report the measurement only
            per_pair = {k: v for k, v in per_pair.items() if k in ("motion_vx", "motion_vy")}
        keys = second_of(rows[:, 0] / self.window_seconds, self.fps) if self.fps else []
        result = MetricResult()
        for name, values in per_pair.items():
            result.scalars[name] = float(values.mean()) if values.numel() else float("nan")
            result.series[f"{name}_per_window"] = window_means(keys, values)
            for key in (name, f"{name}_per_window"):
                result.info[key] = MetricInfo(key, UNITS[name], DIRECTIONS.get(name, "none"), self.backend_label,
                                              f"camera motion (median flow) vs true velocity {self.true_velocity}")
        return result
