"""Contact sheets of the embedded models (reports/reference/models/): ground truth, image-to-video
and text-to-video of the same prompts and seed, at fixed frames, for a person to look at.

One PNG per model: three columns per prompt (ground truth, ``--init gt``, ``--init none``), one
row per frame index (default 0, 3, 6, 12, 21, 51, 126: the first frame, the first two generated
chunks, the training horizon's end and 2.4x / 6x beyond it).

    python -m adabench.training.sheets --models adastate,ff-anchor,sliding-window --out reports/reference/models
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from adabench.errors import UserError
from adabench.harness.report_media import contact_sheet, write_png
from adabench.registry import GENERATORS, split_specs
from adabench.video_io import to_uint8
from adabench.world.panworld import render_clip
from adabench.world.prompts import parse_prompt

ROWS = (0, 3, 6, 12, 21, 51, 126)
PROMPTS = ("a fast pan left over a desert with red circles", "a slow pan up over a forest with blue squares")
SCALE = 3


def rollout(spec: str, prompt: str, seed: int, frames: int, init: torch.Tensor | None) -> np.ndarray:
    """The model's video [T, H, W, 3] uint8."""
    generator = GENERATORS.build(spec)
    chunks = [c.frames for c in generator.stream(prompt, seed, frames, init=init)]
    return to_uint8(torch.cat(chunks))


def sheet(spec: str, prompts: list[str], seed: int, rows: list[int]) -> np.ndarray:
    """Columns GT / i2v / t2v per prompt, one row per frame index in ``rows``."""
    frames = max(rows) + 1
    videos, labels = [], []
    for k, prompt in enumerate(prompts, start=1):
        truth = render_clip(parse_prompt(prompt), seed, frames)                    # [T, 3, H, W]
        videos += [to_uint8(truth), rollout(spec, prompt, seed, frames, truth[:1]),
                   rollout(spec, prompt, seed, frames, None)]
        labels += [f"p{k} truth", f"p{k} i2v", f"p{k} t2v"]
    return contact_sheet(videos, labels, rows, SCALE)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m adabench.training.sheets", description=__doc__.splitlines()[0])
    p.add_argument("--models", default="adastate,ff-anchor,sliding-window", help="comma list of model specs")
    p.add_argument("--prompts", default="|".join(PROMPTS), help="prompts separated by '|'")
    p.add_argument("--seed", type=int, default=4, help="noise and world seed (default 4)")
    p.add_argument("--out", default="reports/reference/models", help="folder for MODEL-sheet.png")
    p.add_argument("--name", default="", help="file name prefix instead of the model's name (one model only)")
    args = p.parse_args(argv)
    try:
        specs, prompts = split_specs(args.models), [t.strip() for t in args.prompts.split("|") if t.strip()]
        if args.name and len(specs) != 1:
            raise UserError("--name needs exactly one model in --models")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            stem = args.name or spec.split(":")[0]
            path = out / f"{stem}-sheet.png"
            write_png(sheet(spec, prompts, args.seed, list(ROWS)), path)
            print(path)
    except UserError as err:
        print(f"adabench sheets: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
