"""What every metric is: display metadata, a pure function, and a streaming accumulator.

Accumulators follow torchmetrics' shape: ``update(chunk)`` / ``compute()`` / ``reset()``,
with every piece of state declared through :meth:`StreamingMetric.add_state` together
with its reduction, so that accumulators filled on different ranks (or different parts
of a video) combine with :meth:`StreamingMetric.merge`. Never keep frames beyond what a
window needs: running sums, per-window series and at most a few floats per frame, so that
a 10-minute video is never held in memory.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from adabench.chunk import Chunk

Direction = Literal["higher", "lower", "none"]
Reduction = Literal["sum", "max", "min", "cat"]

# What a metric can need from whoever feeds it (the harness reads ``StreamingMetric.needs``):
NEEDS = {
    "frames": "the generated frames (from a rollout that nothing else slows)",
    "timings": "the generator's per-chunk timings and cache sizes (from the timed rollout)",
    "probe": "attention statistics per chunk (a probed rollout; the generator must offer 'probe')",
    "fps": "the playback frame rate, as keyword fps",
    "prompt": "the prompt text, as keyword prompt",
    "ground_truth": "PanWorld ground truth for the prompt (keyword true_velocity; PanWorld prompts only)",
    "device": "the run's device, as keyword device",
    "seed": "the rollout's seed, as keyword seed (with ground_truth: the same seed's ground truth)",
}


@dataclass(frozen=True)
class MetricInfo:
    """How a number is displayed and compared; travels with every value."""

    name: str                   # e.g. "flow_magnitude_mean"
    unit: str                   # e.g. "px/frame", "fraction", "1"
    direction: Direction        # which way is better; "none" when neither is
    backend: str | None = None  # e.g. "flow=dis"; part of the number's identity
    description: str = ""


@dataclass
class MetricResult:
    """Scalars for the whole video plus per-window series (one value per window)."""

    scalars: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, MetricInfo] = field(default_factory=dict)   # per scalar / series name

    def update(self, other: "MetricResult") -> None:
        self.scalars.update(other.scalars)
        self.series.update(other.series)
        self.info.update(other.info)


class StreamingMetric(ABC):
    """A metric fed chunk by chunk with bounded memory.

    ``needs`` declares what the metric needs (keys of :data:`NEEDS`): a feeder that cannot
    provide one of them reports the metric as not applicable instead of failing.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"frames"})

    def __init__(self) -> None:
        self._defaults: dict[str, Any] = {}
        self._reductions: dict[str, Reduction] = {}

    def add_state(self, name: str, default: Any, reduce: Reduction) -> None:
        """Declare a piece of state, its starting value and how two ranks' values combine."""
        self._defaults[name] = copy.deepcopy(default)
        self._reductions[name] = reduce
        setattr(self, name, copy.deepcopy(default))

    def reset(self) -> None:
        for name, default in self._defaults.items():
            setattr(self, name, copy.deepcopy(default))

    def merge(self, other: "StreamingMetric") -> None:
        """Fold ``other``'s state (same metric, another shard of the data) into this one."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for name, reduce in self._reductions.items():
            mine, theirs = getattr(self, name), getattr(other, name)
            if reduce == "sum":
                setattr(self, name, mine + theirs)
            elif reduce == "max":
                setattr(self, name, max(mine, theirs))
            elif reduce == "min":
                setattr(self, name, min(mine, theirs))
            elif reduce == "cat":
                setattr(self, name, list(mine) + list(theirs))

    def probe_options(self) -> dict[str, Any]:
        """Options a metric that needs "probe" asks of the generator's ``attention_probe``."""
        return {}

    def work_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) this metric's measures run at for frames of ``height`` x ``width``: their own,
        unless the metric scales frames down to bound memory (flow and SSIM, see
        :mod:`adabench.metrics.resolution`); ``adabench score`` reports it per measure."""
        return height, width

    def share(self, work: Any) -> None:
        """Use ``work`` (a :class:`~adabench.metrics.shared.SharedWork`) for computations that
        other metrics of the same video need too; metrics that share nothing ignore it."""

    @property
    @abstractmethod
    def info(self) -> MetricInfo:
        """The metric's primary identity (name, unit, direction, backend)."""

    @abstractmethod
    def update(self, chunk: Chunk) -> None:
        """Consume one chunk (frames [F, 3, H, W] in [0, 1], in video order)."""

    @abstractmethod
    def compute(self) -> MetricResult:
        """Scalars and series for everything seen since the last reset."""
