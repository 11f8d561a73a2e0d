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
- **speed** (the ``throughput`` metric's frames/s, latencies and real-time factor): compared
  after dividing out each run's calibration workload (``run.calibration_ms``): fps and the
  real-time factor as ``value x calibration_ms``, latencies as ``value / calibration_ms``;
  *worse* when that degrades by more than the tolerance (no interval needed: the runs'
  machines differ). Memory (MB) is compared as it is, by tolerance alone.

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
SPEED_UNITS = {"frames/s": "higher", "ratio": "higher", "ms": "lower", "ms/chunk": "lower"}
RESOURCE_UNITS = {"MB": "lower"}


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
    """``["fps=0.3", "motion_ratio@21/gt=0.1"]`` -> {name or key: relative tolerance}."""
    out = {}
    for item in items:
        name, eq, value = item.rpartition("=")
        try:
            tolerance = float(value)
        except ValueError:
            tolerance = -1.0
        if not eq or not name or not math.isfinite(tolerance) or tolerance < 0:
            raise UserError(f"--tolerance {item!r} is invalid; accepted: METRIC=REL with REL >= 0, e.g. fps=0.3 or "
                            "motion_ratio@21/gt=0.1 (a scalar name applies to every horizon and init)")
        out[name] = tolerance
    return out


def kind(entry: dict[str, Any]) -> tuple[str, str]:
    """("speed" | "resource" | "quality", direction) of a metric entry."""
    unit, source = entry.get("unit", ""), entry.get("source")
    if source == "throughput" and unit in SPEED_UNITS:
        return "speed", SPEED_UNITS[unit]
    if source == "throughput" and unit in RESOURCE_UNITS:
        return "resource", RESOURCE_UNITS[unit]
    return "quality", entry.get("direction", "none")


def calibrated(value: float, direction: str, calibration: float) -> float:
    """Speed in machine-independent units: rates times, latencies over, the calibration time."""
    return value * calibration if direction == "higher" else value / calibration


def compare_entry(model: str, key: str, base: dict[str, Any], cur: dict[str, Any], tolerance: float | None,
                  calibration: tuple[float, float] | None) -> Change:
    b, c = base.get("mean"), cur.get("mean")
    if base.get("backend") != cur.get("backend"):
        return Change(model, key, b, c, None, "incomparable",
                      f"backend {base.get('backend')} -> {cur.get('backend')}")
    if b is None or c is None or not base.get("applicable", True) or not cur.get("applicable", True):
        return Change(model, key, b, c, None, "incomparable", "no number on one side")
    what, direction = kind(base)
    if what == "speed":
        if calibration is None:
            return Change(model, key, b, c, None, "incomparable", "a run has no calibration_ms")
        b, c = calibrated(b, direction, calibration[0]), calibrated(c, direction, calibration[1])
    limit = tolerance if tolerance is not None else (QUALITY_TOLERANCE if what == "quality" else SPEED_TOLERANCE)
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
            scalar = key.split("@", 1)[0]
            tolerance = tolerances.get(key, tolerances.get(scalar))
            changes.append(compare_entry(model, key, base["metrics"][key], cur["metrics"][key], tolerance,
                                         calibration))
    return changes


def format_changes(changes: list[Change], show_all: bool = False) -> str:
    """A table of the changes (all of them, or everything but passes) and a count per verdict."""
    rows = [c for c in changes if show_all or c.verdict != "pass"]
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
