"""Running one job: a timed rollout, a scoring (and probing) replay, every horizon scored on its prefix.

1. **Timed rollout.** The generator streams to the longest horizon with nothing attached
   and nothing else done between chunks but hashing the frames; the throughput metrics
   read its per-chunk timings (what is timed is the generator's own ``chunk.timings``).
2. **Scoring rollout.** The same rollout again, with the attention probe when a metric
   needs it and the generator offers one. Its frames must be bit-identical to the timed
   rollout's (checked chunk by chunk with a hash): probing never slows the timed rollout,
   and scoring never touches it. Frame metrics of every horizon are fed the prefix of each
   chunk that lies before their horizon, so one rollout gives every horizon (the first
   frames of a rollout do not depend on how long it goes on); optical flow is computed
   once per frame pair for all of them (:class:`~adabench.metrics.shared.SharedWork`).

A metric whose needs (``StreamingMetric.needs``) the generator or prompt cannot meet is
reported as not applicable, with the reason. Anything that goes wrong inside a job (an
exception, non-finite frames, a replay that differs) makes it a failed job with its message;
an interruption (Ctrl-C) is not caught.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adabench.chunk import Chunk
from adabench.harness.calibration import JOB_ROUNDS, calibration_ms
from adabench.harness.plan import JobSpec, ModelEntry
from adabench.metrics.base import MetricResult, StreamingMetric
from adabench.metrics.shared import SharedWork
from adabench.registry import METRICS, parse_spec

ALWAYS = frozenset({"frames", "timings", "fps", "prompt", "device"})


class JobError(Exception):
    """A job that cannot complete (its message is stored with the failed job)."""


@dataclass
class JobOutcome:
    status: str                          # "ok" | "failed"
    error: str | None
    result: dict[str, Any] | None        # see :func:`run_job`
    wall_s: float


def job_context(job: JobSpec, entry: ModelEntry, flow_backend: Any) -> tuple[dict[str, Any], frozenset[str]]:
    """(keyword arguments a metric may take, needs this job can meet)."""
    from adabench.world.prompts import parse_prompt

    gen = entry.generator
    context: dict[str, Any] = {"fps": float(gen.fps), "prompt": job.prompt, "device": str(getattr(gen, "device", job.device)),
                               "backend": flow_backend}
    available = set(ALWAYS)
    if "probe" in entry.capabilities:
        available.add("probe")
    try:
        spec = parse_prompt(job.prompt)
    except Exception:  # noqa: BLE001 - any other text: no ground truth
        spec = None
    if spec is not None:
        context["true_velocity"] = spec.velocity_at(gen.frame_size)
        context["seed"] = job.seed
        available.update({"ground_truth", "seed"})
    return context, frozenset(available)


def metric_needs(spec: str, context: dict[str, Any]) -> frozenset[str]:
    """What the metric ``spec`` declares it needs (a class attribute; a factory's product is asked)."""
    factory = METRICS.entry(parse_spec(spec)[0]).load()
    if isinstance(factory, type) and issubclass(factory, StreamingMetric):
        return factory.needs
    return METRICS.build(spec, **context).needs


def initial_frames(job: JobSpec, frame_size: int) -> torch.Tensor | None:
    """``--init gt``: PanWorld's true first frame [1, 3, H, W]; ``none``: text-to-video."""
    if job.init == "none":
        return None
    from adabench.world.panworld import render_clip
    from adabench.world.prompts import parse_prompt

    return render_clip(parse_prompt(job.prompt), job.seed, 1, size=frame_size)


def digest(frames: torch.Tensor) -> str:
    return hashlib.sha1(frames.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def prefix(chunk: Chunk, horizon: int) -> Chunk | None:
    """The part of ``chunk`` before frame ``horizon`` (None when nothing is)."""
    keep = horizon - chunk.start_frame
    if keep <= 0:
        return None
    return chunk if keep >= chunk.num_frames else dataclasses.replace(chunk, frames=chunk.frames[:keep])


def timing_chunk(chunk: Chunk) -> Chunk:
    """The chunk without its pixels (what throughput metrics read: timings, sizes, cache bytes).

    A new empty tensor, not a slice: a slice would keep the whole frames' storage alive for as
    long as the rollout's timing chunks are held, and memory would grow with the video.
    """
    frames = chunk.frames.new_empty((chunk.frames.shape[0], chunk.frames.shape[1], 0, 0))
    return dataclasses.replace(chunk, frames=frames, attention=None)


def collect(metrics: list[tuple[str, StreamingMetric]]) -> tuple[dict, dict, dict]:
    """compute() of each metric -> (scalars, series, info with the metric spec that made each name)."""
    scalars: dict[str, float] = {}
    series: dict[str, list[float]] = {}
    info: dict[str, dict[str, Any]] = {}
    for spec, metric in metrics:
        result: MetricResult = metric.compute()
        clash = sorted(k for k in (*result.scalars, *result.series) if info.get(k, {}).get("metric") not in (None, spec))
        if clash:
            raise JobError(f"metrics {info[clash[0]]['metric']!r} and {spec!r} both report {', '.join(clash)}; "
                           "a name must come from one metric (rename the plug-in's outputs)")
        scalars.update({k: float(v) for k, v in result.scalars.items()})
        series.update({k: [float(x) for x in v] for k, v in result.series.items()})
        for name, i in result.info.items():
            info[name] = {"unit": i.unit, "direction": i.direction, "backend": i.backend,
                          "description": i.description, "metric": spec}
        for name in list(result.scalars) + list(result.series):
            info.setdefault(name, {"unit": "", "direction": "none", "backend": None, "description": "",
                                   "metric": spec})
    return scalars, series, info


def run_job(job: JobSpec, entry: ModelEntry, flow_backend: Any, video_path: Path | None = None) -> JobOutcome:
    """Run one job; never raises for a failure inside the job (only for an interruption)."""
    start = time.perf_counter()
    try:
        result = _run(job, entry, flow_backend, video_path)
    except (KeyboardInterrupt, SystemExit):
        raise
    except JobError as exc:
        return JobOutcome("failed", str(exc), None, time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - a failed job is stored with its message; the run goes on
        where = traceback.extract_tb(exc.__traceback__)[-1]
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''} " \
                  f"(at {Path(where.filename).name}:{where.lineno})"
        return JobOutcome("failed", message, None, time.perf_counter() - start)
    return JobOutcome("ok", None, result, time.perf_counter() - start)


def _run(job: JobSpec, entry: ModelEntry, flow_backend: Any, video_path: Path | None) -> dict[str, Any]:
    gen = entry.generator
    context, available = job_context(job, entry, flow_backend)
    horizons, last = job.frames, job.frames[-1]
    applicable: list[tuple[str, frozenset[str]]] = []
    not_applicable: dict[str, str] = {}
    for spec in job.metrics:
        needs = metric_needs(spec, context)
        missing = sorted(needs - available)
        if missing:
            reasons = {"probe": f"{job.model} offers no attention probe",
                       "ground_truth": "the prompt is not a PanWorld prompt (no ground truth)"}
            not_applicable[spec] = "; ".join(reasons.get(m, f"needs {m}") for m in missing)
        else:
            applicable.append((spec, needs))
    timed = [s for s, n in applicable if "timings" in n]
    probed = [s for s, n in applicable if "probe" in n]
    framed = [s for s, n in applicable if "timings" not in n]
    init = initial_frames(job, gen.frame_size)
    device = getattr(gen, "device", torch.device("cpu"))

    # 1. the timed rollout: nothing attached, nothing done between chunks but a hash; the calibration
    #    workload timed just before it samples the machine's speed at the same moment
    calibration = calibration_ms(str(device), rounds=JOB_ROUNDS)
    if isinstance(device, torch.device) and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timing_chunks, hashes = [], []
    t0 = time.perf_counter()
    for chunk in gen.stream(job.prompt, job.seed, last, init=init):
        timing_chunks.append(timing_chunk(chunk))
        hashes.append(digest(chunk.frames))
    generate_s = time.perf_counter() - t0
    sets = {h: [(s, METRICS.build(s, **context)) for s in timed] for h in horizons}
    for chunk in timing_chunks:
        for h in horizons:
            part = prefix(chunk, h)
            for _, metric in sets[h] if part is not None else ():
                metric.update(part)
    results = {h: collect(sets[h]) for h in horizons}      # throughput now: peak memory is the rollout's

    # 2. the scoring rollout (probed when a metric needs it): bit-identical frames, every horizon fed
    work = SharedWork()
    sets = {h: [(s, METRICS.build(s, **context)) for s in framed] for h in horizons}
    for h in horizons:
        for _, metric in sets[h]:
            metric.share(work)
    probe = None
    if probed:
        options: dict[str, Any] = {}
        for _, metric in sets[horizons[0]]:
            options.update(metric.probe_options() if metric.needs & {"probe"} else {})
        probe = gen.attention_probe(**options)
    t0 = time.perf_counter()
    writer = None
    if video_path is not None:
        from adabench.video_io import VideoWriter
        writer = VideoWriter(video_path, fps=gen.fps, raw=True)
    try:
        stream = gen.stream(job.prompt, job.seed, last, init=init, probe=probe) if probe is not None else \
            gen.stream(job.prompt, job.seed, last, init=init)
        emitted = 0
        for number, chunk in enumerate(stream):
            if number >= len(hashes) or digest(chunk.frames) != hashes[number]:
                raise JobError(f"the replayed rollout differs from the timed one at chunk {number}: the generator is "
                               f"not deterministic for a seed, which the harness needs to score and probe it")
            if not torch.isfinite(chunk.frames).all():
                raise JobError(f"the generator produced non-finite frames (NaN or inf) in chunk {number} "
                               f"(frames {chunk.start_frame}-{chunk.start_frame + chunk.num_frames - 1})")
            if writer is not None:
                writer.write(chunk.frames)
            for h in horizons:
                part = prefix(chunk, h)
                for _, metric in sets[h] if part is not None else ():
                    metric.update(part)
            work.end_chunk()
            emitted += chunk.num_frames
        if emitted != last:
            raise JobError(f"the generator streamed {emitted} frames, {last} were asked for")
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    score_s = time.perf_counter() - t0
    info: dict[str, dict[str, Any]] = {}
    horizons_out: dict[str, dict[str, Any]] = {}
    for h in horizons:
        scalars, series, meta = collect(sets[h])
        t_scalars, t_series, t_meta = results[h]
        info.update(meta)
        info.update(t_meta)
        horizons_out[str(h)] = {"scalars": {**t_scalars, **scalars}, "series": {**t_series, **series}}
    return {"horizons": horizons_out, "info": info, "not_applicable": not_applicable,
            "timing": {"generate_s": generate_s, "score_s": score_s, "probed": probe is not None,
                       "calibration_ms": calibration,
                       "flow_pairs": work.flow_pairs_computed}}
