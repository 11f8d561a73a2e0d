"""``make bench``: the embedded default comparison, until the full harness lands.

Runs every model on a prompt suite with the same seeds (image-to-video from PanWorld's
ground-truth first frame, so each video can be held against ground truth from frame 0),
streams each chunk into the metrics, writes the videos, per-video JSON records and a
Markdown report with per-model means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import re
import sys
import time
from pathlib import Path

import torch

from adabench.errors import EXIT_USER_ERROR, UserError

DEFAULT_MODELS = "panworld-gt,adastate,ff-anchor,sliding-window"
DEFAULT_METRICS = "flow,motion-fidelity,dynamic-degree,retention,drift,lockin,adherence,attention,throughput"
REPORT_COLUMNS = ("flow_magnitude_mean", "motion_ratio", "still_motion", "dynamics_retention", "dynamic_degree_clips",
                  "drift_sharpness_start_end", "lockin_end", "adherence_motion", "adherence_all", "attn_anchor_mass",
                  "attn_anchor_mass_rel", "steady_fps")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m adabench.bench", description=__doc__)
    p.add_argument("--out", default="reports/bench")
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--suite", default="panworld-smoke")
    p.add_argument("--frames", default="21,51", help="comma-separated horizons; one rollout per job, scored per prefix")
    p.add_argument("--seeds", default="0")
    p.add_argument("--metrics", default=DEFAULT_METRICS)
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def _feed(metric_sets: dict[int, list], chunk) -> None:
    """Give each horizon's metrics the part of ``chunk`` that lies before that horizon."""
    for horizon, metrics in metric_sets.items():
        keep = horizon - chunk.start_frame
        if keep <= 0:
            continue
        part = chunk if keep >= chunk.num_frames else dataclasses.replace(chunk, frames=chunk.frames[:keep])
        for metric in metrics:
            metric.update(part)


def score_job(generator, prompt: str, seed: int, horizons: list[int], metric_specs: list[str],
              video_path: Path) -> dict[int, dict]:
    """One rollout to the longest horizon; every horizon scored on its prefix (the rollout's first
    frames do not depend on how long it goes on). Returns {horizon: {"scalars", "series"}}."""
    from adabench.metrics.base import MetricResult
    from adabench.registry import METRICS
    from adabench.video_io import VideoWriter
    from adabench.world.panworld import render_clip
    from adabench.world.prompts import parse_prompt

    spec = parse_prompt(prompt)
    init = render_clip(spec, seed, 1, size=generator.frame_size)
    context = {"fps": generator.fps, "true_velocity": spec.velocity_at(generator.frame_size), "prompt": prompt}
    plain = [m for m in metric_specs if m.split(":")[0] != "attention"]
    probed = [m for m in metric_specs if m.split(":")[0] == "attention"]
    sets = {h: [METRICS.build(m, **context) for m in plain] for h in horizons}
    with VideoWriter(video_path, fps=generator.fps, raw=True) as writer:
        for chunk in generator.stream(prompt, seed, max(horizons), init=init):
            writer.write(chunk.frames)
            _feed(sets, chunk)
    if probed and hasattr(generator, "sampler"):
        # A second, probed rollout (bit-identical frames): probing never slows the timed one.
        from adabench.metrics.attention import AttentionProbe
        probe = AttentionProbe.for_generator(generator)
        attention = {h: [METRICS.build(m, **context) for m in probed] for h in horizons}
        for chunk in generator.stream(prompt, seed, max(horizons), init=init, probe=probe):
            _feed(attention, chunk)
        for h in horizons:
            sets[h] += attention[h]
    results = {}
    for h, metrics in sets.items():
        merged = MetricResult()
        for metric in metrics:
            merged.update(metric.compute())
        results[h] = {"scalars": merged.scalars, "series": merged.series}
    return results


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3g}"


def write_report(out: Path, records: list[dict], models: list[dict], args: argparse.Namespace) -> None:
    lines = ["# adabench — embedded default comparison", "",
             f"Suite `{args.suite}`, horizons {args.frames} frames, seeds {args.seeds}, device {args.device}, "
             f"image-to-video from the ground-truth first frame. Host: {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__}. Throughput times the generator's chunks end to end "
             "(denoise + decode + commit), first chunk excluded from steady FPS.", ""]
    lines += ["| model | weights | budget |", "|---|---|---|"]
    lines += [f"| {m['spec']} | {m.get('weights', '–')} | {m.get('budget_frames', '–')} |" for m in models]
    columns = [c for c in REPORT_COLUMNS if any(c in r.get("scalars", {}) for r in records)]
    for horizon in sorted({r["frames"] for r in records}):
        lines += ["", f"## {horizon} frames (mean over prompts and seeds)", "",
                  "| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for info in models:
            rows = [r for r in records if r["model"] == info["spec"] and r["frames"] == horizon and "scalars" in r]
            means = []
            for col in columns:
                vals = [r["scalars"][col] for r in rows
                        if r["scalars"].get(col) is not None and not math.isnan(r["scalars"][col])]
                means.append(_fmt(sum(vals) / len(vals) if vals else None))
            lines.append(f"| {info['spec']} | " + " | ".join(means) + " |")
    failed = [r for r in records if "error" in r]
    if failed:
        lines += ["", "## Failed jobs", ""] + [f"- {r['model']} / {r['prompt']!r} / seed {r['seed']}: {r['error']}"
                                               for r in failed]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    from adabench.registry import GENERATORS, SUITES, split_specs

    try:
        args = parse_args(argv)
        out = Path(args.out)
        (out / "videos").mkdir(parents=True, exist_ok=True)
        prompts = SUITES.entry(args.suite).load()()
        seeds = [int(s) for s in args.seeds.split(",")]
        horizons = sorted({int(h) for h in args.frames.split(",")})
        if not horizons or horizons[0] < 1:
            raise UserError(f"--frames {args.frames!r} is invalid; accepted: comma-separated integers >= 1")
        metric_specs = split_specs(args.metrics)
        model_specs = split_specs(args.models)
        generators = [GENERATORS.build(m, device=args.device) for m in model_specs]
    except (UserError, ValueError) as exc:
        print(f"adabench bench: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    records, models = [], []
    (out / "results.jsonl").write_text("")
    for spec, gen in zip(model_specs, generators):
        models.append({"spec": spec, **gen.describe()})
        for pi, prompt in enumerate(prompts):
            for seed in seeds:
                path = out / "videos" / f"{re.sub(r'[^A-Za-z0-9._=-]+', '_', spec)}-p{pi}-s{seed}.mp4"
                t0 = time.perf_counter()
                try:
                    jobs = [{"frames": h, **r} for h, r in score_job(gen, prompt, seed, horizons, metric_specs, path).items()]
                    status = "ok"
                except UserError as exc:          # a failed job is recorded as failed; the run goes on
                    jobs = [{"frames": h, "error": str(exc)} for h in horizons]
                    status = str(exc)
                wall = round(time.perf_counter() - t0, 3)
                new = [{"model": spec, "prompt": prompt, "seed": seed, "video": str(path), "wall_s": wall, **j} for j in jobs]
                records += new
                print(f"{spec:<16} p{pi} seed {seed}: {status} ({wall} s)", file=sys.stderr)
                with (out / "results.jsonl").open("a") as f:      # appended per job: nothing stored is lost
                    f.writelines(json.dumps(r) + "\n" for r in new)
    (out / "models.json").write_text(json.dumps(models, indent=1))
    write_report(out, records, models, args)
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
