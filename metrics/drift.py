"""Drift over a rollout: how a per-frame measure, or similarity to the first frame, changes.

Pure functions (usable on any per-frame series, and by ``adabench score``):

- :func:`start_end_contrast` (FramePack): ``|mean(first 15 % of frames) - mean(last 15 %)|``;
- :func:`first_last_window_contrast` (Rolling Forcing / Deep Forcing):
  ``|M(first 5 s) - M(last 5 s)|``, halves of the video when it is shorter than 10 s;
- :func:`video_drift_error` (LV-Bench VDE): ``sum_{i=2..N} w_i |M_i - M_1| / |M_1|`` with
  ``w_i = N - i + 1``, **not normalised** (as LV-Bench's own ``vde.py``: with N = 10 the
  weights sum to 45, so VDE is about 45x a weighted mean relative deviation);
- :func:`vbench_consistency`: ``mean_{i>=1} 0.5 [max(0, cos(f_{i-1}, f_i)) + max(0, cos(f_0, f_i))]``;
- :func:`window_means`: per-window (e.g. per-second) means of a per-frame series.

Streaming accumulators: :class:`Drift` and :class:`AnchorLockIn`, both built on
:class:`PerFrameMetric`, which keeps one float per frame per series (bounded by the video's
length but tiny: 8 bytes a frame) and never keeps frames except the first and the previous.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from adabench.chunk import Chunk
from adabench.errors import UserError
from adabench.metrics.base import MetricInfo, MetricResult, StreamingMetric
from adabench.metrics.frame_measures import first_refs, get_measure, prev_refs

Series = Sequence[float] | torch.Tensor


def _as_tensor(values: Series) -> torch.Tensor:
    """A per-frame series as a float64 vector [T]."""
    return torch.as_tensor(values, dtype=torch.float64).reshape(-1)


# --- pure functions -------------------------------------------------------------------------

def start_end_contrast(values: Series, fraction: float = 0.15) -> float:
    """FramePack's start-end contrast; k = max(1, round(fraction * T)) frames at each end.

    NaN for an empty series.
    """
    v = _as_tensor(values)
    if v.numel() == 0:
        return math.nan
    k = max(1, round(fraction * v.numel()))
    return abs(float(v[:k].mean() - v[-k:].mean()))


def first_last_window_contrast(values: Series, fps: float, seconds: float = 5.0) -> float:
    """``|M(first seconds) - M(last seconds)|``; w = round(seconds * fps) frames per window.

    When the video holds fewer than 2w frames the windows become its two halves
    (w = T // 2; the middle frame of an odd-length video is in neither). NaN below 2 frames.
    """
    v = _as_tensor(values)
    w = max(1, round(seconds * fps))
    if v.numel() < 2 * w:
        w = v.numel() // 2
    if w == 0:
        return math.nan
    return abs(float(v[:w].mean() - v[-w:].mean()))


def video_drift_error(values: Series, n_chunks: int = 10) -> float:
    """LV-Bench's Video Drift Error of a per-frame series (unnormalised linear weights).

    As LV-Bench: the video is trimmed to ``(T // N) * N`` frames (the remainder at the end is
    dropped) and cut into N equal chunks whose means are M_1..M_N. Returns NaN when T < N
    (LV-Bench skips such videos); when M_1 = 0 it returns 0 if every M_i is 0 and +inf
    otherwise (LV-Bench returns inf in both cases; a constant video has no drift).
    """
    v = _as_tensor(values)
    n = int(n_chunks)
    if n < 2:
        raise ValueError(f"n_chunks must be >= 2, got {n_chunks}")
    per = v.numel() // n
    if per == 0:
        return math.nan
    m = v[: per * n].reshape(n, per).mean(dim=1)                 # [N] chunk means
    dev = (m[1:] - m[0]).abs()                                   # [N-1], i = 2..N
    if m[0] == 0:
        return 0.0 if bool((dev == 0).all()) else math.inf
    weights = n - torch.arange(2, n + 1, dtype=torch.float64) + 1  # w_i = N - i + 1
    return float((weights * dev / m[0].abs()).sum())


def window_means(values: Series, window: int) -> list[float]:
    """Means over consecutive windows of ``window`` frames; the last may be shorter."""
    v = _as_tensor(values)
    if v.numel() == 0:
        return []
    return [float(part.mean()) for part in torch.split(v, max(1, int(window)))]


def consistency_terms(features: torch.Tensor, first: torch.Tensor | None = None,
                      prev: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item VBench consistency ``0.5 [relu(cos(f_{i-1}, f_i)) + relu(cos(f_0, f_i))]``.

    features [T, D]; ``first`` / ``prev`` [D] are the video's item 0 and the item before
    ``features[0]`` (None when ``features`` starts the video, whose item 0 then scores 1).
    Returns [T].
    """
    feats = features.float()
    to_prev = F.cosine_similarity(feats, prev_refs(feats, prev), dim=1).clamp_min(0)    # [T]
    to_first = F.cosine_similarity(feats, first_refs(feats, first), dim=1).clamp_min(0)  # [T]
    return 0.5 * (to_prev + to_first)


def vbench_consistency(features: torch.Tensor) -> float:
    """VBench subject/background consistency of a feature sequence [T, D]: mean over i >= 1.

    A single item (nothing to compare) scores 1.
    """
    terms = consistency_terms(features)
    return 1.0 if terms.numel() < 2 else float(terms[1:].double().mean())


# --- streaming ------------------------------------------------------------------------------

def _check_positive(name: str, value: float) -> float:
    if not value > 0:
        raise UserError(f"{name} must be > 0, got {value!r}")
    return float(value)


class PerFrameMetric(StreamingMetric):
    """Base accumulator: named per-frame series computed against the first and previous item.

    A subclass maps a chunk's frames to per-frame items with :meth:`embed` (frames
    themselves, or features), and items to per-frame values with :meth:`score`, given the
    video's first item and the item before the chunk. Only those two items are kept between
    chunks; the values are kept as one float per frame per series, reduced by "cat".
    Chunks must arrive in order (``start_frame`` is checked); ``merge`` appends a later
    contiguous part of the same video.
    """

    needs = frozenset({"frames", "fps"})

    def __init__(self, series_names: Sequence[str], fps: float, window_seconds: float) -> None:
        super().__init__()
        self.fps = _check_positive("fps", fps)
        self.window_seconds = _check_positive("window_seconds", window_seconds)
        self.series_names = tuple(series_names)
        for name in self.series_names:
            self.add_state(f"values_{name}", [], "cat")
        self._first: torch.Tensor | None = None
        self._prev: torch.Tensor | None = None
        self.work: Any = None

    def share(self, work: Any) -> None:
        self.work = work

    @property
    def share_key(self) -> tuple | None:
        """What the per-frame values depend on besides the video (equal keys share values); None: never share."""
        return None

    @property
    def window_frames(self) -> int:
        """Frames per series window (at least 1)."""
        return max(1, round(self.window_seconds * self.fps))

    @property
    def num_frames(self) -> int:
        return len(getattr(self, f"values_{self.series_names[0]}"))

    def values(self, name: str) -> list[float]:
        """The per-frame series ``name`` seen so far."""
        return getattr(self, f"values_{name}")

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [F, 3, H, W] -> per-frame items [F, ...]; frames themselves by default."""
        return frames

    @abstractmethod
    def score(self, items: torch.Tensor, first: torch.Tensor | None,
              prev: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Items [F, ...] -> {series name: values [F]}; first/prev None at the video's start."""

    def update(self, chunk: Chunk) -> None:
        if chunk.start_frame != self.num_frames:
            raise ValueError(f"{type(self).__name__}: chunk starts at frame {chunk.start_frame}, "
                             f"expected {self.num_frames} (chunks must arrive in order)")
        if chunk.num_frames == 0:
            return

        def embed_and_score() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            items = self.embed(chunk.frames)                      # [F, ...]
            return items, self.score(items, self._first, self._prev)

        key = self.share_key
        items, scored = embed_and_score() if self.work is None or key is None else \
            self.work.memo((*key, chunk.start_frame, chunk.num_frames), embed_and_score)
        for name in self.series_names:
            self.values(name).extend(scored[name].double().tolist())
        if self._first is None:
            self._first = items[0].detach().clone()
        self._prev = items[-1].detach().clone()

    def reset(self) -> None:
        super().reset()
        self._first = self._prev = None

    def merge(self, other: "StreamingMetric") -> None:
        super().merge(other)
        assert isinstance(other, PerFrameMetric)
        if self._first is None:
            self._first = other._first
        if other._prev is not None:
            self._prev = other._prev


class Drift(PerFrameMetric):
    """Drift of a weight-free per-frame measure (``sharpness`` by default) over the rollout.

    Scalars ``drift_{measure}_start_end``, ``drift_{measure}_first_last`` and
    ``drift_{measure}_vde`` (lower is better: less drift); series ``{measure}``: the
    measure's mean per window of ``window_seconds``.
    """

    def __init__(self, measure: str = "sharpness", fps: float = 16.0, window_seconds: float = 1.0,
                 fraction: float = 0.15, contrast_seconds: float = 5.0, n_chunks: int = 10) -> None:
        self.measure = get_measure(measure)
        super().__init__([self.measure.name], fps, window_seconds)
        if not 0 < fraction <= 0.5:
            raise UserError(f"fraction must be in (0, 0.5], got {fraction!r}")
        self.fraction = float(fraction)
        self.contrast_seconds = _check_positive("contrast_seconds", contrast_seconds)
        if int(n_chunks) < 2:
            raise UserError(f"n_chunks must be an integer >= 2, got {n_chunks!r}")
        self.n_chunks = int(n_chunks)

    @property
    def share_key(self) -> tuple:
        return ("measure", self.measure.name)

    @property
    def info(self) -> MetricInfo:
        m = self.measure
        return MetricInfo(f"drift_{m.name}", m.unit, "lower", None, f"drift of {m.description}")

    def work_size(self, height: int, width: int) -> tuple[int, int]:
        return self.measure.work_size(height, width)

    def score(self, items: torch.Tensor, first: torch.Tensor | None,
              prev: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {self.measure.name: self.measure.fn(items.float(), first, prev)}

    def compute(self) -> MetricResult:
        m = self.measure
        v = self.values(m.name)
        key = f"drift_{m.name}"
        scalars = {
            f"{key}_start_end": start_end_contrast(v, self.fraction),
            f"{key}_first_last": first_last_window_contrast(v, self.fps, self.contrast_seconds),
            f"{key}_vde": video_drift_error(v, self.n_chunks),
        }
        unit = {f"{key}_start_end": m.unit, f"{key}_first_last": m.unit, f"{key}_vde": "1"}
        descr = {
            f"{key}_start_end": f"|mean of first - last {self.fraction:.0%} of frames| of {m.name}",
            f"{key}_first_last": f"|mean of first - last {self.contrast_seconds:g} s| of {m.name}",
            f"{key}_vde": f"Video Drift Error (LV-Bench, N={self.n_chunks}, unnormalised weights) of {m.name}",
        }
        info = {k: MetricInfo(k, unit[k], "lower", None, descr[k]) for k in scalars}
        info[m.name] = MetricInfo(m.name, m.unit, m.direction, None,
                                  f"{m.description}, mean per {self.window_seconds:g} s window")
        return MetricResult(scalars, {m.name: window_means(v, self.window_frames)}, info)


class AnchorLockIn(PerFrameMetric):
    """Similarity of every frame to the first frame, per window: how locked-in the rollout is.

    Series ``lockin`` (mean similarity per window), scalars ``lockin_end`` (mean over the
    last ``window_seconds`` of the video) and ``lockin_mean`` (mean of the series). The
    number means little alone: compare it with the same curve on ground truth (the harness
    does). On a PanWorld pan, ground truth decays towards the similarity of two unrelated
    views of the background; a frozen generator stays near 1. Direction "none".
    """

    SIMILARITIES = {"ssim": "ssim_first", "psnr": "psnr_first"}

    def __init__(self, fps: float = 16.0, window_seconds: float = 1.0, similarity: str = "ssim") -> None:
        if similarity not in self.SIMILARITIES:
            raise UserError(f"unknown lock-in similarity {similarity!r}; known: {', '.join(self.SIMILARITIES)}")
        self.measure = get_measure(self.SIMILARITIES[similarity])
        super().__init__(["lockin"], fps, window_seconds)

    @property
    def share_key(self) -> tuple:
        return ("measure", self.measure.name)

    @property
    def info(self) -> MetricInfo:
        return MetricInfo("lockin", self.measure.unit, "none", f"similarity={self.measure.name}",
                          f"{self.measure.description}, per window; compare with ground truth")

    def work_size(self, height: int, width: int) -> tuple[int, int]:
        return self.measure.work_size(height, width)

    def score(self, items: torch.Tensor, first: torch.Tensor | None,
              prev: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"lockin": self.measure.fn(items.float(), first, prev)}

    def compute(self) -> MetricResult:
        v = self.values("lockin")
        series = window_means(v, self.window_frames)
        tail = v[-self.window_frames:]
        scalars = {
            "lockin_end": sum(tail) / len(tail) if tail else math.nan,
            "lockin_mean": sum(series) / len(series) if series else math.nan,
        }
        info = {k: MetricInfo(k, self.measure.unit, "none", self.info.backend, self.info.description)
                for k in (*scalars, "lockin")}
        return MetricResult(scalars, {"lockin": series}, info)
