"""Metrics on the PanWorld evaluator (:mod:`adabench.evaluator`): prompt adherence and a
Fréchet distance per time window.

Both cut the video into non-overlapping clips of ``clip_frames`` frames (default 8, 0.5 s
at 16 fps; a trailing partial clip is ignored) and buffer fewer than one clip between
chunks. The evaluator was trained at 16 fps on 32x32 frames; other sizes are resized,
other frame rates change the apparent speed (a warning says so).

- :class:`PromptAdherence` (``adherence``): per clip, the evaluator's predicted motion,
  scene, color and shape against the prompt's. Scalars ``adherence_{attr}`` and
  ``adherence_all`` (all four right): fractions of clips; the same names as series hold
  0/1 per clip.
- :class:`EvaluatorFrechet` (``frechet``): the Fréchet distance between evaluator features
  of generated clips and of reference (ground-truth) clips, window by window, so drift of
  realism over a rollout shows as a curve. One video gives one feature per window, so the
  distance is a property of a *set* of videos: the per-video state is the list of window
  features, :meth:`~EvaluatorFrechet.merge` concatenates videos, and
  :func:`frechet_per_window` computes the curve from two sets. A stable estimate needs a
  few dozen clips per window on each side (the features have D = 32 dimensions; below
  about D clips the covariance is rank-deficient and the distance biased upward by the
  sample size, so only compare models at equal clip counts).
"""

from __future__ import annotations

import math
import warnings
from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from adabench.chunk import Chunk
from adabench.errors import UserError
from adabench.metrics.base import MetricInfo, MetricResult, StreamingMetric
from adabench.world.prompts import attribute_classes, parse_prompt

ATTRIBUTES = ("motion", "scene", "color", "shape")
RIDGE = 1e-6                    # added to both covariances in frechet_distance
FEATURE_SERIES = "frechet_feature_"

Vector = torch.Tensor | Sequence[float]


# --- pure functions -------------------------------------------------------------------------

def frechet_distance(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray,
                     ridge: float = RIDGE) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] and [M, D].

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with unbiased covariances
    (N - 1 denominator) in float64. Choice for small sets: ``ridge * I`` is added to both
    covariances, so that ``S_a S_b`` is never singular (N < D makes it so) and
    ``scipy.linalg.sqrtm`` stays accurate; identical sets still give 0 and any other pair
    moves by O(ridge * D). Tiny imaginary parts from sqrtm are dropped; the result is
    clamped at 0. Needs N, M >= 2.
    """
    from scipy.linalg import sqrtm

    a = np.asarray(torch.as_tensor(feats_a).detach().cpu().double())
    b = np.asarray(torch.as_tensor(feats_b).detach().cpu().double())
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance needs [N, D] and [M, D] features, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"frechet_distance needs at least 2 samples per set, got {len(a)} and {len(b)}")
    eye = np.eye(a.shape[1]) * ridge
    s_a = np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1]) + eye      # [D, D]
    s_b = np.cov(b, rowvar=False).reshape(b.shape[1], b.shape[1]) + eye      # [D, D]
    cross = np.real(sqrtm(s_a @ s_b))
    diff = a.mean(axis=0) - b.mean(axis=0)
    return max(0.0, float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(cross)))


def frechet_per_window(generated: Sequence[Sequence[Vector]], reference: Sequence[Sequence[Vector]],
                       min_clips: int = 2) -> list[float]:
    """Per-window Fréchet distance between two sets of videos.

    ``generated`` / ``reference``: one list per video of per-window feature vectors [D]
    (window w of every video is compared with window w of the reference videos). One value
    per window of the longest generated video; NaN where either side has fewer than
    ``min_clips`` videos reaching that window.
    """
    length = max((len(v) for v in generated), default=0)
    out = []
    for w in range(length):
        a = [torch.as_tensor(v[w]).double() for v in generated if len(v) > w]
        b = [torch.as_tensor(v[w]).double() for v in reference if len(v) > w]
        if len(a) < max(2, min_clips) or len(b) < max(2, min_clips):
            out.append(math.nan)
        else:
            out.append(frechet_distance(torch.stack(a), torch.stack(b)))
    return out


def features_to_series(windows: Sequence[Vector]) -> dict[str, list[float]]:
    """One video's window features as series ``frechet_feature_{k}`` (one value per window):
    how they travel in a per-video result to the store."""
    if not windows:
        return {}
    stacked = torch.stack([torch.as_tensor(v).double() for v in windows])            # [W, D]
    return {f"{FEATURE_SERIES}{k:02d}": stacked[:, k].tolist() for k in range(stacked.shape[1])}


def features_from_series(series: dict[str, Sequence[float]]) -> list[torch.Tensor]:
    """Inverse of :func:`features_to_series`: a stored result's series -> window features [D]."""
    keys = sorted(k for k in series if k.startswith(FEATURE_SERIES))
    if not keys:
        return []
    stacked = torch.tensor([list(series[k]) for k in keys], dtype=torch.float64).T   # [W, D]
    return list(stacked)


