"""``adabench compare``: plan, run the jobs this process owns, store each, aggregate.

The same entry point runs as a single process, as one rank of ``torchrun``, or as one
``--shard K/N``; see :mod:`adabench.harness.distributed`. Rerunning with the same ``--out``
skips finished jobs; ``--resume`` also lets the plan change (new jobs run, matching ones are
reused, the old rows stay in the store).
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adabench import __version__, atomic
from adabench.errors import UserError
from adabench.harness import distributed
from adabench.harness.aggregate import PLAN_FILE, STORE_DIR, aggregate, headline_table
from adabench.harness.calibration import JOB_ROUNDS, REPEATS, ROUNDS, SIZE, calibration_ms
from adabench.harness.plan import Plan, build_plan, parse_shard
from adabench.harness.runner import run_job
from adabench.harness.store import SCHEMA_VERSION, Store

VIDEOS_DIR = "videos"


def git_commit() -> str | None:
    """The commit of the adabench checkout this runs from (None for an installed copy or without git)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def host_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def run_info(argv: list[str], plan: Plan, shard: distributed.Shard, build_device: str, warmup: int = 1) -> dict:
    import torch

    cuda = plan.device == "cuda"
    device_name = torch.cuda.get_device_name(torch.device(build_device)) if cuda else host_cpu()
    threads = torch.get_num_threads()
    timing = (f"per chunk, end to end in the generator (denoise + decode + commit), first {warmup} generated "
              f"chunk(s) excluded from fps and percentiles; timed rollout unprobed and unscored (scoring and the "
              f"attention probe run on a bit-identical replay); {'CUDA synchronised, ' if cuda else ''}"
              f"{threads} thread(s) per process, {shard.count} process(es) sharing the host")
    return {"command": shlex.join(["adabench", *argv]), "adabench": __version__, "git_commit": git_commit(),
            "python": platform.python_version(), "torch": torch.__version__, "device": plan.device,
            "device_name": device_name, "host_cpu": host_cpu(), "host": platform.node(), "threads": threads,
            "processes": shard.count, "init": plan.inits, "frames": list(plan.frames), "seeds": plan.seeds,
            "prompts": plan.prompts, "metrics": list(plan.metrics), "timing_mode": timing,
            "calibration_ms": calibration_ms(build_device),
            "calibration": f"ms of {REPEATS} chained float32 {SIZE}x{SIZE} matrix multiplies, {threads} thread(s): "
                           f"the median over the jobs of the median of {JOB_ROUNDS} timings just before each "
                           f"job's timed rollout (calibration_ms_before_jobs: {ROUNDS} timings before the jobs)",
            "started": time.time(), "plan_hash": plan.hash}


def model_spec_hash(plan: Plan, name: str) -> str:
    """What a model's numbers in this run depend on, less adabench's version: its jobs' specs
    (model, weights, generator, prompts, seeds, init modes, horizons, device, dtype, metrics).
    Two runs whose numbers for a model may be compared (``adabench regress``) share it."""
    import hashlib
    import json

    jobs = [{k: v for k, v in j.to_dict().items() if k not in ("hash", "version", "model")}
            for j in plan.jobs if j.model == name]
    return hashlib.sha256(json.dumps(jobs, sort_keys=True).encode()).hexdigest()[:16]


def plan_document(plan: Plan, run: dict[str, Any]) -> dict[str, Any]:
    models = {}
    for m in plan.models:
        role = "reference" if m.name == plan.reference else ("baseline" if m.name == plan.baseline else "model")
        models[m.name] = {"spec": m.spec, "spec_hash": model_spec_hash(plan, m.name), "role": role,
                          "describe": m.describe, "capabilities": sorted(m.capabilities)}
    return {"schema_version": SCHEMA_VERSION, "plan_hash": plan.hash, "baseline": plan.baseline,
            "reference": plan.reference, "inits": plan.inits, "frames": list(plan.frames), "models": models,
            "jobs": [j.to_dict() for j in plan.jobs], "run": run}


