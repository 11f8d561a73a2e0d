"""Optical-flow magnitude: pure per-pair statistics and the streaming ``FlowMagnitude`` metric.

Per consecutive frame pair: mean, median, 95th percentile and top-5 % mean (VBench's
"max_rad": mean of the ``int(H*W*0.05)`` largest magnitudes) of the per-pixel flow
magnitude, in px/frame; the ``_norm`` twins divide by ``min(H, W) / 256`` so that videos
of different sizes compare. Video scalars are means over pairs; series are per chunk
(``*_per_chunk``) and per second of video (``*_per_second``), a pair belonging to the
window of its later frame, so that motion decaying over a rollout is visible.

This module also holds what every flow-based metric shares: :class:`PairStream` (frame
pairs across chunk boundaries, keeping only the last frame) and :class:`PairFlowMetric`
(flow per new pair, records of a few floats per pair). Memory: one frame plus a few
floats per pair, never the video. Flow runs at a bounded resolution (frames above 512 px on
the short side are scaled down, :mod:`adabench.metrics.resolution`) and is reported in
pixels of the video's own frames.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import torch

from adabench.chunk import Chunk
from adabench.errors import UserError
from adabench.metrics.base import MetricInfo, MetricResult, StreamingMetric
from adabench.metrics.flow import FlowBackend, get_flow_backend
from adabench.metrics.resolution import bounded_flow, in_frame_pixels, to_work_size, work_size
from adabench.metrics.shared import SharedWork

STATS = ("mean", "median", "p95", "top5")


class MagnitudeStats(NamedTuple):
    """Per-pair magnitude statistics, each [N] in px/frame."""

    mean: torch.Tensor
    median: torch.Tensor
    p95: torch.Tensor
    top5: torch.Tensor


def magnitude(flow: torch.Tensor) -> torch.Tensor:
    """[N, 2, H, W] -> per-pixel magnitude [N, H*W]."""
    return flow.float().pow(2).sum(1).sqrt().flatten(1)


def top5_count(num_pixels: int) -> int:
    """How many pixels the top-5 % mean averages: VBench's ``int(h*w*0.05)``, at least 1."""
    return max(1, int(num_pixels * 0.05))


