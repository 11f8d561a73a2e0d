"""A fixed calibration workload, timed in the same run as the jobs.

Throughput figures of two runs on two machines (a laptop and a CI runner, or one CI runner
on a busy day) differ by the machines as much as by the code. Each run times this
workload next to its jobs; ``fps x calibration`` and ``latency / calibration`` then
compare across machines (``adabench regress``): a machine twice as slow doubles both.

A machine's speed also drifts within a run (other processes, clock changes), so the
harness times a short calibration just before every job's timed rollout and the run reports
the median over its jobs: the calibration samples the machine when the jobs do.
"""

from __future__ import annotations

import statistics
import time

SIZE = 256          # float32 matrices of SIZE x SIZE
REPEATS = 40        # multiplies per timing
ROUNDS = 7          # timings; the median is reported


JOB_ROUNDS = 3      # the per-job calibration: about 3 x 10 ms on a 2-core CPU


def calibration_ms(device: str = "cpu", rounds: int = ROUNDS) -> float:
    """Median milliseconds of ``REPEATS`` chained float32 ``SIZE x SIZE`` matrix multiplies on ``device``."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(SIZE, SIZE, generator=generator).to(device)
    b = (torch.randn(SIZE, SIZE, generator=generator) / SIZE ** 0.5).to(device)
    times = []
    for _ in range(rounds + 1):                                       # the first round warms up
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        x = a
        for _ in range(REPEATS):
            x = x @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) * 1e3


def run_calibration_ms(job_values: list[float], before_jobs: float) -> float:
    """The run's calibration: the median of its jobs' calibrations (the value timed before the jobs when
    no job has one, e.g. a store written by an older version)."""
    return statistics.median(job_values) if job_values else before_jobs
