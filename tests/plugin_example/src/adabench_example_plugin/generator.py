"""``drifting-texture``: a streaming generator that needs no model, with known motion.

Every video is a seeded smooth colour texture (a sum of low-frequency plane waves, periodic
over the frame) translating at ``speed`` px/frame in a direction taken from the prompt's
text. Because the texture is periodic the motion is the same at every pixel (no occlusion
at the borders), so optical flow should read ``speed`` everywhere: a generator whose true
motion is known, for checking flow-based metrics on outside generators.

It shows what adabench asks of any outside generator (``adabench.generator.StreamingGenerator``):
``name``, ``fps``, ``frame_size``, ``chunk_frames``, ``stream`` and ``describe``; frames
[F, 3, H, W] float32 in [0, 1] on the CPU; its own ``timings["total"]`` per chunk; the same
frames for the same (prompt, seed) every time (the harness replays each rollout to score it).
It declares no capabilities, so metrics that need the attention probe are not applicable.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any, Iterator

import torch

from adabench.chunk import Chunk
from adabench.errors import UserError

from adabench_example_plugin import __version__


def _digest(*parts: object) -> int:
    """A stable 63-bit integer from ``parts`` (Python's hash() changes between processes)."""
    text = "\n".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


class DriftingTexture:
    """A seeded periodic texture moving at ``speed`` px/frame; the direction comes from the prompt."""

    capabilities: frozenset[str] = frozenset()     # no init_frames, no attention probe

    def __init__(self, speed: float = 1.0, size: int = 32, chunk: int = 3, fps: float = 16.0,
                 waves: int = 24, max_cycles: int = 4) -> None:
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0 <= speed <= size / 4:
            raise UserError(f"drifting-texture: speed={speed!r} is invalid; accepted: a number of px/frame "
                            f"in 0..{size / 4:g} (a quarter of the frame)")
        for key, value, low in (("size", size, 8), ("chunk", chunk, 1), ("waves", waves, 1), ("max_cycles", max_cycles, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"drifting-texture: {key}={value!r} is invalid; accepted: an integer >= {low}")
        if not isinstance(fps, (int, float)) or fps <= 0:
            raise UserError(f"drifting-texture: fps={fps!r} is invalid; accepted: a number > 0")
        self.name = "drifting-texture"
        self.speed = float(speed)
        self.fps = float(fps)
        self.frame_size = size
        self.chunk_frames = chunk
        self.waves = waves
        self.max_cycles = max_cycles    # highest spatial frequency, in cycles per frame width: keeps it smooth

    def check_prompt(self, prompt: str) -> None:
        """Any text is accepted but empty text (raised before a run starts, as a one-line error)."""
        if not prompt.strip():
            raise UserError("drifting-texture needs a non-empty prompt")

    def velocity(self, prompt: str) -> tuple[float, float]:
        """(vx, vy) in px/frame, x right and y down: ``speed`` in a direction fixed by the prompt's text."""
        angle = 2 * math.pi * (_digest("direction", prompt) % 3600) / 3600
        return self.speed * math.cos(angle), self.speed * math.sin(angle)

    def _waves(self, prompt: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Wave vectors [W, 2] (cycles per frame), amplitudes [W] and phases [3, W], from (prompt, seed)."""
        gen = torch.Generator().manual_seed(_digest("texture", prompt, int(seed)))
        k = torch.randint(-self.max_cycles, self.max_cycles + 1, (self.waves, 2), generator=gen).double()
        k[(k == 0).all(1)] = torch.tensor([1.0, 0.0], dtype=torch.float64)      # no constant wave
        amplitude = 1.0 / k.norm(dim=1)                                          # smoother: more weight low
        phase = 2 * math.pi * torch.rand(3, self.waves, generator=gen, dtype=torch.float64)
        return k, amplitude, phase

    def stream(self, prompt: str, seed: int, num_frames: int, init: torch.Tensor | None = None) -> Iterator[Chunk]:
        """Yield ``num_frames`` frames in chunks of ``chunk_frames`` (the last may be shorter)."""
        if init is not None:
            raise UserError("drifting-texture cannot start from given frames (it has no 'init_frames' capability)")
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise UserError(f"frames={num_frames!r} is invalid; accepted: an integer >= 1")
        self.check_prompt(prompt)
        k, amplitude, phase = self._waves(prompt, seed)
        vx, vy = self.velocity(prompt)
        n = self.frame_size
        ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64),
                                indexing="ij")                                   # [H, W] each
        scale = 2.0 / amplitude.norm()            # tanh(+-2 sigma) stays clear of 0 and 1: no clipped flat areas
        emitted, index = 0, 0
        while emitted < num_frames:
            t0 = time.perf_counter()
            count = min(self.chunk_frames, num_frames - emitted)
            t = torch.arange(emitted, emitted + count, dtype=torch.float64)[:, None, None]   # [F, 1, 1]
            frames = []
            for c in range(3):
                # frame t is the texture of frame 0 moved by t * (vx, vy): evaluate it at (x - vx t, y - vy t)
                arg = (k[:, 0, None, None, None] * (xs - vx * t) + k[:, 1, None, None, None] * (ys - vy * t)) / n
                value = (amplitude[:, None, None, None] * torch.cos(2 * math.pi * arg + phase[c, :, None, None, None]))
                frames.append(0.5 + 0.5 * torch.tanh(scale * value.sum(0)))   # [F, H, W]
            chunk = torch.stack(frames, 1).float()                            # [F, 3, H, W] in (0, 1)
            elapsed = time.perf_counter() - t0
            yield Chunk(index=index, start_frame=emitted, frames=chunk, fps=self.fps,
                        timings={"total": elapsed}, cache_frames=0, cache_bytes=0)
            emitted += count
            index += 1

    def describe(self) -> dict[str, Any]:
        """Everything that decides the frames (JSON-able; stored with every result)."""
        return {"name": self.name, "speed": self.speed, "frame_size": self.frame_size,
                "chunk_frames": self.chunk_frames, "fps": self.fps, "waves": self.waves,
                "max_cycles": self.max_cycles, "weights": f"none (procedural, adabench-example-plugin {__version__})",
                "dtype": "float32", "device": "cpu"}
