"""Throughput of the default streaming metrics (frames/s), per metric and all together.

Run: ``.venv/bin/python -m pytest tests/bench_metrics.py --benchmark-enable``. Timed: the
whole streaming pass (``update`` on 8-frame chunks, then ``compute``) on a CPU, fresh
accumulators per round, one warm-up round excluded; frames/s = frames / median round time,
stored in each benchmark's ``extra_info``. Not collected by the default test run (file name).
"""

from __future__ import annotations

import importlib

import pytest
import torch

from adabench.chunk import Chunk
from adabench.registry import METRICS

DEFAULT = ["flow", "dynamic-degree", "retention", "drift", "lockin"]
FRAMES = {32: 32, 256: 8}       # short videos: the whole file runs in well under a minute
CHUNK = 8


def panning(size: int, frames: int) -> torch.Tensor:
    """Smooth texture panning 2 px/frame: [T, 3, size, size]."""
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, size // 4, size // 2, generator=g),
                                           size=(size, size + 2 * frames), mode="bilinear").clamp(0, 1)[0]
    return torch.stack([base[:, :, 2 * t:2 * t + size] for t in range(frames)])


def available(name: str) -> bool:
    module = str(METRICS.entry(name).target).partition(":")[0]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        return False
    return True


def score(names: list[str], frames: torch.Tensor) -> None:
    metrics = [METRICS.build(name) for name in names]
    for i, start in enumerate(range(0, frames.shape[0], CHUNK)):
        chunk = Chunk(index=i, start_frame=start, frames=frames[start:start + CHUNK], fps=16.0)
        for metric in metrics:
            metric.update(chunk)
    for metric in metrics:
        metric.compute()


@pytest.mark.parametrize("size", sorted(FRAMES))
@pytest.mark.parametrize("names", [[n] for n in DEFAULT] + [DEFAULT], ids=DEFAULT + ["all-default"])
def test_bench_metric_fps(benchmark, names, size):
    names = [n for n in names if available(n)]
    if not names:
        pytest.skip("metric module not installed")
    frames = panning(size, FRAMES[size])
    benchmark.group = f"metrics {size}x{size}"
    benchmark.extra_info.update(metrics=",".join(names), frames=frames.shape[0], size=size, timed="update+compute, CPU")
    benchmark.pedantic(score, args=(names, frames), rounds=3, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:     # None under --benchmark-disable
        benchmark.extra_info["frames_per_s"] = frames.shape[0] / benchmark.stats.stats.median


# --- the harness's shared flow: one job's scoring, flow shared or not --------------------------
HORIZONS = (21, 51, 126)
FLOW_METRICS = ["flow", "retention", "motion-fidelity", "dynamic-degree"]


def score_horizons(frames: torch.Tensor, shared: bool) -> int | None:
    """Score every horizon on its prefix as the harness does (chunks of 3); flow pairs computed when shared."""
    from adabench.harness.runner import prefix
    from adabench.metrics.flow import get_flow_backend
    from adabench.metrics.shared import SharedWork

    backend = get_flow_backend("dis")
    work = SharedWork()
    sets = {h: [METRICS.build(n, backend=backend, true_velocity=(1.5, 0.0)) for n in FLOW_METRICS] for h in HORIZONS}
    for metrics in sets.values():
        for metric in metrics:
            if shared:
                metric.share(work)
    for i, start in enumerate(range(0, frames.shape[0], 3)):
        chunk = Chunk(index=i, start_frame=start, frames=frames[start:start + 3], fps=16.0)
        for h, metrics in sets.items():
            part = prefix(chunk, h)
            for metric in metrics if part is not None else ():
                metric.update(part)
        work.end_chunk()
    for metrics in sets.values():
        for metric in metrics:
            metric.compute()
    return work.flow_pairs_computed if shared else None


@pytest.mark.parametrize("shared", [False, True], ids=["flow-per-metric", "flow-shared"])
def test_bench_job_scoring_flow_sharing(benchmark, shared):
    frames = panning(32, 126)
    benchmark.group = "one job's flow metrics at horizons 21, 51, 126 (32x32, 126 frames)"
    benchmark.extra_info.update(metrics=",".join(FLOW_METRICS), horizons="21,51,126", timed="update+compute, CPU")
    pairs = benchmark.pedantic(score_horizons, args=(frames, shared), rounds=5, iterations=1, warmup_rounds=1)
    if shared:
        benchmark.extra_info["flow_pairs"] = pairs
        assert pairs == 125 + 62      # every consecutive pair and every pair of even frames, once


@pytest.mark.parametrize("backend", ["dis", "farneback", "raft-small", "raft-large"])
def test_bench_flow_backend(benchmark, backend):
    """Flow pairs per second of each backend on 256x256 frames (RAFT: random weights, same cost as trained)."""
    from adabench.metrics.flow import RAFTFlow, get_flow_backend

    if backend.startswith("raft-"):
        from torchvision.models.optical_flow import raft_large, raft_small

        size = backend.partition("-")[2]
        flow = RAFTFlow(size, model=(raft_large if size == "large" else raft_small)(weights=None))
    else:
        flow = get_flow_backend(backend)
    frames = panning(256, 5)                                                      # [5, 3, 256, 256]
    benchmark.group = "flow backends (4 pairs, 256x256)"
    benchmark.pedantic(flow, args=(frames[:-1], frames[1:]), rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["pairs_per_s"] = round(4 / benchmark.stats.stats.median, 2)
