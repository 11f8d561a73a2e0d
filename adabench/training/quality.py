"""The embedded models' quality table (docs/models.md): how much each looks like PanWorld.

Reads a ``compare`` folder run with ``panworld-gt:seed_offset=N`` (other ground-truth videos of
the same prompts: the spread between true videos) and ``panworld-codec`` (the ground truth
through the shipped codec: what the codec alone costs) beside the models, with the metrics
``motion-fidelity,adherence,frechet,appearance`` (``make model-quality`` runs it), and prints
one markdown row per init mode and model:

- Fréchet distance of evaluator features to ``panworld-gt`` per 8-frame window, and its mean
  over the windows divided by that of ``panworld-codec:seed_offset=1000`` (other seeds' ground
  truth through the codec: a text-to-video rollout cannot know the seed's layout, so the codec
  is measured on other videos of the same prompts; the target is at most 1.25);
- off-palette share of pixels, colour distance and sharpness ratio (means), and for the last
  two the share of videos inside the range that the ground truth spans for the same prompt
  across seeds (the plain ``panworld-gt`` row, whose videos are compared with reference seeds
  like every other row's);
- PSNR to the same seed's ground truth over frames 1-3 (image-to-video's first chunk);
- the share of videos whose first window the evaluator recognises in scene, colour and shape;
- the motion ratio of moving prompts (mean) and the still prompts' motion in px/frame.

    python -m adabench.training.quality runs/eval-quality
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from adabench.errors import UserError
from adabench.harness.aggregate import read_plan
from adabench.harness.plan import REFERENCE_MODEL
from adabench.harness.store import Row, Store

CODEC_ROW = "panworld-codec:seed_offset=1000"   # the codec round trip of other seeds: the yardstick
FIRST_WINDOW = ("adherence_scene", "adherence_color", "adherence_shape")


def _mean(values: list[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(values) if values else math.nan


def _fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _in_range(rows: list[Row], gt_rows: list[Row], horizon: str, scalar: str) -> float:
    """Share of ``rows`` whose ``scalar`` lies within the range of the ground-truth videos of the
    same prompt (``gt_rows``, every seed)."""
    span: dict[str, list[float]] = defaultdict(list)
    for r in gt_rows:
        span[r.prompt].append(r.result["horizons"][horizon]["scalars"][scalar])
    hits = [min(span[r.prompt]) <= r.result["horizons"][horizon]["scalars"][scalar] <= max(span[r.prompt])
            for r in rows if r.prompt in span]
    return sum(hits) / len(hits) if hits else math.nan


def quality_rows(folder: Path, horizon: int, codec_row: str = CODEC_ROW) -> list[dict[str, Any]]:
    """One dict per (init, model) with the table's figures, models in the run's order."""
    try:
        results = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder}: no readable results.json ({exc}); accepted: an `adabench compare` folder")
    planned = {job["hash"] for job in read_plan(folder)["jobs"]}      # the store may hold older runs' jobs too
    rows = [r for r in Store(folder / "store").rows().values() if r.status == "ok" and r.hash in planned]
    h = str(horizon)
    by: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        if h not in r.result["horizons"]:
            raise UserError(f"{folder}: job {r.hash} has no horizon {horizon}; accepted: a horizon of the run")
        by[(r.model, r.init)].append(r)
    models = list(results["models"])
    for needed in (REFERENCE_MODEL, codec_row):
        if needed not in models:
            raise UserError(f"{folder}: no {needed!r} row; accepted: a compare run on PanWorld prompts with "
                            f"--models ...,{codec_row}")
    out = []
    for init in ("gt", "none"):
        codec = results["models"][codec_row]["metrics"].get(f"frechet_mean@{h}/{init}", {}).get("mean") or math.nan
        gt_rows = by.get((REFERENCE_MODEL, init), [])
        for name in models:
            mine = by.get((name, init), [])
            if not mine:
                continue
            metrics = results["models"][name]["metrics"]
            windows = results["models"][name]["series"].get(f"frechet@{h}/{init}", {}).get("mean", [])
            frechet = metrics.get(f"frechet_mean@{h}/{init}", {}).get("mean")
            frechet = math.nan if frechet is None else frechet      # the reference row: no distance to itself

            def scalar(key: str) -> list[float]:
                return [r.result["horizons"][h]["scalars"].get(key, math.nan) for r in mine]

            first = [all(r.result["horizons"][h]["series"][a][0] == 1.0 for a in FIRST_WINDOW) for r in mine
                     if all(r.result["horizons"][h]["series"].get(a) for a in FIRST_WINDOW)]
            moving = [v for v in scalar("motion_ratio") if not math.isnan(v)]
            out.append({
                "init": init, "model": name, "videos": len(mine),
                "frechet_windows": [float(w) for w in windows], "frechet_mean": frechet,
                "frechet_over_codec": frechet / codec,
                "off_palette": _mean(scalar("appearance_off_palette")),
                "off_palette_max": max(scalar("appearance_off_palette")),
                "colour_distance": _mean(scalar("appearance_colour_distance")),
                "colour_in_range": _in_range(mine, gt_rows, h, "appearance_colour_distance"),
                "sharpness_ratio": _mean(scalar("appearance_sharpness_ratio")),
                "sharpness_in_range": _in_range(mine, gt_rows, h, "appearance_sharpness_ratio"),
                "psnr_start": _mean(scalar("appearance_psnr_start")),
                "recognised_first_window": sum(first) / len(first) if first else math.nan,
                "motion_ratio": _mean(moving), "moving": len(moving),
                "still_px": _mean([v for v in scalar("still_motion") if not math.isnan(v)]),
            })
    return out


def markdown(table: list[dict[str, Any]]) -> str:
    head = ("| init | model | Fréchet per window | Fréchet / codec | off-palette % (max) | colour dist. "
            "(in GT range) | sharpness ratio (in GT range) | PSNR frames 1-3 | first window recognised | "
            "motion ratio | still px/frame |")
    lines = [head, "|" + "---|" * 11]
    for r in table:
        windows = " / ".join(f"{w:.0f}" for w in r["frechet_windows"]) or "n/a (reference)"
        lines.append(
            f"| {r['init']} | {r['model']} | {windows} | {_fmt(r['frechet_over_codec'])} | "
            f"{100 * r['off_palette']:.1f} ({100 * r['off_palette_max']:.0f}) | "
            f"{_fmt(r['colour_distance'])} ({100 * r['colour_in_range']:.0f} %) | "
            f"{_fmt(r['sharpness_ratio'])} ({100 * r['sharpness_in_range']:.0f} %) | {_fmt(r['psnr_start'], 1)} | "
            f"{_fmt(100 * r['recognised_first_window'], 0)} % | {_fmt(r['motion_ratio'])} | {_fmt(r['still_px'], 3)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m adabench.training.quality", description=__doc__.splitlines()[0])
    p.add_argument("folder", help="an `adabench compare` folder with panworld-codec and the appearance metric")
    p.add_argument("--frames", type=int, default=24, help="the horizon to tabulate (default 24)")
    p.add_argument("--codec-row", default=CODEC_ROW, help=f"the row Fréchet distances are divided by (default {CODEC_ROW})")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of markdown")
    args = p.parse_args(argv)
    try:
        table = quality_rows(Path(args.folder), args.frames, args.codec_row)
    except UserError as err:
        print(f"adabench quality: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(table, indent=1) if args.json else markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