def magnitude_stats(flow: torch.Tensor) -> MagnitudeStats:
    """flow [N, 2, H, W] in px -> mean, median, p95 (linear interpolation, as numpy) and top-5 % mean, each [N]."""
    mag, _ = magnitude(flow).sort(dim=1)                                   # [N, P] ascending
    p = mag.shape[1]

    def quantile(q: float) -> torch.Tensor:                               # [N]
        pos = q * (p - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return mag[:, lo] + (mag[:, hi] - mag[:, lo]) * (pos - lo)

    top5 = mag[:, p - top5_count(p):].mean(1)
    return MagnitudeStats(mag.mean(1), quantile(0.5), quantile(0.95), top5)


def norm_scale(height: int, width: int) -> float:
    """Divide px by this to compare sizes: ``min(H, W) / 256`` (VBench's reference side)."""
    return min(height, width) / 256.0


def window_means(keys: Sequence[int], values: torch.Tensor) -> list[float]:
    """Mean of ``values`` [P] per integer key, for every key from 0 to max (NaN where empty)."""
    if len(keys) == 0:
        return []
    keys_t = torch.as_tensor(list(keys), dtype=torch.long)
    n = int(keys_t.max()) + 1
    sums = torch.zeros(n, dtype=torch.float64).index_add_(0, keys_t, values.double())
    counts = torch.zeros(n, dtype=torch.float64).index_add_(0, keys_t, torch.ones_like(values, dtype=torch.float64))
    return [float(s / c) if c > 0 else float("nan") for s, c in zip(sums, counts)]


def second_of(frame_index: torch.Tensor, fps: float) -> list[int]:
    """Second of video each frame index falls in (frame i plays at i / fps)."""
    return [int(math.floor(float(i) / fps + 1e-9)) for i in frame_index]


def parse_window(window: Any) -> tuple[str, float]:
    """``1`` / ``"1s"`` -> ("seconds", 1.0); ``"15%"`` -> ("fraction", 0.15). Used by retention and fidelity."""
    text = str(window).strip().lower()
    try:
        if text.endswith("%"):
            value, kind = float(text[:-1]) / 100.0, "fraction"
        else:
            value, kind = float(text[:-1] if text.endswith("s") else text), "seconds"
    except ValueError:
        value, kind = -1.0, "seconds"
    if not value > 0 or (kind == "fraction" and value > 1):
        raise UserError(f"bad window {window!r}; accepted: seconds ('1', '2.5s') or a fraction of the video ('15%')")
    return kind, value


class PairStream:
    """Consecutive pairs of kept frames over a chunked video, holding only the last kept frame.

    A frame is kept when its video index is a multiple of ``stride`` (1 = every frame).
    """

    def __init__(self, stride: int = 1) -> None:
        self.stride = max(1, int(stride))
        self.reset()

    def reset(self) -> None:
        self.prev: torch.Tensor | None = None     # [3, H, W] last kept frame
        self.prev_index = -1

    def push(self, frames: torch.Tensor, start_frame: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """frames [F, 3, H, W] at video index ``start_frame`` -> (prev [N,3,H,W], next [N,3,H,W], next index [N])."""
        index = torch.arange(start_frame, start_frame + frames.shape[0])
        keep = index % self.stride == 0
        kept, kept_index = frames[keep], index[keep]                                 # [K, 3, H, W], [K]
        if self.prev is not None and kept.shape[0] and kept.shape[1:] != self.prev.shape:
            raise UserError(f"frame size changed mid-video: {tuple(self.prev.shape)} -> {tuple(kept.shape[1:])}")
        seq = kept if self.prev is None else torch.cat([self.prev[None], kept])     # [K(+1), 3, H, W]
        seq_index = kept_index if self.prev is None else torch.cat([torch.tensor([self.prev_index]), kept_index])
        if seq.shape[0]:
            self.prev, self.prev_index = seq[-1].clone(), int(seq_index[-1])
        return seq[:-1], seq[1:], seq_index[1:]


class PairFlowMetric(StreamingMetric):
    """Base of the flow metrics: flow for each new pair of kept frames, handed to :meth:`record`."""

    needs = frozenset({"frames", "device"})

    def __init__(self, backend: str | FlowBackend = "dis", device: str | None = None, stride: int = 1) -> None:
        super().__init__()
        self.backend = get_flow_backend(backend, **({"device": device} if device else {}))
        self.pairs = PairStream(stride)
        self.work: SharedWork | None = None
        self.add_state("height", 0, reduce="max")
        self.add_state("width", 0, reduce="max")
        self.add_state("fps", 0.0, reduce="max")
        self.add_state("frames_seen", 0, reduce="sum")

    @property
    def backend_label(self) -> str:
        return f"flow={self.backend.name}"

    def reset(self) -> None:
        super().reset()
        self.pairs.reset()

    def share(self, work: SharedWork) -> None:
        self.work = work

    def work_size(self, height: int, width: int) -> tuple[int, int]:
        return work_size(height, width)

    def update(self, chunk: Chunk) -> None:
        frames = chunk.frames                                                        # [F, 3, H, W]
        self.height, self.width = int(frames.shape[-2]), int(frames.shape[-1])
        self.fps = float(chunk.fps)
        self.frames_seen += chunk.num_frames
        # flow runs at the bounded work size (see adabench.metrics.resolution); only that copy is kept
        prev, nxt, index = self.pairs.push(to_work_size(frames), chunk.start_frame)   # [N, 3, h, w]
        if not index.numel():
            return
        if self.work is None:
            flow = self.backend(prev, nxt)                                           # [N, 2, h, w]
        else:                                    # kept frames are consecutive multiples of the stride
            flow = self.work.flow(self.backend, prev, nxt, index - self.pairs.stride, index)
        self.record(chunk, index, in_frame_pixels(flow, self.height, self.width))   # px of the H x W frames

    def record(self, chunk: Chunk, next_index: torch.Tensor, flow: torch.Tensor) -> None:
        """Keep what the metric needs from the flow [N, 2, H, W] of pairs ending at ``next_index`` [N]."""
        raise NotImplementedError

    @staticmethod
    def rows(records: list[torch.Tensor], width: int) -> torch.Tensor:
        """Concatenate per-update record rows into [P, width] float64."""
        return torch.cat(records) if records else torch.zeros(0, width, dtype=torch.float64)


def scalars_from_stats(stats: torch.Tensor, height: int, width: int) -> dict[str, float]:
    """Per-pair stats [P, 4] (mean, median, p95, top5) -> video scalars, raw and normalised."""
    out: dict[str, float] = {}
    scale = norm_scale(height, width) if height and width else float("nan")
    for j, stat in enumerate(STATS):
        value = float(stats[:, j].mean()) if stats.shape[0] else float("nan")
        out[f"flow_magnitude_{stat}"] = value
        out[f"flow_magnitude_{stat}_norm"] = value / scale
    return out


def flow_magnitude(frames: torch.Tensor, backend: str | FlowBackend = "dis") -> dict[str, float]:
    """Pure twin of :class:`FlowMagnitude` on a whole video [T, 3, H, W] -> its scalars."""
    backend = get_flow_backend(backend)
    s = magnitude_stats(bounded_flow(backend, frames[:-1], frames[1:]))              # 4 x [T-1]
    return scalars_from_stats(torch.stack(list(s), 1).double(), frames.shape[-2], frames.shape[-1])


class FlowMagnitude(PairFlowMetric):
    """Streaming optical-flow magnitude between consecutive frames (see module docstring)."""

    def __init__(self, backend: str | FlowBackend = "dis", device: str | None = None) -> None:
        super().__init__(backend, device)
        # per pair: chunk index, index of the later frame, mean, median, p95, top5
        self.add_state("records", [], reduce="cat")

    @property
    def info(self) -> MetricInfo:
        return MetricInfo("flow_magnitude_mean", "px/frame", "none", self.backend_label,
                          "mean optical-flow magnitude between consecutive frames")

    def record(self, chunk: Chunk, next_index: torch.Tensor, flow: torch.Tensor) -> None:
        stats = torch.stack(list(magnitude_stats(flow)), 1).double()                 # [N, 4]
        ids = torch.stack([torch.full_like(next_index, chunk.index), next_index], 1).double()  # [N, 2]
        self.records.append(torch.cat([ids, stats], 1))                              # [N, 6]

    def compute(self) -> MetricResult:
        rows = self.rows(self.records, 6)                                            # [P, 6]
        result = MetricResult(scalars=scalars_from_stats(rows[:, 2:], self.height, self.width))
        chunk_keys = [int(c) for c in rows[:, 0]]
        second_keys = second_of(rows[:, 1], self.fps) if self.fps else []
        for j, stat in enumerate(STATS):
            result.series[f"flow_magnitude_{stat}_per_chunk"] = window_means(chunk_keys, rows[:, 2 + j])
            result.series[f"flow_magnitude_{stat}_per_second"] = window_means(second_keys, rows[:, 2 + j])
        for name in list(result.scalars) + list(result.series):
            unit = "1" if "_norm" in name else "px/frame"
            result.info[name] = MetricInfo(name, unit, "none", self.backend_label,
                                           "optical-flow magnitude" + (" / (min(H,W)/256)" if unit == "1" else ""))
        return result
