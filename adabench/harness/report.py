"""``adabench report DIR``: ``report.html`` and ``summary.md`` rendered from a results folder alone.

Reads ``results.json`` (plus ``plan.json`` and ``videos/*.npz`` for the side-by-side media),
never the memory of a run, so any old folder can be re-rendered. The page is self-contained
and works offline: no scripts, fonts or URLs; its images sit in the sibling folder
``report_files/``. It is rendered by a jinja2 template with autoescaping on, so text from
prompts, specs and configs shows as text. Every output is written atomically.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from adabench import atomic
from adabench.errors import UserError
from adabench.harness.aggregate import RESULTS_FILE
from adabench.harness.report_media import VIDEOS_DIR, Media, make_media
from adabench.harness.report_plots import make_plots
from adabench.harness.report_tables import (
    comparison_rows, headline_tables, metric_groups, model_names, summary_markdown,
)

REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.md"
FILES_DIR = "report_files"
MEDIA_SCALE = 3
OWNED_SUFFIXES = (".png", ".gif", ".mp4")
TIME_KEYS = ("started", "finished")


def load_folder(out: Path) -> dict[str, Any]:
    """The folder's ``results.json`` (strict JSON), or a one-line :class:`UserError` saying what is wrong."""
    from adabench.harness.regress import load_results

    if not out.is_dir():
        raise UserError(f"report: {out} is not a folder; accepted: a results folder written by 'adabench compare'")
    if not (out / RESULTS_FILE).is_file():
        hint = (f"rebuild it with 'adabench aggregate {out}'" if (out / "plan.json").is_file()
                else "accepted: a results folder written by 'adabench compare'")
        raise UserError(f"report: {out} has no {RESULTS_FILE}; {hint}")
    return load_results(out / RESULTS_FILE, "report:")


def config_items(run: dict[str, Any]) -> list[tuple[str, str]]:
    """The run's provenance as (key, text) pairs, in stored order; prompts are listed apart."""
    items = []
    for key, value in run.items():
        if key in ("prompts", "command"):
            continue
        if key in TIME_KEYS and isinstance(value, (int, float)):
            value = datetime.datetime.fromtimestamp(value, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        elif isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        items.append((key, "–" if value is None else str(value)))
    return items


def model_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """What the page says about each model: spec, role, describe(), capabilities, failures."""
    rows = []
    for name, m in results["models"].items():
        describe = m.get("describe") or {}
        rows.append({"name": name, "role": m.get("role", ""), "spec": m.get("spec", ""),
                     "spec_hash": m.get("spec_hash") or "", "jobs": m.get("jobs", 0), "failed": m.get("failed", 0),
                     "capabilities": ", ".join(m.get("capabilities") or []) or "–",
                     "not_applicable": sorted((m.get("not_applicable") or {}).items()),
                     "describe": ", ".join(f"{k}={v}" for k, v in describe.items()) if isinstance(describe, dict)
                     else str(describe),
                     "failures": m.get("failures") or []})
    return rows


def by_prompt(media: list[Media]) -> list[tuple[str, list[Media]]]:
    """Media grouped by prompt, in the run's prompt order."""
    groups: dict[str, list[Media]] = {}
    for item in media:
        groups.setdefault(item.prompt, []).append(item)
    return list(groups.items())


def videos_note(out: Path, command: str) -> str:
    """Why the video section is empty, and how to fill it."""
    if (out / VIDEOS_DIR).is_dir():
        return (f"{out / VIDEOS_DIR} holds no exact frames (.npz) of this run's jobs, so there is nothing to show "
                "side by side.")
    return ("This run was made without --save-videos, so there are no side-by-side videos. To get them, rerun "
            f"'{command}' with --save-videos and a new --out folder (finished jobs in this one would be skipped), "
            "then run 'adabench report' on that folder.")


def display_path(out: Path) -> str:
    """The folder as the reader knows it: relative to the working folder when inside it (a committed
    reference page names no machine's paths), else absolute."""
    absolute = out.resolve()
    try:
        return str(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(absolute)


def template() -> Any:
    """The page template, shipped as package data, with autoescaping on for every name."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("adabench.harness", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    return env.get_template("report.html.j2")


def remove_stale(files: Path, keep: set[str]) -> None:
    """Delete images of an earlier render that this one did not write (only file types the report owns)."""
    for item in files.iterdir():
        if item.is_file() and item.suffix in OWNED_SUFFIXES and item.name not in keep:
            item.unlink()


def render_report(out: Path) -> Path:
    """Render ``report.html``, its ``report_files/`` and ``summary.md`` into the results folder ``out``."""
    out = Path(out)
    results = load_folder(out)
    files = out / FILES_DIR
    files.mkdir(exist_ok=True)
    atomic.remove_stale_parts(files)
    plots = make_plots(results, files, FILES_DIR)
    media = make_media(out, files, FILES_DIR, results, scale=MEDIA_SCALE) if (out / "plan.json").is_file() else []
    written = {Path(p.file).name for p in plots} | {Path(f).name for m in media
                                                    for f in (m.gif, m.labels, m.contact, m.mp4) if f}
    remove_stale(files, written)
    run = results["run"]
    comparisons = comparison_rows(results)
    html = template().render(
        title=display_path(out), schema_version=results.get("schema_version"), run=run, config=config_items(run),
        prompts=run.get("prompts", []), models=model_rows(results), model_names=model_names(results),
        reference=next((n for n, m in results["models"].items() if m.get("role") == "reference"), None),
        baseline=next((n for n, m in results["models"].items() if m.get("role") == "baseline"), "–"),
        headline=headline_tables(results),
        comparisons=comparisons, significant=[c for c in comparisons if c["significant"]], plots=plots,
        longest=max(run["frames"]), media=by_prompt(media), animated_init=(run.get("init") or ["–"])[0],
        media_scale=MEDIA_SCALE,
        videos_note=videos_note(out, run.get("command", "adabench compare ...")), groups=metric_groups(results))
    atomic.write_text(out / REPORT_FILE, html)
    atomic.write_text(out / SUMMARY_FILE, summary_markdown(results))
    return out / REPORT_FILE
