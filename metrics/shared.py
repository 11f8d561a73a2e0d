"""Work that several metrics of one video need, computed once (like torchmetrics' compute groups).

Optical flow is the expensive part of scoring, and flow magnitude, retention, motion
fidelity and dynamic degree all need the flow of the same frame pairs; a harness that
scores every horizon of a rollout on its prefix needs each pair once more per horizon.
A :class:`SharedWork` attached to every metric of a video (``metric.share(work)``) keeps
the flow of each pair ``(earlier frame, later frame)`` per backend identity
(:attr:`FlowBackend.key`), so each pair is computed once per video whatever the number of
metrics and horizons. :meth:`SharedWork.memo` does the same for other per-chunk work:
per-frame measures (drift, lock-in) and the evaluator's features of complete clips
(adherence, Fréchet distance).

Memory: the feeder calls :meth:`SharedWork.end_chunk` once every metric has seen a chunk;
the pairs kept until then are those ending in that chunk (every metric meets a pair while
consuming the chunk of its later frame), so memory is bounded by a chunk, not the video.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch

from adabench.metrics.flow import FlowBackend

T = TypeVar("T")


class SharedWork:
    """Per-video cache of shared computations; ``flow_pairs_computed`` counts the backend's work."""

    def __init__(self) -> None:
        self._flow: dict[tuple, torch.Tensor] = {}     # (backend key, i, j) -> [2, H, W]
        self._memo: dict[tuple, Any] = {}
        self.flow_pairs_computed = 0
        self.memo_computed = 0

    def memo(self, key: tuple, compute: Callable[[], T]) -> T:
        """``compute()`` once per ``key`` in the current chunk (per-frame measures, evaluator features).

        The key must name everything the value depends on besides the video itself, e.g.
        (measure, start frame, frame count)."""
        if key not in self._memo:
            self._memo[key] = compute()
            self.memo_computed += 1
        return self._memo[key]

    def flow(self, backend: FlowBackend, prev: torch.Tensor, nxt: torch.Tensor, prev_index: torch.Tensor,
             next_index: torch.Tensor) -> torch.Tensor:
        """Flow [N, 2, H, W] from ``prev`` [N, 3, H, W] (video indices ``prev_index`` [N]) to ``nxt``
        (``next_index`` [N]); only pairs not seen before in this chunk reach the backend, in one batch."""
        keys = [(backend.key, int(i), int(j)) for i, j in zip(prev_index, next_index)]
        missing = [n for n, key in enumerate(keys) if key not in self._flow]
        if missing:
            rows = torch.tensor(missing)
            computed = backend(prev[rows], nxt[rows])                                # [M, 2, H, W]
            self.flow_pairs_computed += len(missing)
            for n, flow in zip(missing, computed):
                self._flow[keys[n]] = flow
        return torch.stack([self._flow[key] for key in keys])                         # [N, 2, H, W]

    def end_chunk(self) -> None:
        """Every metric has seen the current chunk: forget its pairs and values."""
        self._flow.clear()
        self._memo.clear()
