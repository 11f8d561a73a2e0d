"""Appearance against PanWorld's ground truth: colours, sharpness and pixel fidelity.

Motion metrics read the flow of whatever is on screen, artefacts included; these say whether
what is on screen looks like the world the prompt names. Each compares the video with
ground-truth renders of the same prompt on *reference seeds* (seeds no benchmark uses, so a
ground-truth video is compared with other ground-truth videos, never with itself), over the
video's frames from ``skip`` on (the first generated chunk of an image-to-video rollout with
3-frame chunks starts at frame 1, of a text-to-video rollout at frame 0):

- ``appearance_off_palette``: the share of pixels whose colour never occurs in the reference
  videos: colours quantised to ``palette_levels`` per channel, the reference's set of occupied
  cells widened by one cell in every direction (so the codec's small colour shifts stay on
  the palette). Colours the prompt does not name (a yellow patch in a "red circles" video)
  land outside.
- ``appearance_colour_distance``: total-variation distance between the video's colour
  histogram and the reference's (``histogram_levels`` per channel; 0 identical, 1 disjoint).
- ``appearance_sharpness_ratio``: mean variance of the Laplacian of the video's frames
  (:func:`~adabench.metrics.frame_measures.sharpness`) over the reference's; 1 is as sharp
  as the world, below 1 blur, above 1 noise or over-sharpening (direction "none": both ways
  are wrong).
- ``appearance_psnr_start``: PSNR (dB) of frames 1-3 against the ground truth of the
  video's *own* seed: in image-to-video the first generated chunk, which should stay close
  to the truth that follows the given frame. Series ``psnr_gt``: the same per frame.

The state is a few histograms and sums (bounded memory whatever the video's length) plus
one float per frame for the PSNR series.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from adabench.chunk import Chunk
from adabench.errors import UserError
from adabench.metrics.base import MetricInfo, MetricResult, StreamingMetric
from adabench.metrics.frame_measures import psnr, sharpness
from adabench.world.panworld import render_clip
from adabench.world.prompts import parse_prompt

REFERENCE_SEED0 = 1_000_000        # reference seeds REFERENCE_SEED0 .. + reference_seeds - 1
START_FRAMES = (1, 4)              # frames [1, 4): the first generated chunk after a given first frame


def colour_cells(frames: torch.Tensor, levels: int) -> torch.Tensor:
    """Flat colour-cell index of every pixel of frames [T, 3, H, W] in [0, 1] -> [T * H * W]."""
    q = (frames.clamp(0.0, 1.0) * levels).long().clamp(max=levels - 1)    # [T, 3, H, W]
    cells = (q[:, 0] * levels + q[:, 1]) * levels + q[:, 2]                 # [T, H, W]
    return cells.reshape(-1)


def colour_histogram(frames: torch.Tensor, levels: int) -> torch.Tensor:
    """Pixel counts per colour cell [levels^3] (float64) of frames [T, 3, H, W]."""
    return torch.bincount(colour_cells(frames, levels), minlength=levels ** 3).double()


def widen(occupied: torch.Tensor, levels: int) -> torch.Tensor:
    """A boolean cell set [levels^3] widened by one cell along every channel (3x3x3 neighbourhood)."""
    cube = occupied.reshape(1, 1, levels, levels, levels).float()
    return (torch.nn.functional.max_pool3d(cube, 3, stride=1, padding=1) > 0).reshape(-1)


@functools.lru_cache(maxsize=64)
def reference(prompt: str, size: int, seeds: int, frames: int, skip: int, palette_levels: int,
              histogram_levels: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(palette [palette_levels^3] bool, colour distribution [histogram_levels^3], mean sharpness)
    of ground-truth renders of ``prompt`` on the reference seeds, frames ``skip`` .. ``frames - 1``."""
    spec = parse_prompt(prompt)
    clips = torch.cat([render_clip(spec, REFERENCE_SEED0 + s, frames - skip, start=skip, size=size)
                       for s in range(seeds)])                                 # [seeds * (frames - skip), 3, H, W]
    palette = widen(colour_histogram(clips, palette_levels) > 0, palette_levels)
    hist = colour_histogram(clips, histogram_levels)
    return palette, hist / hist.sum(), float(sharpness(clips).mean())