def check_out(out: Path, plan: Plan, resume: bool) -> None:
    """Refuse an output folder we must not write into; nothing is changed here."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; accepted: a new or empty folder, or a folder of an earlier run")
    plan_file = out / PLAN_FILE
    if out.is_dir() and not plan_file.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty and holds no adabench run; accepted: a new or empty folder, "
                        "or a folder of an earlier run")
    if plan_file.exists():
        import json
        try:
            old = json.loads(plan_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        if old.get("plan_hash") != plan.hash and not resume:
            models = ", ".join(old.get("models", {})) or "unknown models"
            raise UserError(f"--out {out} holds a run with a different plan ({len(old.get('jobs', []))} jobs: "
                            f"{models}); add --resume to keep its finished jobs and run this plan there, "
                            "or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--out {out} cannot be written: {exc.strerror or exc}") from None


def run_compare(args: Any, argv: list[str]) -> int:
    shard = distributed.shard_of(parse_shard(args.shard))
    build_device = args.device
    if shard.torchrun and args.device.startswith("cuda"):
        build_device = f"cuda:{shard.local_rank}"
    plan = build_plan(args.models, args.prompts, args.frames, args.seeds, args.init, args.metrics,
                      device=args.device, build_device=build_device)
    out = Path(args.out)
    check_out(out, plan, args.resume)
    store_dir = out / STORE_DIR
    videos = out / VIDEOS_DIR
    if shard.leader:
        atomic.write_json(out / PLAN_FILE, plan_document(plan, run_info(argv, plan, shard, build_device)))
        if shard.index == 0:
            store_dir.mkdir(exist_ok=True)
            distributed.clear_markers(store_dir)
            if videos.is_dir():
                atomic.remove_stale_parts(videos)        # temporaries of a killed run
    run_id = distributed.start(shard)                    # every rank has planned the same jobs
    store = Store(store_dir, shard.writer)
    finished = store.finished()
    assigned = [job for job, mine in zip(plan.jobs, shard.assign(plan.jobs)) if mine]
    mine = [job for job in assigned if job.hash not in finished]
    skipped = len(assigned) - len(mine)
    if args.save_videos:
        videos.mkdir(exist_ok=True)
    failed = run_jobs(plan, mine, store, videos if args.save_videos else None,
                      quiet=args.quiet or (shard.torchrun and shard.index != 0), label=shard.writer)
    store.close()
    distributed.finish(shard, store_dir, run_id)
    say = (lambda text: print(text, file=sys.stderr)) if not (shard.torchrun and shard.index) else (lambda text: None)
    say(f"adabench compare: {shard.writer}: {len(mine)} job(s) run, {skipped} already stored, {failed} failed")
    if not shard.leader:
        return 1 if failed else 0
    if shard.torchrun:
        missing = distributed.wait_for_ranks(shard, store_dir, run_id)
        if missing:
            say(f"adabench compare: ranks {missing} did not finish; their stored jobs are kept")
        Store(store_dir, "main").merge(p for p in store_dir.glob("rank-*-of-*.sqlite"))
        distributed.clear_markers(store_dir)
    results = aggregate(out)
    print(headline_table(results))
    from adabench.harness.report import render_report

    page = render_report(out)
    total_failed = results["run"]["jobs_failed"]
    say(f"adabench compare: {results['run']['jobs_ok']} of {results['run']['jobs_planned']} jobs finished, "
        f"{total_failed} failed, {results['run']['jobs_missing']} not run here; results: {out / 'results.json'}, "
        f"report: {page}")
    return 1 if total_failed or failed else 0


def run_jobs(plan: Plan, jobs: list, store: Store, videos: Path | None, quiet: bool, label: str) -> int:
    """Run and store each job in order, with one progress bar; returns how many failed."""
    from tqdm import tqdm

    from adabench.metrics.flow import get_flow_backend

    backend = get_flow_backend("dis")                    # one backend shared by every flow metric
    failed = 0
    with tqdm(total=len(jobs), unit="job", file=sys.stderr, disable=True if quiet else None,
              dynamic_ncols=True) as bar:
        for job in jobs:
            entry = plan.model(job.model)
            bar.set_postfix_str(f"{job.model} seed {job.seed} {job.init}", refresh=False)
            video = videos / f"{job.hash}.mp4" if videos is not None else None
            outcome = run_job(job, entry, backend, video)
            store.put(job, outcome, entry.describe)
            if outcome.status != "ok":
                failed += 1
                tqdm.write(f"adabench compare: job failed: {job.model} / {job.prompt!r} / seed {job.seed} / "
                           f"init {job.init}: {outcome.error}", file=sys.stderr)
            else:
                gen_s = outcome.result["timing"]["generate_s"]
                bar.set_postfix_str(f"{job.model}, {job.frames[-1] / gen_s:.0f} frames/s", refresh=False)
            bar.update(1)
    return failed
