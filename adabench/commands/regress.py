"""``adabench regress``: compare a results folder with a baseline; exit 1 when a model got worse or slower."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "regress", help="compare results with a baseline metric by metric; exit 1 on a regression",
        description="Compare the results of a run with a baseline run metric by metric: pass, better, worse or "
                    "incomparable. Exit 1 when a quality metric moves in its bad direction beyond its tolerance "
                    "with separate 95%% intervals, or a speed figure (calibrated by each run's own calibration "
                    "workload) degrades beyond its tolerance.")
    p.add_argument("--baseline", required=True, help="results folder or results.json of the baseline run")
    p.add_argument("--current", required=True, help="results folder or results.json of the run to check")
    p.add_argument("--tolerance", action="append", default=[], metavar="METRIC=REL",
                   help="tolerance for a key scalar@frames/init, a scalar (every horizon and init) or a kind "
                        "(quality, speed, resource, growth); repeatable (defaults: 0.05 relative for quality, 0.20 "
                        "relative for speed and memory, 0.02 of a chunk's latency per chunk for the latency slope)")
    p.add_argument("--all", action="store_true", help="list every metric, passes included")
    return p


def run(args: argparse.Namespace) -> int:
    from adabench.harness.regress import format_changes, load_results, parse_tolerances, regress

    tolerances = parse_tolerances(args.tolerance)
    changes = regress(load_results(args.baseline, "--baseline"), load_results(args.current, "--current"), tolerances)
    print(format_changes(changes, args.all))
    return 1 if any(c.verdict == "worse" for c in changes) else 0
