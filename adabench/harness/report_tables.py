"""The report's tables, from ``results.json`` alone: metric groups, headline, paired comparisons.

Each cell is a plain dict for the template (which escapes every string). A model's value is
marked best only where it is separable: its 95 % interval lies entirely on the good side of
every other compared model's interval; the reference row (ground truth) is shown but never
ranked, and metrics with direction "none" are never marked.
"""

from __future__ import annotations

import html
import math
from typing import Any

from adabench.harness.aggregate import HEADLINE, format_value, metric_key

ARROWS = {"higher": "↑", "lower": "↓", "none": "·"}
SIGNIFICANT = ("better", "worse")


def model_names(results: dict[str, Any]) -> list[str]:
    """Models in results order (reference row first, as stored)."""
    return list(results["models"])


def compared_models(results: dict[str, Any]) -> list[str]:
    """Models that are ranked: every model but the reference row."""
    return [n for n, m in results["models"].items() if m.get("role") != "reference"]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def best_model(entries: dict[str, dict[str, Any] | None], direction: str) -> str | None:
    """The model whose interval separates from every other model's on the good side, else None."""
    if direction not in ("higher", "lower"):
        return None
    ranked = {n: e for n, e in entries.items() if e and e.get("applicable", True) and _finite(e.get("mean"))}
    if len(ranked) < 2 or any(not (_finite(e.get("ci_low")) and _finite(e.get("ci_high"))) for e in ranked.values()):
        return None
    sign = 1.0 if direction == "higher" else -1.0
    top = max(ranked, key=lambda n: sign * ranked[n]["mean"])
    if direction == "higher":
        separate = all(ranked[top]["ci_low"] > e["ci_high"] for n, e in ranked.items() if n != top)
    else:
        separate = all(ranked[top]["ci_high"] < e["ci_low"] for n, e in ranked.items() if n != top)
    return top if separate else None


def cell(entry: dict[str, Any] | None, best: bool = False) -> dict[str, Any]:
    """One table cell: the value text (mean [95 % CI]), n, and why a value is missing."""
    if entry is not None and not entry.get("applicable", True):
        return {"text": "n/a", "title": entry.get("reason", "not applicable"), "best": False, "n": 0}
    return {"text": format_value(entry), "title": f"n = {entry.get('n')}" if entry else "no value",
            "best": best, "n": entry.get("n") if entry else 0}


def metric_row(results: dict[str, Any], key: str) -> dict[str, Any]:
    """A table row for one metric key: description, unit, direction and a cell per model."""
    models = results["models"]
    entries = {n: m["metrics"].get(key) for n, m in models.items()}
    meta = next(e for e in entries.values() if e is not None)
    best = best_model({n: entries[n] for n in compared_models(results)}, meta.get("direction", "none"))
    return {"key": key, "scalar": meta["metric"], "frames": meta["frames"], "init": meta["init"],
            "unit": meta.get("unit", ""), "direction": meta.get("direction", "none"),
            "arrow": ARROWS.get(meta.get("direction", "none"), "·"), "backend": meta.get("backend") or "",
            "description": meta.get("description", ""), "best": best,
            "cells": [cell(entries[n], best == n) for n in models]}


