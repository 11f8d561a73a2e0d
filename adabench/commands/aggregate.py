"""``adabench aggregate DIR``: rebuild results.json and samples.parquet from a results folder's store."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("aggregate", help="rebuild results.json and samples.parquet from a results folder",
                              description="Rebuild results.json and samples.parquet of a folder written by "
                                          "'adabench compare' from its store alone.")
    p.add_argument("folder", metavar="DIR", help="a folder written by 'adabench compare'")
    return p


def run(args: argparse.Namespace) -> int:
    from adabench.harness.aggregate import aggregate, headline_table

    results = aggregate(Path(args.folder))
    print(headline_table(results))
    return 1 if results["run"]["jobs_failed"] else 0
