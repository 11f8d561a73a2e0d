"""From a results folder (``plan.json`` + the store) to ``results.json`` and ``samples.parquet``.

Reads only what the run stored, never the memory of a run, so any folder can be
re-aggregated (``adabench aggregate DIR``). Names:

- a metric key is ``{scalar}@{frames}/{init}``, e.g. ``motion_ratio@21/gt``: the scalar of
  ``adabench score`` (or a generator-side one), at one horizon, for one init mode;
- per model and key: mean, 95 % bootstrap interval over jobs (prompt x seed), n, unit,
  direction, backend; numbers that do not exist are ``null``;
- series (per chunk, per second, per window) as mean and interval per window;
- set-level metrics (the evaluator's Fréchet distance to ground truth, per window over
  all videos of a model) are computed here from the per-job features, with an interval
  from resampling videos;
- ``comparisons``: every model against the first model named, paired by (prompt, seed),
  mean difference with its interval, Wilcoxon signed-rank p and Holm-adjusted p over all
  comparisons of the run; metrics with direction "none" are never called better or worse.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from adabench import atomic
from adabench.errors import UserError
from adabench.harness import stats
from adabench.harness.calibration import run_calibration_ms
from adabench.harness.store import SCHEMA_VERSION, Row, Store, strict

PLAN_FILE = "plan.json"
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.parquet"
STORE_DIR = "store"
FEATURE_PREFIX = "frechet_feature_"
HEADLINE = ("motion_ratio", "dynamics_retention", "anchor_attention_mass", "lockin_end", "adherence_all",
            "frechet_mean", "appearance_off_palette", "fps")


def metric_key(scalar: str, frames: int | str, init: str) -> str:
    return f"{scalar}@{frames}/{init}"


def read_plan(out: Path) -> dict[str, Any]:
    path = out / PLAN_FILE
    if not path.is_file():
        raise UserError(f"{out} holds no adabench run ({PLAN_FILE} is missing); accepted: a folder written by "
                        "'adabench compare'")
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
        if plan.get("schema_version") != SCHEMA_VERSION:
            raise UserError(f"{path} has schema version {plan.get('schema_version')!r}; this adabench reads "
                            f"{SCHEMA_VERSION}")
        return plan
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise UserError(f"{path} is not a readable plan ({type(exc).__name__}); rerun 'adabench compare' "
                        "with the same arguments and --resume to rewrite it") from None


def _by_model(plan: dict[str, Any], rows: dict[str, Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {name: [] for name in plan["models"]}
    for job in plan["jobs"]:
        row = rows.get(job["hash"])
        if row is not None:
            out[job["model"]].append(row)
    return out


def _values(rows: list[Row], init: str, frames: str, scalar: str) -> dict[tuple[str, int], float]:
    """{(prompt, seed): value} of one scalar over a model's finished jobs (missing -> NaN)."""
    out = {}
    for row in rows:
        if row.status == "ok" and row.init == init:
            value = row.result["horizons"].get(frames, {}).get("scalars", {}).get(scalar)
            out[(row.prompt, row.seed)] = float("nan") if value is None else float(value)
    return out


def _info(rows: list[Row]) -> dict[str, dict[str, Any]]:
    info: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.status == "ok":
            info.update(row.result.get("info", {}))
    return info


def _entry(values: list[float], meta: dict[str, Any], scalar: str, frames: str, init: str) -> dict[str, Any]:
    mean, low, high, n = stats.bootstrap_mean_ci(values)
    return {"metric": scalar, "frames": int(frames), "init": init, "mean": mean,
            "median": stats.finite_median(values),                 # regress compares timings by it
            "ci_low": low, "ci_high": high, "n": n, "unit": meta.get("unit", ""), "direction": meta.get("direction", "none"),
            "backend": meta.get("backend"), "description": meta.get("description", ""),
            "source": meta.get("metric"), "applicable": True}


