"""``panworld-gt``: PanWorld's ground-truth video as a streaming generator (the reference row)."""

from __future__ import annotations

import time
from typing import Any, Iterator

import torch

from adabench.chunk import Chunk
from adabench.errors import UserError
from adabench.generator import check_frames
from adabench.world.panworld import render_clip
from adabench.world.prompts import parse_prompt


class GroundTruthGenerator:
    """Streams the exact rendered world for a prompt and seed, chunk by chunk.

    ``init`` is accepted for interface compatibility and ignored: the ground truth's first
    frame is the image-to-video start of every embedded model already. ``seed_offset`` renders
    seed + offset instead: another ground-truth video of the same prompt, so that a distance of
    this row to ``panworld-gt`` is the spread between two true videos (the floor of any
    distance to ground truth).
    """

    name = "panworld-gt"
    capabilities = frozenset({"init_frames"})     # given first frames are ground truth's own: ignored

    def __init__(self, size: int = 32, fps: float = 16.0, chunk_frames: int = 3, device: str = "cpu",
                 seed_offset: int = 0) -> None:
        if isinstance(seed_offset, bool) or not isinstance(seed_offset, int) or not 0 <= seed_offset < 2 ** 62:
            raise UserError(f"seed_offset={seed_offset!r} is invalid; accepted: an integer from 0 to 2^62-1")
        self.frame_size, self.fps, self.chunk_frames = int(size), float(fps), int(chunk_frames)
        self.seed_offset = seed_offset

    def check_prompt(self, prompt: str) -> None:
        parse_prompt(prompt)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "frame_size": self.frame_size, "fps": self.fps, "chunk_frames": self.chunk_frames,
                "weights": "none (procedural ground truth)", "budget_frames": 0,
                **({"seed_offset": self.seed_offset} if self.seed_offset else {})}

    def stream(self, prompt: str, seed: int, num_frames: int, init: torch.Tensor | None = None,
               probe: Any = None) -> Iterator[Chunk]:
        check_frames(num_frames)
        spec = parse_prompt(prompt)
        for index, start in enumerate(range(0, num_frames, self.chunk_frames)):
            t0 = time.perf_counter()
            n = min(self.chunk_frames, num_frames - start)
            frames = render_clip(spec, seed + self.seed_offset, n, start=start, size=self.frame_size)   # [n, 3, H, W]
            yield Chunk(index, start, frames, self.fps, {"total": time.perf_counter() - t0})


class CodecRoundTripGenerator(GroundTruthGenerator):
    """``panworld-codec``: the ground truth encoded and decoded by a model's codec, no DiT between.

    The floor a generator that decodes through that codec can reach: any distance between
    ``panworld-codec`` and ``panworld-gt`` is the codec's, not the DiT's. ``checkpoint`` is a
    model checkpoint whose codec is used (default: the shipped ``base``, whose codec every
    shipped model shares bit for bit).
    """

    name = "panworld-codec"

    def __init__(self, checkpoint: str | None = None, size: int = 32, fps: float = 16.0, chunk_frames: int = 3,
                 device: str = "cpu", seed_offset: int = 0) -> None:
        from adabench.checkpoints import load_model
        from adabench.models import checkpoint_path, resolve_device

        super().__init__(size, fps, chunk_frames, device, seed_offset)
        path, hint = checkpoint_path("base", checkpoint)
        model, codec, meta = load_model(path, rebuild_hint=hint)
        if model.config.frame_size != self.frame_size:
            raise UserError(f"size={size!r} is invalid for the codec of {path.name}; accepted: "
                            f"{model.config.frame_size} (the frame size it was trained on)")
        self.device = resolve_device(device)
        self.codec = codec.float().to(self.device).eval()
        decoder = f", decoder {meta['decoder']}" if "decoder" in meta else ""
        self.weights = f"codec of {path.name} ({meta.get('recipe', 'unknown recipe')}{decoder})"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "name": self.name, "weights": self.weights, "device": str(self.device)}

    def stream(self, prompt: str, seed: int, num_frames: int, init: torch.Tensor | None = None,
               probe: Any = None) -> Iterator[Chunk]:
        for chunk in super().stream(prompt, seed, num_frames, init, probe):
            t0 = time.perf_counter()
            with torch.no_grad():
                frames = self.codec.decode(self.codec.encode(chunk.frames.to(self.device))).cpu()   # [n, 3, H, W]
            yield Chunk(chunk.index, chunk.start_frame, frames, chunk.fps,
                        {"total": chunk.timings["total"] + time.perf_counter() - t0})