def metric_groups(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One group per source metric (in the run's metric order), a table per init mode inside it."""
    keys: dict[str, dict[str, Any]] = {}
    for model in results["models"].values():
        for key, entry in model["metrics"].items():
            keys.setdefault(key, entry)
    order = list(results["run"].get("metrics", []))
    sources = order + sorted({e.get("source") or "other" for e in keys.values()} - set(order))
    groups = []
    for source in sources:
        mine = [k for k, e in keys.items() if (e.get("source") or "other") == source]
        if not mine:
            continue
        scalars = list(dict.fromkeys(sorted(keys[k]["metric"] for k in mine)))
        tables = []
        for init in results["run"].get("init", []):
            rows = [metric_row(results, metric_key(s, f, init)) for s in scalars for f in results["run"]["frames"]
                    if metric_key(s, f, init) in keys]
            if rows:
                tables.append({"init": init, "rows": rows})
        backends = sorted({keys[k].get("backend") for k in mine if keys[k].get("backend")})
        groups.append({"source": source, "backends": backends, "tables": tables,
                       "count": sum(len(t["rows"]) for t in tables)})
    return groups


def headline_tables(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline metrics (``aggregate.HEADLINE``), one table per init mode and horizon."""
    present = {k for m in results["models"].values() for k in m["metrics"]}
    out = []
    for init in results["run"].get("init", []):
        for frames in results["run"]["frames"]:
            keys = [metric_key(s, frames, init) for s in HEADLINE if metric_key(s, frames, init) in present]
            if keys:
                out.append({"init": init, "frames": frames, "rows": [metric_row(results, k) for k in keys]})
    return out


def comparison_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Paired comparisons against the baseline, significant ones first, then by metric."""
    rows = []
    for c in results.get("comparisons", []):
        diff = "–" if c.get("mean_diff") is None else f"{c['mean_diff']:+.3g}"
        interval = ("" if c.get("ci_low") is None or c.get("ci_high") is None
                    else f"[{c['ci_low']:+.3g}, {c['ci_high']:+.3g}]")
        rows.append({**c, "diff": diff, "interval": interval, "p": _p(c.get("p_value")), "p_adj": _p(c.get("p_holm")),
                     "arrow": ARROWS.get(c.get("direction", "none"), "·"),
                     "significant": c.get("verdict") in SIGNIFICANT})
    return sorted(rows, key=lambda r: (not r["significant"], r["scalar"] not in HEADLINE, r["metric"], r["model"]))


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.2g}"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """GitHub-flavoured Markdown table lines; pipes and HTML in cells escaped (cells hold names from specs)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(html.escape(str(c), quote=False).replace("|", "\\|") for c in cells) + " |"
    return [line(header), line(["---"] * len(header)), *(line(r) for r in rows)]


def summary_markdown(results: dict[str, Any], limit: int = 30) -> str:
    """``summary.md``: the headline table per init mode and horizon, and the significant differences."""
    run = results["run"]
    names = model_names(results)
    lines = ["# adabench results", "",
             f"`{str(run.get('command', 'adabench compare')).replace('`', chr(39))}`", "",
             f"{run.get('jobs_ok', 0)} of {run.get('jobs_planned', 0)} jobs finished, {run.get('jobs_failed', 0)} "
             f"failed; device {run.get('device_name') or run.get('device', '?')}; adabench {run.get('adabench', '?')}"
             f" ({run.get('git_commit') or 'no git commit'}). Mean [95 % CI] over prompts x seeds; **bold**: best, "
             "interval separate from every other model's; ↑/↓: higher/lower is better, · not ranked."]
    for table in headline_tables(results):
        lines += ["", f"## {table['frames']} frames, init {table['init']}", ""]
        header = ["model"] + [f"{r['scalar']} {r['arrow']}" for r in table["rows"]]
        body = [[name] + [f"**{r['cells'][i]['text']}**" if r["cells"][i]["best"] else r["cells"][i]["text"]
                          for r in table["rows"]] for i, name in enumerate(names)]
        lines += markdown_table(header, body)
    significant = [r for r in comparison_rows(results) if r["significant"]]
    baseline = next((c["baseline"] for c in results.get("comparisons", [])), None)
    lines += ["", f"## Significant differences against {baseline or 'the baseline'}", "",
              "Holm-adjusted p < 0.05 and the paired 95 % interval excluding 0."]
    if significant:
        rows = [[r["model"], r["metric"], f"{r['diff']} {r['interval']}", r.get("unit") or "", r["p_adj"],
                 r["verdict"]] for r in significant[:limit]]
        lines += [""] + markdown_table(["model", "metric", "difference [95% CI]", "unit", "p (Holm)", "verdict"], rows)
        if len(significant) > limit:
            lines += ["", f"... and {len(significant) - limit} more: see report.html."]
    else:
        lines += ["", "None."]
    return "\n".join(lines) + "\n"