def save_features(path: str | Path, videos: Sequence[Sequence[Vector]]) -> None:
    """Reference features to a safetensors file (tensor ``video.{i}`` [W_i, D] per video)."""
    from safetensors.torch import save_file

    tensors = {f"video.{i:05d}": torch.stack([torch.as_tensor(v).float() for v in windows])
               for i, windows in enumerate(videos) if len(windows)}
    save_file(tensors, str(path), metadata={"format": "adabench-evaluator-features/1"})


def load_features(path: str | Path) -> list[list[torch.Tensor]]:
    """Reference features written by :func:`save_features`."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # missing, corrupted
        raise UserError(f"cannot read reference features {path}: {type(exc).__name__}; "
                        "write them with adabench.metrics.adherence.save_features") from None
    return [list(tensors[k]) for k in sorted(tensors)]


# --- streaming ------------------------------------------------------------------------------

def resolve_network(network: Any, weights: str | None, device: str) -> tuple[Any, str]:
    """(evaluator, backend label): the injected ``network`` or the evaluator at ``weights``
    (shipped weights by default); label ``evaluator=<sha prefix of the weights>``."""
    if network is None:
        from adabench.evaluator import load_evaluator
        network = load_evaluator(weights, device=device)
    sha = getattr(network, "weights_sha", None) or "custom"
    return network, f"evaluator={sha}"


class ClipWindowMetric(StreamingMetric):
    """Cuts the frame stream into non-overlapping clips of ``clip_frames`` frames.

    Keeps at most ``clip_frames - 1`` frames between chunks; chunks must arrive in order.
    Subclasses implement :meth:`score_clips`. ``merge`` is for whole videos (or parts that
    end on a clip boundary): a partial clip in the buffer is not carried over.
    """

    def __init__(self, clip_frames: int, fps: float, network: Any, weights: str | None, device: str,
                 active: bool = True) -> None:
        super().__init__()
        if int(clip_frames) != clip_frames or clip_frames < 2:
            raise UserError(f"clip_frames must be an integer >= 2, got {clip_frames!r}")
        self.clip_frames, self.fps, self.device = int(clip_frames), float(fps), device
        self.active = active
        self.network, self.backend = resolve_network(network, weights, device) if active else (None, "evaluator=none")
        native = getattr(getattr(self.network, "config", None), "fps", None)
        if active and native is not None and abs(self.fps - native) > 1e-6:
            warnings.warn(f"video at {self.fps:g} fps; the evaluator was trained at {native:g} fps, "
                          "so motion classes read speeds scaled by the frame-rate ratio", stacklevel=3)
        self._buffer: torch.Tensor | None = None     # [k < clip_frames, 3, H, W]
        self._next_frame = 0
        self.work: Any = None

    def share(self, work: Any) -> None:
        self.work = work

    def clip_features(self, clips: torch.Tensor, start: int) -> torch.Tensor:
        """The evaluator's features of ``clips`` [N, T, 3, H, W] whose first frame is video frame
        ``start``, computed once per chunk for every metric (and horizon) that shares ``self.work``."""
        def compute() -> torch.Tensor:
            return self.network.features(clips)

        if self.work is None:
            return compute()
        return self.work.memo(("evaluator", self.backend, self.clip_frames, start, clips.shape[0]), compute)

    def reset(self) -> None:
        super().reset()
        self._buffer, self._next_frame = None, 0

    def update(self, chunk: Chunk) -> None:
        if chunk.start_frame != self._next_frame:
            raise ValueError(f"{type(self).__name__}: chunk starts at frame {chunk.start_frame}, "
                             f"expected {self._next_frame} (chunks must arrive in order)")
        self._next_frame += chunk.num_frames
        if not self.active or chunk.num_frames == 0:
            return
        start = chunk.start_frame - (0 if self._buffer is None else self._buffer.shape[0])
        frames = chunk.frames if self._buffer is None else torch.cat([self._buffer, chunk.frames])  # [K, 3, H, W]
        full = frames.shape[0] // self.clip_frames
        cut = full * self.clip_frames
        self._buffer = frames[cut:].clone() if cut < frames.shape[0] else None
        if full:
            clips = frames[:cut].unflatten(0, (full, self.clip_frames))   # [N, T, 3, H, W]
            with torch.no_grad():
                self.score_clips(clips.to(self.device), start)

    @abstractmethod
    def score_clips(self, clips: torch.Tensor, start: int) -> None:
        """Consume complete clips [N, T, 3, H, W] in video order; the first begins at video frame ``start``."""


class PromptAdherence(ClipWindowMetric):
    """Fraction of clips whose evaluator-predicted attributes match the prompt's.

    ``prompt``: PanWorld prompt text (the harness passes it); without one the metric reports
    nothing. ``network``: any callable clips [N, T, 3, H, W] -> {attribute: logits [N, C]}
    (classes in :func:`attribute_classes` order) in place of the shipped evaluator.
    """

    needs = frozenset({"frames", "fps", "prompt", "ground_truth", "device"})

    def __init__(self, prompt: str | None = None, clip_frames: int = 8, fps: float = 16.0,
                 weights: str | None = None, device: str = "cpu",
                 network: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None) -> None:
        spec = parse_prompt(prompt) if prompt is not None else None
        super().__init__(clip_frames, fps, network, weights, device, active=spec is not None)
        classes = getattr(getattr(self.network, "config", None), "classes", None) or attribute_classes()
        self.target = ({a: classes[a].index(getattr(spec, a)) for a in ATTRIBUTES} if spec is not None else None)
        self.add_state("hits", [], "cat")           # per clip: (motion, scene, color, shape) right? 0/1

    @property
    def info(self) -> MetricInfo:
        return MetricInfo("adherence_all", "fraction", "higher", self.backend,
                          "share of clips whose motion, scene, color and shape the evaluator reads as prompted")

    def score_clips(self, clips: torch.Tensor, start: int) -> None:
        from adabench.evaluator import Evaluator

        # the shipped evaluator: logits from the features the Fréchet metric shares; any other network: called
        logits = (self.network.classify(self.clip_features(clips, start)) if isinstance(self.network, Evaluator)
                  else self.network(clips))
        pred = {a: logits[a].argmax(dim=1).cpu() for a in ATTRIBUTES}                  # [N] each
        right = torch.stack([pred[a] == self.target[a] for a in ATTRIBUTES], dim=1)      # [N, 4]
        self.hits.extend(tuple(int(v) for v in row) for row in right.tolist())

    def compute(self) -> MetricResult:
        if self.target is None:
            return MetricResult()
        hits = torch.tensor(self.hits, dtype=torch.float64).reshape(-1, len(ATTRIBUTES))   # [W, 4]
        per = {f"adherence_{a}": hits[:, i] for i, a in enumerate(ATTRIBUTES)}
        per["adherence_all"] = hits.prod(dim=1) if len(hits) else hits[:, 0]
        scalars = {k: float(v.mean()) if len(v) else math.nan for k, v in per.items()}
        series = {k: v.tolist() for k, v in per.items()}
        descr = {f"adherence_{a}": f"share of {self.clip_frames}-frame clips whose {a} the evaluator reads as prompted"
                 for a in ATTRIBUTES}
        descr["adherence_all"] = self.info.description
        info = {k: MetricInfo(k, "fraction", "higher", self.backend, descr[k]) for k in per}
        return MetricResult(scalars, series, info)


class EvaluatorFrechet(ClipWindowMetric):
    """Evaluator features per clip window; with a reference, the Fréchet distance per window.

    State: ``videos``, one list of window features [D] per video ("cat": ``merge``
    concatenates videos). ``compute`` on a single video returns its features as series
    ``frechet_feature_{k}`` (see :func:`features_from_series`); once the metric holds at
    least ``min_clips`` videos and has a ``reference`` (another ``EvaluatorFrechet`` filled
    with ground-truth videos, a list of per-video window-feature lists, or a file from
    :func:`save_features`), it also returns series ``frechet`` (per window, NaN where too
    few clips) and scalars ``frechet_mean`` and ``frechet_last`` (lower is better).
    ``network``: any object with ``features(clips) -> [N, D]``.
    """

    needs = frozenset({"frames", "fps", "ground_truth", "device"})

    def __init__(self, reference: Any = None, clip_frames: int = 8, fps: float = 16.0, min_clips: int = 2,
                 weights: str | None = None, device: str = "cpu", network: Any = None) -> None:
        super().__init__(clip_frames, fps, network, weights, device)
        if int(min_clips) < 2:
            raise UserError(f"min_clips must be an integer >= 2, got {min_clips!r}")
        self.min_clips = int(min_clips)
        self.reference = self._reference(reference)
        self.add_state("videos", [[]], "cat")

    @staticmethod
    def _reference(reference: Any) -> list[list[torch.Tensor]] | None:
        if reference is None:
            return None
        if isinstance(reference, EvaluatorFrechet):
            return reference.window_features()
        if isinstance(reference, (str, Path)):
            return load_features(reference)
        return [list(v) for v in reference]

    @property
    def info(self) -> MetricInfo:
        return MetricInfo("frechet_mean", "1", "lower", self.backend,
                          f"Fréchet distance of evaluator features to ground truth, mean over "
                          f"{self.clip_frames}-frame windows (set-level: needs a few dozen videos)")

    def score_clips(self, clips: torch.Tensor, start: int) -> None:
        feats = self.clip_features(clips, start).detach().double().cpu()  # [N, D]
        self.videos[-1].extend(list(feats))

    def window_features(self) -> list[list[torch.Tensor]]:
        """Per video (non-empty ones), its window features [D]."""
        return [list(v) for v in self.videos if len(v)]

    def compute(self) -> MetricResult:
        videos = self.window_features()
        series: dict[str, list[float]] = {}
        scalars: dict[str, float] = {}
        if len(videos) == 1:
            series.update(features_to_series(videos[0]))
        info = {k: MetricInfo(k, "1", "none", self.backend, "evaluator feature per window (for set-level FD)")
                for k in series}
        if self.reference is not None and len(videos) >= self.min_clips:
            curve = frechet_per_window(videos, self.reference, self.min_clips)
            valid = [v for v in curve if not math.isnan(v)]
            series["frechet"] = curve
            scalars["frechet_mean"] = sum(valid) / len(valid) if valid else math.nan
            scalars["frechet_last"] = valid[-1] if valid else math.nan
            for k in ("frechet", "frechet_mean", "frechet_last"):
                info[k] = MetricInfo(k, "1", "lower", self.backend, self.info.description)
        return MetricResult(scalars, series, info)
