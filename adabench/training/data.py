"""Training batches of PanWorld clips: batch ``i`` is a pure function of (data_seed, i)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ClipBatch:
    frames: torch.Tensor          # [B, T, 3, H, W] in [0, 1]
    tokens: torch.Tensor          # [B, prompt_tokens] long
    prompts: list[str]
    labels: dict[str, torch.Tensor]   # attribute name -> class index [B] (for the evaluator)


def random_prompts(rng: np.random.Generator, n: int) -> list[str]:
    """Prompts drawn uniformly from the PanWorld grammar (still shots included)."""
    from adabench.world.prompts import attribute_classes, make_prompt

    classes = attribute_classes()
    keys = ("motion", "scene", "color", "shape")
    return [make_prompt(*(classes[k][rng.integers(len(classes[k]))] for k in keys)) for _ in range(n)]


def clip_batch(data_seed: int, index: int, batch: int, num_frames: int, size: int = 32,
               device: torch.device | str = "cpu") -> ClipBatch:
    from adabench.world.panworld import render_batch
    from adabench.world.prompts import attribute_classes, parse_prompt

    rng = np.random.default_rng([data_seed, index])
    prompts = random_prompts(rng, batch)
    specs = [parse_prompt(p) for p in prompts]
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=batch)]
    frames = render_batch(specs, seeds, num_frames, size=size, device=device)
    classes = attribute_classes()
    labels = {
        "motion": torch.tensor([classes["motion"].index(s.motion) for s in specs]),
        "scene": torch.tensor([classes["scene"].index(s.scene) for s in specs]),
        "color": torch.tensor([classes["color"].index(s.color) for s in specs]),
        "shape": torch.tensor([classes["shape"].index(s.shape) for s in specs]),
    }
    tokens = torch.tensor([list(s.tokens) for s in specs], device=device)
    return ClipBatch(frames, tokens, prompts, labels)
