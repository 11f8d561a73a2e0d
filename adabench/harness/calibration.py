"""A fixed calibration workload, timed in the same run as the jobs.

Throughput figures of two runs on two machines (a laptop and a CI runner, or one CI runner
on a busy day) differ by the machines as much as by the code. Each run times this
workload next to its jobs; ``fps x calibration`` and ``latency / calibration`` then
compare across machines (``adabench regress``): a machine twice as slow doubles both.
"""

from __future__ import annotations

import statistics
import time

SIZE = 256          # float32 matrices of SIZE x SIZE
REPEATS = 40        # multiplies per timing
ROUNDS = 7          # timings; the median is reported


def calibration_ms(device: str = "cpu") -> float:
    """Median milliseconds of ``REPEATS`` chained float32 ``SIZE x SIZE`` matrix multiplies on ``device``."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(SIZE, SIZE, generator=generator).to(device)
    b = (torch.randn(SIZE, SIZE, generator=generator) / SIZE ** 0.5).to(device)
    times = []
    for _ in range(ROUNDS + 1):                                       # the first round warms up
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
