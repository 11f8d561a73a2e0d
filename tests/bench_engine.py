"""Engine speed (pytest-benchmark; run with ``make perf``, skipped by ``make test``).

- per-chunk latency of each default model at chunk 5 and at chunk 200: the ratio of the
  medians must stay within 1.10 (committing is O(1) in rollout length);
- frames per second of a whole 126-frame rollout of the default model (target >= 100 on
  the reference 2-core CPU). What is timed: denoising + decoding + commit, end to end in
  the generator, prompt parsing and video writing excluded; warm-up rollout excluded.
"""

from __future__ import annotations

import itertools

import pytest

from adabench.registry import GENERATORS

MODELS = ("adastate", "ff-anchor", "sliding-window")
PROMPT = "a fast pan left over a desert with red circles"
ROUNDS = 25
_medians: dict[tuple[str, int], float] = {}


def _chunk_stepper(model: str, at_chunk: int):
    gen = GENERATORS.build(model)
    stream = gen.stream(PROMPT, 0, gen.chunk_frames * (at_chunk + ROUNDS + 10))
    for _ in itertools.islice(stream, at_chunk):
        pass
    return lambda: next(stream)


@pytest.mark.parametrize("at_chunk", [5, 200])
@pytest.mark.parametrize("model", MODELS)
def test_bench_chunk_latency(benchmark, model, at_chunk):
    step = _chunk_stepper(model, at_chunk)
    benchmark.group = f"chunk latency {model}"
    benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=2)
    _medians[(model, at_chunk)] = benchmark.stats.stats.median
    if (model, 5) in _medians and (model, 200) in _medians:
        ratio = _medians[(model, 200)] / _medians[(model, 5)]
        benchmark.extra_info["ratio_chunk200_over_chunk5"] = round(ratio, 3)
        print(f"\n{model}: median chunk latency {_medians[(model, 5)] * 1e3:.2f} ms at chunk 5, "
              f"{_medians[(model, 200)] * 1e3:.2f} ms at chunk 200, ratio {ratio:.3f} (target <= 1.10)")
        assert ratio <= 1.10, f"{model}: per-chunk cost grows with rollout length (ratio {ratio:.3f})"


@pytest.mark.parametrize("model", MODELS)
def test_bench_rollout_fps(benchmark, model):
    gen = GENERATORS.build(model)
    frames = 126

    def rollout():
        return sum(c.num_frames for c in gen.stream(PROMPT, 0, frames))

    benchmark.group = "rollout fps (126 frames)"
    benchmark.pedantic(rollout, rounds=5, iterations=1, warmup_rounds=1)
    fps = frames / benchmark.stats.stats.median
    benchmark.extra_info["fps"] = round(fps, 1)
    print(f"\n{model}: {fps:.1f} frames/s over a 126-frame rollout (median of 5; target >= 100)")
    if model == "adastate":       # the default model
        assert fps >= 100, f"default model generates {fps:.1f} frames/s, below the 100 frames/s target"
