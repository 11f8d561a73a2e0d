"""Engine speed (pytest-benchmark; run with ``make perf``, skipped by ``make test``).

- per-chunk latency of each default model at chunk 5 and at chunk 200, the two rollouts
  stepped in alternation so that the machine's slow and fast phases fall on both alike:
  the median of the per-round ratios must stay within 1.10 (committing is O(1) in rollout
  length);
- frames per second of a whole 126-frame rollout of the default model (target >= 50 on
  the reference 2-core CPU: a real-time factor of at least 3 at its 16 fps playback rate).
  What is timed: denoising + decoding + commit, end to end in the generator, prompt parsing
  and video writing excluded; warm-up rollout excluded;
- a 21-frame rollout with the attention probe, against the same rollout without it (the
  ratio in ``extra_info``; the harness probes on a replay, never on the timed rollout).
"""

from __future__ import annotations

import itertools
import statistics
import time

import pytest

from adabench.registry import GENERATORS

MODELS = ("adastate", "ff-anchor", "sliding-window")
PROMPT = "a fast pan left over a desert with red circles"
ROUNDS = 25
WARMUP = 2
TARGET_FPS = 50.0     # real-time factor >= 3 at the embedded models' 16 fps


def _chunk_stepper(model: str, at_chunk: int):
    gen = GENERATORS.build(model)
    stream = gen.stream(PROMPT, 0, gen.chunk_frames * (at_chunk + ROUNDS + WARMUP + 10))
    for _ in itertools.islice(stream, at_chunk):
        pass
    return lambda: next(stream)


@pytest.mark.parametrize("model", MODELS)
def test_bench_chunk_latency(benchmark, model):
    steppers = {5: _chunk_stepper(model, 5), 200: _chunk_stepper(model, 200)}
    seconds: dict[int, list[float]] = {5: [], 200: []}
    rounds = itertools.count()

    def one_chunk_of_each():
        order = (5, 200) if next(rounds) % 2 == 0 else (200, 5)
        for at in order:
            start = time.perf_counter()
            steppers[at]()
            seconds[at].append(time.perf_counter() - start)

    benchmark.group = "chunk latency (one chunk at 5 + one at 200)"
    benchmark.pedantic(one_chunk_of_each, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP)
    early, late = seconds[5][WARMUP:], seconds[200][WARMUP:]
    ratio = statistics.median(b / a for a, b in zip(early, late))
    benchmark.extra_info.update(median_ms_chunk5=round(statistics.median(early) * 1e3, 2),
                                median_ms_chunk200=round(statistics.median(late) * 1e3, 2),
                                ratio_chunk200_over_chunk5=round(ratio, 3))
    print(f"\n{model}: median chunk latency {statistics.median(early) * 1e3:.2f} ms at chunk 5, "
          f"{statistics.median(late) * 1e3:.2f} ms at chunk 200, median per-round ratio {ratio:.3f} (target <= 1.10)")
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
    print(f"\n{model}: {fps:.1f} frames/s over a 126-frame rollout (median of 5; target >= {TARGET_FPS:.0f}), "
          f"real-time factor {fps / gen.fps:.1f}")
    if model == "adastate":       # the default model
        assert fps >= TARGET_FPS, f"default model generates {fps:.1f} frames/s, below the {TARGET_FPS:.0f} frames/s target"


@pytest.mark.parametrize("model", MODELS)
def test_bench_attention_probe(benchmark, model):
    """A 21-frame rollout with the attention probe, against the same rollout without it (ratio in extra_info)."""
    gen = GENERATORS.build(model)
    frames = 21

    def rollout(probed: bool) -> int:
        probe = gen.attention_probe() if probed else None
        return sum(c.num_frames for c in gen.stream(PROMPT, 0, frames, probe=probe))

    plain = []
    for _ in range(WARMUP + 5):
        start = time.perf_counter()
        rollout(False)
        plain.append(time.perf_counter() - start)
    benchmark.group = "attention probe (21-frame rollout, probed)"
    benchmark.pedantic(rollout, args=(True,), rounds=5, iterations=1, warmup_rounds=1)
    ratio = benchmark.stats.stats.median / statistics.median(plain[WARMUP:])
    benchmark.extra_info.update(median_s_unprobed=round(statistics.median(plain[WARMUP:]), 4),
                                probed_over_unprobed=round(ratio, 2))
    print(f"\n{model}: probed rollout {ratio:.2f}x the unprobed one")