class Appearance(StreamingMetric):
    """Colours, sharpness and fidelity of a PanWorld video against ground truth (module docstring)."""

    needs = frozenset({"frames", "prompt", "ground_truth", "seed"})

    def __init__(self, prompt: str | None = None, seed: int | None = None, skip: int = 1, reference_seeds: int = 4, reference_frames: int = 24,
                 palette_levels: int = 16, histogram_levels: int = 8) -> None:
        super().__init__()
        if prompt is None or isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"appearance needs the video's PanWorld prompt and seed (got prompt={prompt!r}, "
                            f"seed={seed!r}); accepted: appearance:prompt=TEXT,seed=N (compare passes both)")
        for key, value, low in (("skip", skip, 0), ("reference_seeds", reference_seeds, 1),
                                ("reference_frames", reference_frames, 2), ("palette_levels", palette_levels, 2),
                                ("histogram_levels", histogram_levels, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"appearance: {key}={value!r} is invalid; accepted: an integer >= {low}")
        if reference_frames <= skip:
            raise UserError(f"appearance: reference_frames={reference_frames} must exceed skip={skip}")
        self.spec, self.prompt, self.seed = parse_prompt(prompt), prompt, int(seed)
        self.skip, self.reference_seeds, self.reference_frames = skip, reference_seeds, reference_frames
        self.palette_levels, self.histogram_levels = palette_levels, histogram_levels
        self.add_state("hist", torch.zeros(histogram_levels ** 3, dtype=torch.float64), "sum")
        self.add_state("off_palette", 0.0, "sum")        # pixels outside the palette
        self.add_state("pixels", 0.0, "sum")             # pixels counted (frames >= skip)
        self.add_state("sharpness_sum", 0.0, "sum")      # sum of per-frame sharpness (frames >= skip)
        self.add_state("frames", 0.0, "sum")
        self.add_state("psnr_frames", [], "cat")         # (frame index, PSNR dB) per frame

    @property
    def info(self) -> MetricInfo:
        return MetricInfo("appearance_off_palette", "fraction", "lower", None,
                          "share of pixels in colours the prompt's ground truth never shows")

    def _reference(self, size: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        return reference(self.prompt, size, self.reference_seeds, self.reference_frames, self.skip,
                         self.palette_levels, self.histogram_levels)

    def update(self, chunk: Chunk) -> None:
        frames = chunk.frames.float()                                          # [F, 3, H, W]
        size = frames.shape[-1]
        if frames.shape[-2] != size:
            raise UserError(f"appearance needs square PanWorld frames, got {frames.shape[-1]}x{frames.shape[-2]}")
        truth = render_clip(self.spec, self.seed, frames.shape[0], start=chunk.start_frame, size=size)
        values = psnr(frames, truth)                                           # [F]
        self.psnr_frames.extend((chunk.start_frame + i, float(v)) for i, v in enumerate(values))
        keep = frames[max(0, self.skip - chunk.start_frame):]                  # frames >= skip
        if keep.shape[0] == 0:
            return
        palette, _, _ = self._reference(size)
        self.off_palette += float((~palette[colour_cells(keep, self.palette_levels)]).sum())
        self.pixels += float(keep.shape[0] * size * size)
        self.hist = self.hist + colour_histogram(keep, self.histogram_levels)
        self.sharpness_sum += float(sharpness(keep).sum())
        self.frames += float(keep.shape[0])

    def compute(self) -> MetricResult:
        info = {
            "appearance_off_palette": self.info,
            "appearance_colour_distance": MetricInfo(
                "appearance_colour_distance", "1", "lower", None,
                "total-variation distance of the colour histogram to the prompt's ground truth (0-1)"),
            "appearance_sharpness_ratio": MetricInfo(
                "appearance_sharpness_ratio", "1", "none", None,
                "variance of the Laplacian over the ground truth's (1 = as sharp; < 1 blur, > 1 noise)"),
            "appearance_psnr_start": MetricInfo(
                "appearance_psnr_start", "dB", "higher", None,
                "PSNR of frames 1-3 to the ground truth of the same seed (image-to-video: the first chunk)"),
            "psnr_gt": MetricInfo("psnr_gt", "dB", "higher", None, "PSNR to the ground truth of the same seed, per frame"),
        }
        per_frame = dict(sorted(self.psnr_frames))
        start = [per_frame[i] for i in range(*START_FRAMES) if i in per_frame]
        scalars = {"appearance_psnr_start": sum(start) / len(start) if start else math.nan,
                   "appearance_off_palette": math.nan, "appearance_colour_distance": math.nan,
                   "appearance_sharpness_ratio": math.nan}
        if self.frames > 0:
            size = int(round(math.sqrt(self.pixels / self.frames)))
            _, ref_hist, ref_sharpness = self._reference(size)
            hist = self.hist / self.hist.sum()
            scalars.update({
                "appearance_off_palette": self.off_palette / self.pixels,
                "appearance_colour_distance": 0.5 * float((hist - ref_hist).abs().sum()),
                "appearance_sharpness_ratio": (self.sharpness_sum / self.frames) / max(ref_sharpness, 1e-12),
            })
        return MetricResult(scalars, {"psnr_gt": list(per_frame.values())}, info)

    def describe(self) -> dict[str, Any]:
        return {"skip": self.skip, "reference_seeds": self.reference_seeds, "reference_frames": self.reference_frames,
                "palette_levels": self.palette_levels, "histogram_levels": self.histogram_levels}