def _set_level(generated: list[Row], reference: list[Row], frames: str, init: str, meta: dict[str, Any]
               ) -> dict[str, dict[str, Any]]:
    """The evaluator's Fréchet distance per window between a model's videos and the reference's,
    mean and last window, with a two-sample jackknife interval.

    Why the jackknife: a bootstrap resample repeats videos, which shrinks the covariance of
    a few dozen 32-dimensional features and inflates the distance, so its percentiles sit
    above the estimate. Leaving one video out (each generated video, then each reference
    video) never repeats one; the variance is the sum of the two sides' jackknife variances.
    """
    import warnings

    from adabench.metrics.adherence import features_from_series, frechet_per_window

    def features(rows: list[Row]) -> list[list[Any]]:
        out = []
        for row in rows:
            if row.status == "ok" and row.init == init:
                feats = features_from_series(row.result["horizons"].get(frames, {}).get("series", {}))
                if feats:
                    out.append(feats)
        return out

    gen, ref = features(generated), features(reference)
    if len(gen) < 3 or len(ref) < 3:
        return {}

    def summary(g: list, r: list) -> tuple[float, float, list[float]]:
        curve = frechet_per_window(g, r)
        valid = [v for v in curve if not math.isnan(v)]
        return (sum(valid) / len(valid) if valid else math.nan), (valid[-1] if valid else math.nan), curve

    def jackknife_variance(values: np.ndarray) -> np.ndarray:               # [n, 2] -> [2]
        n = len(values)
        return (n - 1) / n * ((values - values.mean(axis=0)) ** 2).sum(axis=0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                      # sqrtm of near-singular products
        mean, last, curve = summary(gen, ref)
        leave_gen = np.array([summary(gen[:i] + gen[i + 1:], ref)[:2] for i in range(len(gen))], dtype=float)
        leave_ref = np.array([summary(gen, ref[:i] + ref[i + 1:])[:2] for i in range(len(ref))], dtype=float)
    spread = np.sqrt(jackknife_variance(leave_gen) + jackknife_variance(leave_ref))    # [2]
    out: dict[str, dict[str, Any]] = {}
    for j, (scalar, value) in enumerate((("frechet_mean", mean), ("frechet_last", last))):
        half = 1.959963984540054 * float(spread[j])
        out[metric_key(scalar, frames, init)] = {
            "metric": scalar, "frames": int(frames), "init": init, "mean": value,
            "ci_low": max(0.0, value - half), "ci_high": value + half, "n": len(gen), "unit": "1",
            "direction": "lower", "backend": meta.get("backend"),
            "description": f"Fréchet distance of evaluator features to the reference row's videos, "
                           f"{'mean over windows' if scalar == 'frechet_mean' else 'last window'} (set-level: "
                           f"{len(gen)} against {len(ref)} videos; 95 % interval from a two-sample jackknife; "
                           f"biased upwards at small n: compare only at equal n)",
            "source": meta.get("metric"), "applicable": True, "set_level": True}
    out[metric_key("frechet", frames, init)] = {"curve": curve}
    return out


def aggregate(out: Path, write: bool = True) -> dict[str, Any]:
    """Build (and write, atomically) ``results.json`` and ``samples.parquet`` for a results folder."""
    plan = read_plan(out)
    store = Store(out / STORE_DIR)
    hashes = [job["hash"] for job in plan["jobs"]]
    rows = store.rows(hashes)
    by_model = _by_model(plan, rows)
    inits, horizons = plan["inits"], [str(f) for f in plan["frames"]]
    reference = plan.get("reference")
    models: dict[str, Any] = {}
    for name, info in plan["models"].items():
        mrows = by_model[name]
        meta = _info(mrows)
        failed = [r for r in mrows if r.status != "ok"]
        na: dict[str, str] = {}
        for r in mrows:
            if r.status == "ok":
                na.update(r.result.get("not_applicable", {}))
        metrics: dict[str, Any] = {}
        series: dict[str, Any] = {}
        for init in inits:
            for frames in horizons:
                scalars = sorted({k for r in mrows if r.status == "ok" and r.init == init
                                  for k in r.result["horizons"].get(frames, {}).get("scalars", {})})
                for scalar in scalars:
                    values = list(_values(mrows, init, frames, scalar).values())
                    metrics[metric_key(scalar, frames, init)] = _entry(values, meta.get(scalar, {}), scalar, frames,
                                                                       init)
                names = sorted({k for r in mrows if r.status == "ok" and r.init == init
                                for k in r.result["horizons"].get(frames, {}).get("series", {})
                                if not k.startswith(FEATURE_PREFIX)})
                for sname in names:
                    rows_s = [r.result["horizons"][frames]["series"].get(sname, []) for r in mrows
                              if r.status == "ok" and r.init == init and frames in r.result["horizons"]]
                    rows_s = [[math.nan if v is None else v for v in s] for s in rows_s]
                    ci = stats.bootstrap_series_ci(rows_s)
                    m = meta.get(sname, {})
                    series[metric_key(sname, frames, init)] = {
                        "series": sname, "frames": int(frames), "init": init, **ci, "unit": m.get("unit", ""),
                        "direction": m.get("direction", "none"), "backend": m.get("backend"),
                        "description": m.get("description", "")}
                if name == reference and "frechet_feature_00" in meta:
                    na[meta["frechet_feature_00"]["metric"]] = "the reference row itself (the distance is to it)"
                if reference and name != reference and "frechet_feature_00" in meta:
                    extra = _set_level(mrows, by_model.get(reference, []), frames, init, meta["frechet_feature_00"])
                    for key, value in extra.items():
                        if "curve" in value:
                            series[key] = {"series": "frechet", "frames": int(frames), "init": init,
                                           "mean": value["curve"], "unit": "1", "direction": "lower",
                                           "backend": meta["frechet_feature_00"].get("backend"),
                                           "description": "Fréchet distance to the reference row per window"}
                        else:
                            metrics[key] = value
        models[name] = {"spec": info["spec"], "spec_hash": info.get("spec_hash"), "role": info["role"], "describe": info["describe"],
                        "capabilities": info["capabilities"], "jobs": len(mrows), "failed": len(failed),
                        "failures": [{"prompt": r.prompt, "seed": r.seed, "init": r.init, "error": r.error}
                                     for r in failed],
                        "not_applicable": na, "metrics": metrics, "series": series}
    _mark_not_applicable(models)
    comparisons = compare_models(plan, by_model, models)
    done = sum(1 for r in rows.values() if r.status == "ok")
    failed_total = sum(1 for r in rows.values() if r.status != "ok")
    job_calibrations = [r.result["timing"]["calibration_ms"] for r in rows.values()
                        if r.result is not None and "calibration_ms" in r.result.get("timing", {})]
    calibration = {"calibration_ms": run_calibration_ms(job_calibrations, plan["run"]["calibration_ms"]),
                   "calibration_ms_before_jobs": plan["run"]["calibration_ms"]} if "calibration_ms" in plan["run"] else {}
    run = {**plan["run"], **calibration, "jobs_planned": len(hashes), "jobs_ok": done, "jobs_failed": failed_total,
           "jobs_missing": len(hashes) - len(rows),
           "finished": max((r.finished for r in rows.values()), default=None)}
    results = strict({"schema_version": SCHEMA_VERSION, "run": run, "models": models, "comparisons": comparisons})
    if write:
        atomic.write_json(out / RESULTS_FILE, results)
        write_samples(out, plan, rows)
    return results


def _mark_not_applicable(models: dict[str, Any]) -> None:
    """A metric key another model has but this one's generator cannot feed: listed as not applicable."""
    for name, model in models.items():
        for other in models.values():
            for key, entry in other["metrics"].items():
                source = entry.get("source")
                if key in model["metrics"] or source not in model["not_applicable"]:
                    continue
                model["metrics"][key] = {**{k: entry[k] for k in ("metric", "frames", "init", "unit", "direction",
                                                                   "backend", "description", "source")},
                                         "mean": None, "ci_low": None, "ci_high": None, "n": 0,
                                         "applicable": False, "reason": model["not_applicable"][source]}


def compare_models(plan: dict[str, Any], by_model: dict[str, list[Row]], models: dict[str, Any]) -> list[dict]:
    """Paired comparisons of every model with the baseline (matching prompt, seed, init), Holm over all."""
    baseline = plan["baseline"]
    out: list[dict[str, Any]] = []
    for name, model in models.items():
        if name == baseline or model["role"] == "reference":
            continue
        for key, entry in sorted(model["metrics"].items()):
            base = models[baseline]["metrics"].get(key)
            if base is None or not entry.get("applicable") or not base.get("applicable") or entry.get("set_level"):
                continue
            frames, init, scalar = str(entry["frames"]), entry["init"], entry["metric"]
            mine = _values(by_model[name], init, frames, scalar)
            theirs = _values(by_model[baseline], init, frames, scalar)
            pairs = sorted(set(mine) & set(theirs))
            if not pairs:
                continue
            result = stats.paired_comparison([theirs[p] for p in pairs], [mine[p] for p in pairs])
            out.append({"model": name, "baseline": baseline, "metric": key, "scalar": scalar,
                        "frames": int(frames), "init": init, "direction": entry["direction"],
                        "unit": entry["unit"], **result})
    adjusted = stats.holm([c["p_value"] for c in out])
    for comparison, p in zip(out, adjusted):
        comparison["p_holm"] = p
        comparison["verdict"] = stats.verdict(comparison["direction"], comparison["mean_diff"], comparison["ci_low"],
                                              comparison["ci_high"], p)
    return out


def write_samples(out: Path, plan: dict[str, Any], rows: dict[str, Row]) -> None:
    """``samples.parquet``: one row per planned job, every scalar as a column ``{scalar}@{frames}``."""
    import pandas as pd

    records = []
    for job in plan["jobs"]:
        row = rows.get(job["hash"])
        record: dict[str, Any] = {"hash": job["hash"], "model": job["model"], "model_spec": job["model_spec"],
                                  "prompt": job["prompt"], "seed": job["seed"], "init": job["init"],
                                  "status": row.status if row else "pending", "error": row.error if row else None,
                                  "wall_s": row.wall_s if row else None}
        if row is not None and row.status == "ok":
            record["generate_s"] = row.result["timing"]["generate_s"]
            record["score_s"] = row.result["timing"]["score_s"]
            for frames, part in row.result["horizons"].items():
                for scalar, value in part["scalars"].items():
                    record[f"{scalar}@{frames}"] = value
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    with atomic.atomic_path(out / SAMPLES_FILE) as tmp:
        frame.to_parquet(tmp, index=False)


def format_value(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "–"
    if not entry.get("applicable", True):
        return "n/a"
    mean, low, high = entry.get("mean"), entry.get("ci_low"), entry.get("ci_high")
    if mean is None:
        return "–"
    text = f"{mean:.3g}"
    return f"{text} [{low:.3g}, {high:.3g}]" if low is not None and high is not None else text


def headline_table(results: dict[str, Any]) -> str:
    """Mean [95 % interval] per model of the headline metrics, one block per init mode and horizon."""
    lines = []
    models = results["models"]
    inits = results["run"]["init"]
    for init in inits:
        for frames in results["run"]["frames"]:
            keys = [s for s in HEADLINE if any(metric_key(s, frames, init) in m["metrics"] for m in models.values())]
            if not keys:
                continue
            lines.append(f"\n{frames} frames, init {init} (mean [95% CI] over prompts x seeds)")
            header = ["model"] + keys
            table = [[name] + [format_value(m["metrics"].get(metric_key(k, frames, init))) for k in keys]
                     + ([f"({m['failed']} failed)"] if m["failed"] else [])
                     for name, m in models.items()]
            widths = [max(len(str(r[i])) for r in [header] + table if i < len(r)) for i in range(len(header))]
            lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
            lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths + [0])) for r in table]
    significant = [c for c in results["comparisons"] if c["verdict"] in ("better", "worse")
                   and c["scalar"] in HEADLINE]
    if significant:
        lines.append("\nsignificant differences (Holm-adjusted p < 0.05, interval excluding 0):")
        for c in significant:
            lines.append(f"  {c['model']} vs {c['baseline']}: {c['metric']} {c['mean_diff']:+.3g} "
                         f"[{c['ci_low']:.3g}, {c['ci_high']:.3g}] p_holm={c['p_holm']:.2g} ({c['verdict']})")
    return "\n".join(lines)
