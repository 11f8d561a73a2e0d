"""``panworld-gt``: PanWorld's ground-truth video as a streaming generator (the reference row)."""

from __future__ import annotations

import time
from typing import Any, Iterator

import torch

from adabench.chunk import Chunk
from adabench.generator import check_frames
from adabench.world.panworld import render_clip
from adabench.world.prompts import parse_prompt


class GroundTruthGenerator:
    """Streams the exact rendered world for a prompt and seed, chunk by chunk.

    ``init`` is accepted for interface compatibility and ignored: the ground truth's first
    frame is the image-to-video start of every embedded model already.
    """

    name = "panworld-gt"
    capabilities = frozenset({"init_frames"})     # given first frames are ground truth's own: ignored

    def __init__(self, size: int = 32, fps: float = 16.0, chunk_frames: int = 3, device: str = "cpu") -> None:
        self.frame_size, self.fps, self.chunk_frames = int(size), float(fps), int(chunk_frames)

    def check_prompt(self, prompt: str) -> None:
        parse_prompt(prompt)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "frame_size": self.frame_size, "fps": self.fps, "chunk_frames": self.chunk_frames,
                "weights": "none (procedural ground truth)", "budget_frames": 0}

    def stream(self, prompt: str, seed: int, num_frames: int, init: torch.Tensor | None = None,
               probe: Any = None) -> Iterator[Chunk]:
        check_frames(num_frames)
        spec = parse_prompt(prompt)
        for index, start in enumerate(range(0, num_frames, self.chunk_frames)):
            t0 = time.perf_counter()
            n = min(self.chunk_frames, num_frames - start)
            frames = render_clip(spec, seed, n, start=start, size=self.frame_size)     # [n, 3, H, W]
            yield Chunk(index, start, frames, self.fps, {"total": time.perf_counter() - t0})
