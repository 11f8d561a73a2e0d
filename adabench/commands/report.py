"""``adabench report DIR``: render report.html and summary.md from a results folder alone."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="render report.html and summary.md from a results folder",
                              description="Render an offline HTML report (tables, plots, side-by-side videos when "
                                          "the run saved them) and a short summary.md from a folder written by "
                                          "'adabench compare', from the folder alone.")
    p.add_argument("folder", metavar="DIR", help="a folder written by 'adabench compare'")
    return p


def run(args: argparse.Namespace) -> int:
    from adabench.harness.report import SUMMARY_FILE, render_report

    page = render_report(Path(args.folder))
    print(f"adabench report: {page} and {page.with_name(SUMMARY_FILE)}")
    return 0
