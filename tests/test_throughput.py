"""Throughput from synthetic chunk timings with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from adabench.chunk import Chunk
from adabench.errors import UserError
from adabench.metrics.throughput import Throughput, percentile


def chunks(times: list[float], frames: int = 3, cache: list[int] | None = None) -> list[Chunk]:
    return [Chunk(i, i * frames, torch.zeros(frames, 3, 4, 4), 16.0, {"total": t, "denoise": t / 2},
                  cache_bytes=(cache or [0] * len(times))[i]) for i, t in enumerate(times)]


def run(metric: Throughput, items: list[Chunk]) -> dict[str, float]:
    for c in items:
        metric.update(c)
    return metric.compute().scalars


def test_constant_steady_chunks():
    s = run(Throughput(fps=16.0, warmup_chunks=1), chunks([0.5] + [0.1] * 9, cache=[100 * i for i in range(10)]))
    assert s["first_chunk_latency_ms"] == pytest.approx(500.0, rel=1e-12)
    assert s["chunk_latency_p50_ms"] == pytest.approx(100.0, abs=1e-9)
    assert s["chunk_latency_p95_ms"] == pytest.approx(100.0, abs=1e-9)             # warm-up excluded
    assert s["fps"] == pytest.approx(30.0, rel=1e-12)
    assert s["realtime_factor"] == pytest.approx(1.875, rel=1e-12)
    assert s["chunk_latency_slope_ms_per_chunk"] == pytest.approx(0.0, abs=1e-9)
    assert s["kv_cache_mb"] == pytest.approx(900e-6) and s["kv_cache_mb_last"] == pytest.approx(900e-6)
    assert s["peak_memory_mb"] > 0


def test_linearly_growing_chunks_give_their_slope_and_percentiles():
    times = [1.0] + [0.1 + 0.02 * i for i in range(1, 11)]                      # chunk i after warm-up: 0.1 + 0.02 i
    s = run(Throughput(fps=8.0), chunks(times))
    assert s["chunk_latency_slope_ms_per_chunk"] == pytest.approx(20.0, abs=1e-9)
    steady = times[1:]
    assert s["fps"] == pytest.approx(30 / sum(steady), rel=1e-12)
    assert s["realtime_factor"] == pytest.approx(30 / sum(steady) / 8.0, rel=1e-12)
    assert s["chunk_latency_p50_ms"] == pytest.approx(210.0, abs=1e-9)            # median of 0.12, 0.14 .. 0.30
    assert s["chunk_latency_p95_ms"] == pytest.approx(1e3 * (0.12 + 0.95 * 9 * 0.02), abs=1e-9)


def test_a_slope_needs_four_chunks_after_warm_up():
    growing = [1.0] + [0.1 + 0.02 * i for i in range(1, 5)]                    # 4 chunks after warm-up
    assert run(Throughput(), chunks(growing))["chunk_latency_slope_ms_per_chunk"] == pytest.approx(20.0, abs=1e-9)
    short = run(Throughput(), chunks(growing[:4]))                               # 3 after warm-up: no slope
    assert math.isnan(short["chunk_latency_slope_ms_per_chunk"])
    assert short["fps"] == pytest.approx(9 / sum(growing[1:4]), rel=1e-12)       # the rest is still measured


def test_percentile_matches_numpy_linear_interpolation():
    values = [3.0, 1.0, 4.0, 1.5, 9.0]
    for q in (0, 10, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(torch.quantile(torch.tensor(values, dtype=torch.float64), q / 100).item())


def test_untimed_prefill_is_skipped_and_new_videos_restart_warmup():
    prefill = Chunk(0, 0, torch.zeros(1, 3, 4, 4), 16.0, {"commit": 0.01}, cache_bytes=10)
    video = [Chunk(i + 1, 1 + 3 * i, torch.zeros(3, 3, 4, 4), 16.0, {"total": t}, cache_bytes=20)
             for i, t in enumerate([0.5, 0.1, 0.1])]
    m = Throughput(fps=16.0)
    s = run(m, [prefill, *video, prefill, *video])                              # two videos in a row
    assert s["first_chunk_latency_ms"] == pytest.approx(500.0, rel=1e-12)
    assert s["fps"] == pytest.approx(30.0, rel=1e-12)
    other = Throughput(fps=16.0)
    run(other, video)
    m.merge(other)                                                               # a third video from another rank
    assert m.compute().scalars["fps"] == pytest.approx(30.0, rel=1e-12)


def test_info_says_what_is_timed_and_bad_arguments_fail():
    result = Throughput().compute()
    assert math.isnan(result.scalars["fps"])
    assert "denoise+decode+commit" in result.info["fps"].description
    assert result.info["peak_memory_mb"].backend == "process-peak-rss"
    with pytest.raises(UserError):
        Throughput(fps=0)
    with pytest.raises(UserError):
        Throughput(warmup_chunks=-1)
