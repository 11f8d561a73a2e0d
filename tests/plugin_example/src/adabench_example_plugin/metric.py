"""``mean-luminance``: the mean BT.601 luma of a video, and per chunk.

The smallest useful :class:`~adabench.metrics.base.StreamingMetric`: it needs only the
frames, keeps two running sums plus three floats per chunk (never the frames), declares
how each piece of state merges across ranks, and says what its numbers are (unit,
direction, backend) so that results can be compared and displayed.
"""

from __future__ import annotations

import torch

from adabench.chunk import Chunk
from adabench.metrics.base import MetricInfo, MetricResult, StreamingMetric

LUMA = (0.299, 0.587, 0.114)          # ITU-R BT.601 weights of R, G, B
BACKEND = "luma=bt601"


def luma(frames: torch.Tensor) -> torch.Tensor:
    """[F, 3, H, W] in [0, 1] -> luma [F, H, W] in [0, 1], float64."""
    x = frames.double()
    return LUMA[0] * x[:, 0] + LUMA[1] * x[:, 1] + LUMA[2] * x[:, 2]


class MeanLuminance(StreamingMetric):
    """Mean luma over every pixel of every frame seen; series: the mean per chunk."""

    needs = frozenset({"frames"})

    def __init__(self) -> None:
        super().__init__()
        self.add_state("luma_sum", 0.0, reduce="sum")
        self.add_state("pixels", 0, reduce="sum")
        self.add_state("chunks", [], reduce="cat")       # (chunk index, luma sum, pixels) per update

    @property
    def info(self) -> MetricInfo:
        return MetricInfo("mean_luminance", "1", "none", BACKEND, "mean BT.601 luma of all frames (0 black, 1 white)")

    def update(self, chunk: Chunk) -> None:
        y = luma(chunk.frames)                                               # [F, H, W]
        total = float(y.sum())
        self.luma_sum += total
        self.pixels += y.numel()
        self.chunks.append((chunk.index, total, y.numel()))

    def compute(self) -> MetricResult:
        per_chunk: dict[int, list[float]] = {}
        for index, total, count in self.chunks:                  # a chunk may arrive in parts (merged ranks)
            acc = per_chunk.setdefault(int(index), [0.0, 0])
            acc[0] += total
            acc[1] += count
        last = max(per_chunk, default=-1)
        series = [per_chunk[i][0] / per_chunk[i][1] if i in per_chunk else float("nan") for i in range(last + 1)]
        mean = self.luma_sum / self.pixels if self.pixels else float("nan")
        return MetricResult(
            scalars={"mean_luminance": mean},
            series={"mean_luminance_per_chunk": series},
            info={"mean_luminance": self.info,
                  "mean_luminance_per_chunk": MetricInfo("mean_luminance_per_chunk", "1", "none", BACKEND,
                                                         "mean BT.601 luma of each chunk")})
