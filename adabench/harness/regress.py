"""``adabench regress``: did a change make a model worse or slower than a stored baseline?

Two ``results.json`` (a folder or the file itself) are compared metric by metric, for every
model present in both:

- **incomparable**: the two runs' schema versions differ, the model's ``spec_hash`` differs
  (other prompts, seeds, horizons, weights, settings or metrics), the metric's backend
  differs (e.g. ``flow=dis`` against ``flow=raft-large``), or a side has no number;
- **quality** metrics (direction higher or lower): *worse* when the mean moves in the bad
  direction by more than the tolerance (relative to the baseline) **and** the two 95 %
  intervals separate; *better* the same way in the good direction; else *pass*. Direction
  "none" is never worse or better;
- **speed** (the ``throughput`` metric's frames/s, latencies and real-time factor): the
  median over a model's jobs (the mean where a side predates medians: one job whose first
  chunk stalls can double a mean of six and leaves the median alone), compared after dividing out
  each run's calibration workload (``run.calibration_ms``): fps and the real-time factor as
  ``value x calibration_ms``, latencies as ``value / calibration_ms``; *worse* when that
  degrades by more than the tolerance (no interval needed: the runs' machines differ).
  Memory (MB) is compared by its median as it is, by tolerance alone;
- **growth** (the latency slope, ms per chunk): a relative change of a number near zero
  means nothing, so the slope is divided by the same run's median chunk latency (the
  fraction of a chunk's time added per chunk, free of the machine's speed) and compared as
  a difference: *worse* when it grows by more than the tolerance (default 0.02, 2 % of a
  chunk per chunk) **and** the two intervals, scaled alike, separate (a short rollout's
  slope is noise).

The reference row (``panworld-gt``, role ``reference``) is checked on its quality metrics
only: its speed figures time the rendering of ground truth, chunks of about a millisecond
whose latency slope is timer noise, and say nothing about a model.

A tolerance is looked up by the full key (``fps@21/gt``), then the scalar (``fps``), then
the kind (``quality``, ``speed``, ``resource``, ``growth``).

Exit code 1 when anything is worse, 0 otherwise; bad input is a :class:`UserError` (2).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adabench.errors import UserError

QUALITY_TOLERANCE = 0.05      # relative change of the mean
SPEED_TOLERANCE = 0.20        # relative change after calibration: CI runners are noisy
GROWTH_TOLERANCE = 0.02      # per-chunk latency growth, as a fraction of the median chunk latency
DEFAULT_TOLERANCE = {"quality": QUALITY_TOLERANCE, "speed": SPEED_TOLERANCE, "resource": SPEED_TOLERANCE,
                     "growth": GROWTH_TOLERANCE}
SPEED_UNITS = {"frames/s": "higher", "ratio": "higher", "ms": "lower"}
RESOURCE_UNITS = {"MB": "lower"}
GROWTH_UNIT = "ms/chunk"
LATENCY_SCALE = "chunk_latency_p50_ms"
REFERENCE_TIMING = ("the reference row's timings are of rendering ground truth (about a millisecond a chunk), "
                    "not of a model: not checked")
NO_NUMBER_EITHER_SIDE = "no number on either side (not applicable, or too short a video)"      # what a growth figure is divided by, same model, horizon and init


@dataclass
class Change:
    model: str
    metric: str
    baseline: float | None
    current: float | None
    change: float | None          # relative, in the metric's own terms (after calibration for speed)
    verdict: str                  # pass | better | worse | incomparable
    reason: str = ""


def load_results(path: str | Path, what: str) -> dict[str, Any]:
    """A results.json, or the one inside a results folder; strict JSON."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{what} {path}: no results.json there; accepted: a folder written by 'adabench compare' "
                        "or its results.json")

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard number {name}")

    try:
        data = json.loads(file.read_text(encoding="utf-8"), parse_constant=refuse)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{what} {file} is not readable JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict) or "run" not in data:
        raise UserError(f"{what} {file} is not an adabench results file (no 'run' and 'models')")
    return data


