"""``adabench list``: every registered model, cache policy, metric, prompt suite and grammar word."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    return subparsers.add_parser("list", help="show registered models, policies, metrics, suites and prompt words")


def run(args: argparse.Namespace) -> int:
    from adabench.registry import GENERATORS, METRICS, POLICIES, SUITES
    from adabench.world.prompts import grammar_summary

    for title, registry in (("models", GENERATORS), ("cache policies", POLICIES),
                            ("metrics", METRICS), ("prompt suites", SUITES)):
        print(f"{title}:")
        for entry in registry.entries():
            print(f"  {entry.name:<18} {entry.help}")
        print()
    print("prompt grammar (PanWorld):")
    for line in grammar_summary():
        print(f"  {line}")
    return 0
