"""Throughput: latency, steady FPS, real-time factor, memory, from the generator's own chunk timings.

What is timed: ``chunk.timings["total"]``, the generator's chunk time (denoise + decode +
commit, end to end in the generator, GPU synchronised by the generator). Nothing is timed
here. Chunks without a ``"total"`` timing (image-to-video prefill: given frames, not
generated) are not timed; their cache bytes still count.

Chunks are numbered per video in the order they arrive (the number restarts when a chunk's
index does not increase), so that accumulators merged across videos or ranks stay correct:
the first ``warmup_chunks`` timed chunks of each video are warm-up.

- ``first_chunk_latency_ms``: time of the first timed chunk (mean over videos);
- ``chunk_latency_p50_ms`` / ``_p95_ms``: percentiles (linear interpolation) after warm-up;
- ``chunk_latency_slope_ms_per_chunk``: least-squares slope of chunk time against chunk number,
  after warm-up (0 = no slow-down as the rollout grows); none (NaN) with fewer than
  ``MIN_SLOPE_CHUNKS`` chunk numbers after warm-up: a line through two or three chunk times
  is timer noise, not growth (a 9-frame rollout, 3 chunks, has 2);
- ``fps``: steady frames per second, frames / time of the chunks after warm-up;
  ``realtime_factor`` = fps / playback fps (> 1 = faster than real time);
- ``kv_cache_mb``: MB (10^6 bytes) of K/V held after a chunk, the largest; ``kv_cache_mb_last``
  after the last chunk;
- ``peak_memory_mb``: on CUDA ``torch.cuda.max_memory_allocated`` read at compute time
  (the harness resets it per job); on CPU the peak resident set size of the whole process
  (``resource.getrusage``), which includes everything the process did before.
"""

from __future__ import annotations

import math
import sys

import torch

from adabench.chunk import Chunk
from adabench.errors import UserError
from adabench.metrics.base import MetricInfo, MetricResult, StreamingMetric

TIMED = "generator chunk time: denoise+decode+commit (end to end in the generator)"
MIN_SLOPE_CHUNKS = 4            # distinct chunk numbers after warm-up needed for a latency slope


def percentile(values: list[float], q: float) -> float:
    """q-th percentile (0..100) with linear interpolation (numpy's default); NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q / 100 * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def slope(x: list[float], y: list[float]) -> float:
    """Least-squares slope of y against x; NaN with fewer than two distinct x."""
    if len(x) < 2:
        return math.nan
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxx = sum((a - mx) ** 2 for a in x)
    if sxx == 0:
        return math.nan
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx


def peak_memory(device: str | torch.device | None) -> tuple[float, str]:
    """(bytes, backend label): CUDA peak allocated on a CUDA device, else the process peak RSS."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return float(torch.cuda.max_memory_allocated(dev)), "cuda-max-allocated"
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(rss if sys.platform == "darwin" else rss * 1024), "process-peak-rss"


