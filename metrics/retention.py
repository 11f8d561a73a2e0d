"""Dynamics retention: how much of its early motion a video still has at the end.

``dynamics_retention = mean flow magnitude over the last window / over the first window``
of the same video (per-pair mean magnitude, as in :mod:`flow_magnitude`). A window is
``window`` seconds of pairs (default ``1`` = ``round(fps)`` pairs) or a fraction of the
video's pairs (``"15%"``); short videos let the two windows overlap. 1 = motion kept,
< 1 = motion dies (the failure of first-frame-anchored rollouts), NaN when the first
window has no motion at all (static start: the ratio is undefined).
"""

from __future__ import annotations

from typing import Any

import torch

from adabench.metrics.base import MetricInfo, MetricResult
from adabench.metrics.flow import FlowBackend, get_flow_backend
from adabench.metrics.flow_magnitude import FlowMagnitude, magnitude_stats, parse_window
from adabench.metrics.resolution import bounded_flow


def window_pairs(window: Any, fps: float, num_pairs: int) -> int:
    """Number of pairs in one window (at least 1)."""
    kind, value = parse_window(window)
    pairs = value * fps if kind == "seconds" else value * num_pairs
    return max(1, round(pairs))


def retention_from_means(pair_means: torch.Tensor, fps: float, window: Any = 1) -> tuple[float, float, float]:
    """Per-pair mean magnitudes [P] in video order -> (retention, first-window mean, last-window mean)."""
    if pair_means.numel() == 0:
        return float("nan"), float("nan"), float("nan")
    pair_means = pair_means.double()
    k = window_pairs(window, fps, pair_means.numel())
    first, last = float(pair_means[:k].mean()), float(pair_means[-k:].mean())
    return (last / first if first > 0 else float("nan")), first, last


def dynamics_retention(frames: torch.Tensor, fps: float, backend: str | FlowBackend = "dis",
                       window: Any = 1) -> float:
    """Pure twin of :class:`DynamicsRetention` on a whole video [T, 3, H, W]."""
    flow = bounded_flow(get_flow_backend(backend), frames[:-1], frames[1:])         # [T-1, 2, h, w]
    return retention_from_means(magnitude_stats(flow).mean, fps, window)[0]


class DynamicsRetention(FlowMagnitude):
    """Streaming retention: the flow-magnitude accumulator, summarised as last window / first window."""

    def __init__(self, backend: str | FlowBackend = "dis", window: Any = 1, device: str | None = None) -> None:
        super().__init__(backend, device)
        parse_window(window)                                                         # fail early on a bad value
        self.window = window

    @property
    def info(self) -> MetricInfo:
        return MetricInfo("dynamics_retention", "ratio", "higher", self.backend_label,
                          f"mean flow magnitude of the last window over the first (window {self.window}; s or %)")

    def compute(self) -> MetricResult:
        rows = self.rows(self.records, 6)                                            # [P, 6]; column 2 = mean
        ratio, first, last = retention_from_means(rows[:, 2], self.fps or 1.0, self.window)
        result = MetricResult(scalars={"dynamics_retention": ratio, "flow_first_window": first,
                                       "flow_last_window": last})
        result.info["dynamics_retention"] = self.info
        for name, which in (("flow_first_window", "first"), ("flow_last_window", "last")):
            result.info[name] = MetricInfo(name, "px/frame", "none", self.backend_label,
                                           f"mean flow magnitude over the {which} window ({self.window})")
        return result
