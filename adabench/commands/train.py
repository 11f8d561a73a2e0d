"""``adabench train RECIPE --out DIR``: train a model from a named recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

from adabench.commands.generate import positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train a model from a recipe (resumes from DIR if interrupted)")
    p.add_argument("recipe", help="a shipped recipe name (see adabench/recipes/) or a .toml file")
    p.add_argument("--out", required=True, help="output folder for weights, logs and the manifest")
    p.add_argument("--init-dir", default=None, help="where the recipe's init checkpoint lives (default: --out)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--steps", type=positive_int, default=None, help="override the recipe's step count (smoke runs)")
    p.add_argument("--retrain", action="store_true",
                   help="train again although DIR holds this recipe's finished weights (they are replaced only when "
                        "the new run completes; without it a finished run is left as it is)")
    return p


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from adabench.training.loop import train
    from adabench.training.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    if args.steps is not None:
        recipe = dataclasses.replace(recipe, steps=args.steps, warmup=min(recipe.warmup, args.steps))
    path = train(recipe, Path(args.out), args.device, Path(args.init_dir) if args.init_dir else None,
                 retrain=args.retrain)
    print(f"weights: {path}")
    return 0