def parse_tolerances(items: list[str]) -> dict[str, float]:
    """``["fps=0.3", "motion_ratio@21/gt=0.1", "speed=0.5"]`` -> {key, scalar or kind: tolerance}."""
    out = {}
    for item in items:
        name, eq, value = item.rpartition("=")
        try:
            tolerance = float(value)
        except ValueError:
            tolerance = -1.0
        if not eq or not name or not math.isfinite(tolerance) or tolerance < 0:
            raise UserError(f"--tolerance {item!r} is invalid; accepted: METRIC=REL with REL >= 0, e.g. fps=0.3 or "
                            "motion_ratio@21/gt=0.1 (a scalar name applies to every horizon and init; quality, speed, "
                            "resource or growth to every metric of that kind)")
        out[name] = tolerance
    return out


def kind(entry: dict[str, Any]) -> tuple[str, str]:
    """("speed" | "resource" | "growth" | "quality", direction) of a metric entry."""
    unit, source = entry.get("unit", ""), entry.get("source")
    if source == "throughput" and unit == GROWTH_UNIT:
        return "growth", entry.get("direction", "lower")
    if source == "throughput" and unit in SPEED_UNITS:
        return "speed", SPEED_UNITS[unit]
    if source == "throughput" and unit in RESOURCE_UNITS:
        return "resource", RESOURCE_UNITS[unit]
    return "quality", entry.get("direction", "none")


def calibrated(value: float, direction: str, calibration: float) -> float:
    """Speed in machine-independent units: rates times, latencies over, the calibration time."""
    return value * calibration if direction == "higher" else value / calibration


def scaled(entry: dict[str, Any], scale: dict[str, Any] | None) -> dict[str, Any] | None:
    """A growth entry's mean and interval divided by its run's median chunk latency (None: no scale)."""
    divisor = (scale or {}).get("mean")
    if not divisor or entry.get("mean") is None:
        return None
    return {**entry, **{k: (entry[k] / divisor if entry.get(k) is not None else None)
                        for k in ("mean", "ci_low", "ci_high")}}


def compare_growth(model: str, key: str, base: dict[str, Any] | None, cur: dict[str, Any] | None,
                   limit: float, direction: str) -> Change:
    """Slopes as fractions of a chunk's latency per chunk, compared by difference and intervals."""
    if base is None or cur is None:
        return Change(model, key, None, None, None, "incomparable", f"no {LATENCY_SCALE} to scale the slope by")
    b, c = base["mean"], cur["mean"]
    change = c - b
    good = change < 0 if direction == "lower" else change > 0
    if abs(change) > limit and _separate(base, cur):
        return Change(model, key, b, c, change, "better" if good else "worse",
                      f"growth per chunk changed by more than {limit:.0%} of a chunk's latency, intervals separate")
    return Change(model, key, b, c, change, "pass", "(slope / median chunk latency)")


def compare_entry(model: str, key: str, base: dict[str, Any], cur: dict[str, Any], tolerance: float | None,
                  calibration: tuple[float, float] | None,
                  scales: tuple[dict[str, Any] | None, dict[str, Any] | None] = (None, None)) -> Change:
    b, c = base.get("mean"), cur.get("mean")
    if base.get("backend") != cur.get("backend"):
        return Change(model, key, b, c, None, "incomparable",
                      f"backend {base.get('backend')} -> {cur.get('backend')}")
    if b is None and c is None:
        return Change(model, key, b, c, None, "incomparable", NO_NUMBER_EITHER_SIDE)
    if b is None or c is None or not base.get("applicable", True) or not cur.get("applicable", True):
        return Change(model, key, b, c, None, "incomparable", "no number on one side")
    what, direction = kind(base)
    limit = tolerance if tolerance is not None else DEFAULT_TOLERANCE[what]
    if what == "growth":
        return compare_growth(model, key, scaled(base, scales[0]), scaled(cur, scales[1]), limit, direction)
    if what in ("speed", "resource") and base.get("median") is not None and cur.get("median") is not None:
        b, c = base["median"], cur["median"]          # one stalled job must not move the verdict
    if what == "speed":
        if calibration is None:
            return Change(model, key, b, c, None, "incomparable", "a run has no calibration_ms")
        b, c = calibrated(b, direction, calibration[0]), calibrated(c, direction, calibration[1])
    change = (c - b) / abs(b) if b != 0 else (0.0 if c == b else math.copysign(math.inf, c - b))
    if direction not in ("higher", "lower"):
        return Change(model, key, b, c, change, "pass", "direction none: never better or worse")
    good = change > 0 if direction == "higher" else change < 0
    beyond = abs(change) > limit
    if what == "quality":
        separate = _separate(base, cur)
        if beyond and separate:
            return Change(model, key, b, c, change, "better" if good else "worse",
                          f"beyond {limit:.0%} and the intervals separate")
        return Change(model, key, b, c, change, "pass", "" if not beyond else "intervals overlap")
    if beyond:
        return Change(model, key, b, c, change, "better" if good else "worse",
                      f"beyond {limit:.0%}" + (" after calibration" if what == "speed" else ""))
    return Change(model, key, b, c, change, "pass")