class Throughput(StreamingMetric):
    """Speed and memory of a streaming generator, from ``chunk.timings["total"]`` and ``chunk.cache_bytes``."""

    needs = frozenset({"timings", "fps", "device"})

    def __init__(self, fps: float | None = 16.0, warmup_chunks: int = 1, device: str | None = None) -> None:
        super().__init__()
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0):
            raise UserError(f"throughput fps={fps!r} is invalid; accepted: a number > 0 (playback frame rate)")
        if isinstance(warmup_chunks, bool) or not isinstance(warmup_chunks, int) or warmup_chunks < 0:
            raise UserError(f"throughput warmup_chunks={warmup_chunks!r} is invalid; accepted: an integer >= 0")
        self.fps, self.warmup_chunks, self.device = fps, warmup_chunks, device
        self.add_state("records", [], "cat")      # timed chunks: (number in video, frames, seconds)
        self.add_state("cache", [], "cat")        # every chunk: cache bytes after it
        self.add_state("playback_fps", 0.0, "max")
        self._last_index: int | None = None
        self._number = 0

    def reset(self) -> None:
        super().reset()
        self._last_index, self._number = None, 0

    @property
    def info(self) -> MetricInfo:
        return MetricInfo("fps", "frames/s", "higher", None,
                          f"frames / time after {self.warmup_chunks} warm-up chunk(s); {TIMED}")

    def update(self, chunk: Chunk) -> None:
        if self._last_index is not None and chunk.index <= self._last_index:
            self._number = 0                                                   # a new video
        self._last_index = chunk.index
        self.cache.append(int(chunk.cache_bytes))
        self.playback_fps = max(self.playback_fps, float(chunk.fps))
        if "total" in chunk.timings:
            self.records.append((self._number, chunk.num_frames, float(chunk.timings["total"])))
            self._number += 1

    def compute(self) -> MetricResult:
        first = [t for n, _, t in self.records if n == 0]
        steady = [(n, f, t) for n, f, t in self.records if n >= self.warmup_chunks]
        times = [t for _, _, t in steady]
        numbers = [float(n) for n, _, _ in steady]
        growth = slope(numbers, times) if len(set(numbers)) >= MIN_SLOPE_CHUNKS else math.nan
        total_time = sum(times)
        fps = sum(f for _, f, _ in steady) / total_time if total_time > 0 else math.nan
        playback = self.fps if self.fps is not None else (self.playback_fps or math.nan)
        memory, memory_backend = peak_memory(self.device)
        ms, mb = 1e3, 1e-6
        scalars = {
            "first_chunk_latency_ms": sum(first) / len(first) * ms if first else math.nan,
            "chunk_latency_p50_ms": percentile(times, 50) * ms,
            "chunk_latency_p95_ms": percentile(times, 95) * ms,
            "chunk_latency_slope_ms_per_chunk": growth * ms,
            "fps": fps,
            "realtime_factor": fps / playback,
            "kv_cache_mb": max(self.cache) * mb if self.cache else math.nan,
            "kv_cache_mb_last": self.cache[-1] * mb if self.cache else math.nan,
            "peak_memory_mb": memory * mb,
        }
        warm = f"after {self.warmup_chunks} warm-up chunk(s); {TIMED}"
        info = {
            "first_chunk_latency_ms": ("ms", "lower", None, f"time of the first generated chunk; {TIMED}"),
            "chunk_latency_p50_ms": ("ms", "lower", None, f"median chunk time {warm}"),
            "chunk_latency_p95_ms": ("ms", "lower", None, f"95th percentile chunk time {warm}"),
            "chunk_latency_slope_ms_per_chunk": ("ms/chunk", "lower", None,
                                                 f"least-squares slope of chunk time against chunk number {warm} "
                                                 f"(none under {MIN_SLOPE_CHUNKS} chunks)"),
            "fps": ("frames/s", "higher", None, f"frames / time {warm}"),
            "realtime_factor": ("ratio", "higher", None, f"fps / playback fps ({playback:g}); {TIMED}"),
            "kv_cache_mb": ("MB", "lower", None, "largest K/V held in the cache after a chunk (10^6 bytes)"),
            "kv_cache_mb_last": ("MB", "lower", None, "K/V held in the cache after the last chunk (10^6 bytes)"),
            "peak_memory_mb": ("MB", "lower", memory_backend,
                               "peak CUDA memory allocated (reset per job by the harness)"
                               if memory_backend.startswith("cuda") else
                               "peak resident set size of the whole process (process-wide, not per job)"),
        }
        result = MetricResult(scalars=scalars, series={"chunk_latency_ms": [t * ms for _, _, t in self.records]})
        for name, (unit, direction, backend, text) in info.items():
            result.info[name] = MetricInfo(name, unit, direction, backend, text)
        result.info["chunk_latency_ms"] = MetricInfo("chunk_latency_ms", "ms", "lower", None,
                                                     f"per timed chunk; {TIMED}")
        return result
