"""VBench dynamic degree: is there enough large motion in a video?

VBench (``dynamic_degree.py``): keep every ``round(fps / 8)``-th frame (about 8 fps; we
use at least 1, VBench would crash below 4 fps); with N the number of **kept frames**
(VBench's ``count=len(frames)`` after subsampling, not the number of pairs), per
consecutive kept pair take the mean of the largest 5 % flow magnitudes; the video is
dynamic when at least ``round(4 * N / 16)`` pairs exceed ``6.0 * min(H, W) / 256`` px
(strictly greater). Python's ``round`` (half to even) is kept, as in VBench. Worked
example: 832x480, 16 fps, 81 frames -> 41 kept, 40 pairs, threshold 11.25 px, 10 pairs.
A video with no pair is never dynamic.

VBench uses RAFT (things weights, 20 iterations). Classical backends (DIS, Farneback)
read lower than RAFT on real video, so the result always carries the backend
(``flow=dis``) and ``threshold_scale`` (default 1.0) lets a study calibrate a backend's
threshold; never mix the numbers with RAFT ones.

VBench-Long: the video is cut into 2-second clips (``round(2 * fps)`` frames), each judged
on the pairs inside it with its own N; ``dynamic_degree_clips`` is the fraction judged
dynamic. Clips use the video's subsampling grid (the same as a per-clip grid whenever the
clip length is a multiple of the interval, e.g. 16, 24, 30 fps); a trailing clip shorter
than one second is dropped unless it is the only one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from adabench.chunk import Chunk
from adabench.metrics.base import MetricInfo, MetricResult
from adabench.metrics.flow import FlowBackend, get_flow_backend
from adabench.metrics.flow_magnitude import PairFlowMetric, magnitude_stats
from adabench.metrics.resolution import bounded_flow

CLIP_SECONDS = 2.0


def frame_interval(fps: float) -> int:
    """VBench's subsampling step ``round(fps / 8)``, at least 1: 16 fps -> 2, 8 -> 1, 30 -> 4."""
    return max(1, round(fps / 8))


@dataclass(frozen=True)
class DynamicDecision:
    dynamic: bool
    threshold: float        # px
    count_needed: int       # round(4 * N / 16)
    count_exceeding: int    # pairs whose top-5 % mean is above the threshold


def dynamic_degree_decision(top5_per_pair: Sequence[float], height: int, width: int, num_frames_kept: int,
                            threshold_scale: float = 1.0) -> DynamicDecision:
    """VBench's ``check_move``: dynamic if >= round(4 * N / 16) pairs exceed 6 * min(H, W) / 256 px."""
    threshold = 6.0 * min(height, width) / 256.0 * threshold_scale
    needed = round(4 * num_frames_kept / 16.0)
    exceeding = sum(1 for v in top5_per_pair if float(v) > threshold)
    return DynamicDecision(len(top5_per_pair) > 0 and exceeding >= needed, threshold, needed, exceeding)