def _separate(base: dict[str, Any], cur: dict[str, Any]) -> bool:
    lo_b, hi_b, lo_c, hi_c = base.get("ci_low"), base.get("ci_high"), cur.get("ci_low"), cur.get("ci_high")
    if None in (lo_b, hi_b, lo_c, hi_c):
        return False
    return hi_c < lo_b or lo_c > hi_b


def regress(baseline: dict[str, Any], current: dict[str, Any], tolerances: dict[str, float]) -> list[Change]:
    changes: list[Change] = []
    if baseline.get("schema_version") != current.get("schema_version"):
        reason = f"schema version {baseline.get('schema_version')} -> {current.get('schema_version')}"
        return [Change(m, "*", None, None, None, "incomparable", reason) for m in current["models"]]
    cal_b, cal_c = baseline["run"].get("calibration_ms"), current["run"].get("calibration_ms")
    calibration = (float(cal_b), float(cal_c)) if cal_b and cal_c else None
    for model, cur in current["models"].items():
        base = baseline["models"].get(model)
        if base is None:
            changes.append(Change(model, "*", None, None, None, "incomparable", "not in the baseline"))
            continue
        if base.get("spec_hash") != cur.get("spec_hash"):
            changes.append(Change(model, "*", None, None, None, "incomparable",
                                  f"spec_hash {base.get('spec_hash')} -> {cur.get('spec_hash')} (prompts, seeds, "
                                  "horizons, weights, settings or metrics differ)"))
            continue
        for key in sorted(set(base["metrics"]) | set(cur["metrics"])):
            if key not in base["metrics"] or key not in cur["metrics"]:
                side = "baseline" if key not in base["metrics"] else "current run"
                changes.append(Change(model, key, None, None, None, "incomparable", f"not in the {side}"))
                continue
            scalar, at, where = key.partition("@")
            if cur.get("role") == "reference" and kind(base["metrics"][key])[0] != "quality":
                changes.append(Change(model, key, base["metrics"][key].get("mean"), cur["metrics"][key].get("mean"),
                                      None, "incomparable", REFERENCE_TIMING))
                continue
            tolerance = tolerances.get(key, tolerances.get(scalar, tolerances.get(kind(base["metrics"][key])[0])))
            scale_key = f"{LATENCY_SCALE}{at}{where}"
            scales = (base["metrics"].get(scale_key), cur["metrics"].get(scale_key))
            changes.append(compare_entry(model, key, base["metrics"][key], cur["metrics"][key], tolerance,
                                         calibration, scales))
    return changes


def format_changes(changes: list[Change], show_all: bool = False) -> str:
    """A table of the changes (all of them, or everything but passes, metrics that have no number in
    either run and the reference row's unchecked timings) and a count per verdict."""
    rows = [c for c in changes
            if show_all or (c.verdict != "pass" and c.reason not in (NO_NUMBER_EITHER_SIDE, REFERENCE_TIMING))]
    lines = []
    if rows:
        header = ("model", "metric", "baseline", "current", "change", "verdict", "why")
        table = [(c.model, c.metric, _num(c.baseline), _num(c.current),
                  "–" if c.change is None else f"{c.change:+.1%}", c.verdict, c.reason) for c in rows]
        widths = [max(len(str(r[i])) for r in [header, *table]) for i in range(len(header))]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        lines += ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in table]
    counts = {v: sum(1 for c in changes if c.verdict == v) for v in ("pass", "better", "worse", "incomparable")}
    lines.append("regress: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"
