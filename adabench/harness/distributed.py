"""Scale-out: which jobs this process runs, and how the shards come back together.

- Single process: every job, store file ``main``.
- ``torchrun --nproc_per_node N -m adabench compare ...`` (one or many nodes): rank r of W
  runs its share of the plan's jobs on its own device (``cuda:LOCAL_RANK`` with
  ``--device cuda``) and writes store file ``rank-r-of-W``; each model's jobs are dealt
  round-robin over the ranks (:meth:`Shard.assign`). One collective runs at the
  start, while every rank is alive: a gloo barrier that also hands rank 0's run id to all.
  After that, no collective: each rank writes a done marker (with the run id) when its jobs
  are finished, and rank 0 polls the file system for the markers, then merges the rank
  files into ``main`` and aggregates. A crashed rank cannot hang anything (torchrun stops
  the others; a rerun resumes from what every rank stored).
- ``--shard K/N`` without torchrun (one Slurm array task per shard): the K-th share of the jobs,
  store file ``shard-K-of-N``, results of that shard alone; ``adabench merge`` joins shard
  folders, and shards writing into one folder are read as one store anyway.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from adabench import atomic
from adabench.errors import UserError

POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Shard:
    index: int            # this process's shard, from 0
    count: int            # how many shards
    local_rank: int       # device index on this node (torchrun)
    torchrun: bool

    @property
    def writer(self) -> str:
        if self.count == 1:
            return "main"
        return f"rank-{self.index}-of-{self.count}" if self.torchrun else f"shard-{self.index + 1}-of-{self.count}"

    @property
    def leader(self) -> bool:
        """The process that writes the plan, merges and aggregates (rank 0; every --shard for itself)."""
        return self.index == 0 or not self.torchrun

    def assign(self, jobs: list) -> list[bool]:
        """Which of the plan's ``jobs`` this shard runs: each model's jobs dealt round-robin over the
        shards, so that every shard gets its share of every model (a cheap reference row and an
        expensive model do not end up on different ranks)."""
        seen: dict[str, int] = {}
        out = []
        for job in jobs:
            position = seen.get(job.model, 0)
            seen[job.model] = position + 1
            out.append(position % self.count == self.index)
        return out


def shard_of(shard: tuple[int, int] | None) -> Shard:
    """This process's shard from torchrun's environment or ``--shard K/N`` (parsed, 1-based)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        if shard is not None:
            raise UserError("--shard cannot be combined with torchrun (torchrun already shards the jobs by rank)")
        return Shard(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")), True)
    if shard is not None:
        return Shard(shard[0] - 1, shard[1], 0, False)
    return Shard(0, 1, 0, False)


def start(shard: Shard, timeout_s: float = 600.0) -> str:
    """One barrier over gloo at the start (every rank has planned), returning rank 0's run id."""
    run_id = uuid.uuid4().hex
    if not shard.torchrun:
        return run_id
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
    try:
        box = [run_id if shard.index == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return str(box[0])
    finally:
        dist.destroy_process_group()


def marker(store_dir: Path, index: int, count: int) -> Path:
    return store_dir / f"rank-{index}-of-{count}.done"


def finish(shard: Shard, store_dir: Path, run_id: str) -> None:
    """Say (on the file system) that this rank's jobs are all stored."""
    if shard.torchrun:
        atomic.write_json(marker(store_dir, shard.index, shard.count), {"run_id": run_id, "time": time.time()})


def wait_for_ranks(shard: Shard, store_dir: Path, run_id: str, timeout_s: float | None = None) -> list[int]:
    """Rank 0: wait until every rank has finished this run; returns the ranks still missing at timeout."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        missing = []
        for rank in range(1, shard.count):
            try:
                done = json.loads(marker(store_dir, rank, shard.count).read_text()).get("run_id") == run_id
            except (OSError, ValueError):
                done = False
            if not done:
                missing.append(rank)
        if not missing or (deadline is not None and time.monotonic() > deadline):
            return missing
        time.sleep(POLL_SECONDS)


def clear_markers(store_dir: Path) -> None:
    for path in store_dir.glob("rank-*-of-*.done"):
        path.unlink(missing_ok=True)