def clip_decisions(next_index: torch.Tensor, top5: torch.Tensor, num_frames: int, fps: float, height: int,
                   width: int, threshold_scale: float = 1.0) -> list[DynamicDecision]:
    """VBench-Long: one decision per 2-second clip from the kept pairs (later frame ``next_index`` [P], ``top5`` [P])."""
    interval, length = frame_interval(fps), max(1, round(CLIP_SECONDS * fps))
    decisions = []
    for start in range(0, num_frames, length):
        end = min(start + length, num_frames)
        if start > 0 and end - start < length / 2:
            break
        inside = (next_index - interval >= start) & (next_index < end)
        kept = len(range(-(-start // interval) * interval, end, interval))
        decisions.append(dynamic_degree_decision(top5[inside].tolist(), height, width, kept, threshold_scale))
    return decisions


def dynamic_degree(frames: torch.Tensor, fps: float, backend: str | FlowBackend = "dis",
                   threshold_scale: float = 1.0) -> dict[str, float]:
    """Pure twin of :class:`DynamicDegree` on a whole video [T, 3, H, W] -> its scalars."""
    interval = frame_interval(fps)
    kept = frames[::interval]                                                        # [N, 3, H, W]
    top5 = magnitude_stats(bounded_flow(get_flow_backend(backend), kept[:-1], kept[1:])).top5   # [N-1]
    h, w = frames.shape[-2:]
    video = dynamic_degree_decision(top5.tolist(), h, w, kept.shape[0], threshold_scale)
    index = torch.arange(1, kept.shape[0]) * interval
    clips = clip_decisions(index, top5.double(), frames.shape[0], fps, h, w, threshold_scale)
    return {"dynamic": float(video.dynamic), "dynamic_degree_clips": fraction_dynamic(clips)}


def fraction_dynamic(decisions: Sequence[DynamicDecision]) -> float:
    return sum(d.dynamic for d in decisions) / len(decisions) if decisions else float("nan")


class DynamicDegree(PairFlowMetric):
    """Streaming VBench dynamic degree; keeps the last kept frame and two floats per kept pair."""

    def __init__(self, backend: str | FlowBackend = "dis", threshold_scale: float = 1.0,
                 device: str | None = None) -> None:
        super().__init__(backend, device, stride=1)     # stride set from the first chunk's fps
        self.threshold_scale = float(threshold_scale)
        self.add_state("records", [], reduce="cat")    # per kept pair: index of the later frame, top-5 % mean

    @property
    def info(self) -> MetricInfo:
        return MetricInfo(f"dynamic_degree[{self.backend_label}]", "bool", "higher", self.backend_label,
                          "VBench dynamic degree of the whole video (1 = dynamic)")

    def update(self, chunk: Chunk) -> None:
        if self.frames_seen == 0:
            self.pairs.stride = frame_interval(chunk.fps)
        super().update(chunk)

    def record(self, chunk: Chunk, next_index: torch.Tensor, flow: torch.Tensor) -> None:
        top5 = magnitude_stats(flow).top5.double()                                   # [N]
        self.records.append(torch.stack([next_index.double(), top5], 1))             # [N, 2]

    def compute(self) -> MetricResult:
        rows = self.rows(self.records, 2)
        index, top5 = rows[:, 0].long(), rows[:, 1]
        kept = len(range(0, self.frames_seen, self.pairs.stride))
        video = dynamic_degree_decision(top5.tolist(), self.height, self.width, kept, self.threshold_scale)
        clips = clip_decisions(index, top5, self.frames_seen, self.fps or 1.0, self.height, self.width,
                               self.threshold_scale)
        result = MetricResult(
            scalars={"dynamic": float(video.dynamic), "dynamic_degree_clips": fraction_dynamic(clips),
                     "dynamic_threshold_px": video.threshold, "dynamic_pairs_exceeding": float(video.count_exceeding),
                     "dynamic_pairs_needed": float(video.count_needed)},
            series={"dynamic_per_clip": [float(c.dynamic) for c in clips]})
        desc = {"dynamic": ("bool", "VBench dynamic degree of the whole video (1 = dynamic)"),
                "dynamic_degree_clips": ("fraction", "fraction of 2-second clips judged dynamic (VBench-Long)"),
                "dynamic_threshold_px": ("px", "top-5 % magnitude a pair must exceed"),
                "dynamic_pairs_exceeding": ("pairs", "kept pairs above the threshold"),
                "dynamic_pairs_needed": ("pairs", "round(4 N / 16), N = kept frames"),
                "dynamic_per_clip": ("bool", "decision per 2-second clip")}
        for name, (unit, text) in desc.items():
            direction = "higher" if name in ("dynamic", "dynamic_degree_clips", "dynamic_per_clip") else "none"
            result.info[name] = MetricInfo(name, unit, direction, self.backend_label, text)
        return result
