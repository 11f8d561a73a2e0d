"""Weight-free per-frame measures M(frame) that drift metrics track over a rollout.

Every measure maps frames [T, 3, H, W] (RGB floats in [0, 1]) to one float per frame [T].
Reference-based measures compare each frame with the video's first frame or with the frame
before it; so that they work chunk by chunk, every measure has the same signature
``fn(frames, first, prev)``, where ``first`` [3, H, W] is the video's first frame and
``prev`` [3, H, W] the frame just before ``frames[0]`` (``None`` for both when ``frames``
starts the video: then ``frames[0]`` is its own first and previous frame, so SSIM to it is
1 and PSNR the cap). Measures that need no reference ignore both.

Conventions (documented here once):
- luminance uses Rec. 709 weights on the [0, 1] values as given (no gamma linearisation);
- ``sharpness`` is the variance of the 3x3 Laplacian ([[0,1,0],[1,-4,1],[0,1,0]], valid
  region, no padding) of luminance in [0, 1] units: OpenCV's ``Laplacian(...).var()`` on
  0-255 gray images reads 255**2 times larger;
- ``clipping`` is the fraction of pixels with any channel <= 1/255 or >= 254/255, i.e.
  pixels that an 8-bit encoder writes as 0/1 or 254/255 in some channel;
- ``saturation`` is HSV saturation (max - min) / max per pixel, 0 where max is 0, averaged;
- SSIM and PSNR are torchmetrics' functional versions with ``data_range=1`` (SSIM: Gaussian
  kernel 11, sigma 1.5, so frames must be at least 11 px on each side); PSNR of identical
  frames is infinite and is capped at :data:`PSNR_CAP_DB` = 100 dB;
- SSIM runs at a bounded resolution (:mod:`adabench.metrics.resolution`: frames above 512 px
  on the short side are scaled down to it, area interpolation) and on a few frames at a time,
  so that its memory is bounded at any frame size; every other measure runs on the frames as
  they are. Frames too small for a measure are a :class:`UserError` naming the minimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from adabench.errors import UserError
from adabench.metrics.base import Direction
from adabench.metrics.resolution import to_work_size, work_size

PSNR_CAP_DB = 100.0                      # PSNR reported for identical frames (true value: +inf)
CLIP_LOW, CLIP_HIGH = 1.0 / 255.0, 254.0 / 255.0
REC709 = (0.2126, 0.7152, 0.0722)

SSIM_MIN_SIDE = 11                       # px: SSIM's Gaussian window
SHARPNESS_MIN_SIDE = 3                   # px: the 3x3 Laplacian, valid region
SSIM_CALL_PIXELS = 1 << 19               # pixels per torchmetrics SSIM call (it takes ~250 bytes a pixel and channel)

MeasureFn = Callable[[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]], torch.Tensor]


def luminance(frames: torch.Tensor) -> torch.Tensor:
    """Rec. 709 luma of frames [T, 3, H, W] -> [T, 1, H, W]."""
    w = torch.tensor(REC709, dtype=frames.dtype, device=frames.device).view(1, 3, 1, 1)
    return (frames * w).sum(dim=1, keepdim=True)


def sharpness(frames: torch.Tensor, first: torch.Tensor | None = None, prev: torch.Tensor | None = None) -> torch.Tensor:
    """Variance of the Laplacian of luminance, per frame [T]; blur lowers it."""
    check_min_side("sharpness", frames, SHARPNESS_MIN_SIDE, "its 3x3 Laplacian")
    y = luminance(frames)                                      # [T, 1, H, W]
    # the 3x3 Laplacian [[0,1,0],[1,-4,1],[0,1,0]] as shifted slices, summed in conv2d's tap
    # order (bit-identical to F.conv2d), without conv2d's 9x im2col copy: 10x faster and lighter at 4K
    lap = (y[..., :-2, 1:-1] + y[..., 1:-1, :-2] - 4 * y[..., 1:-1, 1:-1]
           + y[..., 1:-1, 2:] + y[..., 2:, 1:-1])              # [T, 1, H-2, W-2]
    return lap.flatten(1).var(dim=1, unbiased=False)


def exposure(frames: torch.Tensor, first: torch.Tensor | None = None, prev: torch.Tensor | None = None) -> torch.Tensor:
    """Mean luminance per frame [T], in [0, 1]."""
    return luminance(frames).flatten(1).mean(dim=1)


def clipping(frames: torch.Tensor, first: torch.Tensor | None = None, prev: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of pixels with any channel at the bottom or top 8-bit code, per frame [T]."""
    clipped = ((frames <= CLIP_LOW) | (frames >= CLIP_HIGH)).any(dim=1)   # [T, H, W]
    return clipped.flatten(1).float().mean(dim=1)


def saturation(frames: torch.Tensor, first: torch.Tensor | None = None, prev: torch.Tensor | None = None) -> torch.Tensor:
    """Mean HSV saturation per frame [T]; gray frames read 0."""
    hi = frames.amax(dim=1)                                    # [T, H, W]
    lo = frames.amin(dim=1)
    sat = torch.where(hi > 0, (hi - lo) / hi.clamp_min(1e-12), torch.zeros_like(hi))
    return sat.flatten(1).mean(dim=1)


def first_refs(frames: torch.Tensor, first: torch.Tensor | None) -> torch.Tensor:
    """The first item (frame or feature) repeated for every item: [T, ...]."""
    ref = frames[0] if first is None else first.to(frames)
    return ref.unsqueeze(0).expand_as(frames)


def prev_refs(frames: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
    """Item t-1 for every item t [T, ...]; the video's item 0 is its own predecessor."""
    head = frames[:1] if prev is None else prev.to(frames).unsqueeze(0)
    return torch.cat([head, frames[:-1]], dim=0)


def check_min_side(measure: str, frames: torch.Tensor, min_side: int, why: str) -> None:
    """UserError when frames [T, C, H, W] are smaller than ``min_side`` px on a side."""
    h, w = frames.shape[-2:]
    if min(h, w) < min_side:
        raise UserError(f"{measure} needs frames of at least {min_side}x{min_side} px ({why}), got {w}x{h}")


def ssim(frames: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """SSIM of each frame with its reference, both [T, 3, H, W] -> [T], at the bounded work size.

    Frames go to torchmetrics a few at a time (:data:`SSIM_CALL_PIXELS`): each frame's SSIM
    is its own, so the values are those of one call, with a fraction of its memory.
    """
    check_min_side("SSIM", frames, SSIM_MIN_SIDE, "its 11x11 Gaussian window")
    frames, refs = to_work_size(frames), to_work_size(refs)                     # [T, 3, h, w]
    per_call = max(1, SSIM_CALL_PIXELS // (frames.shape[-2] * frames.shape[-1]))
    parts = [structural_similarity_index_measure(frames[i:i + per_call], refs[i:i + per_call], data_range=1.0,
                                                 reduction="none").reshape(-1)
             for i in range(0, frames.shape[0], per_call)]
    return torch.cat(parts) if parts else frames.new_zeros(0)


def psnr(frames: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each frame with its reference -> [T], capped at PSNR_CAP_DB."""
    value = peak_signal_noise_ratio(frames, refs, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return value.reshape(-1).nan_to_num(posinf=PSNR_CAP_DB).clamp(max=PSNR_CAP_DB)


def ssim_first(frames: torch.Tensor, first: torch.Tensor | None = None, prev: torch.Tensor | None = None) -> torch.Tensor:
    return ssim(frames, first_refs(frames, first))


def ssim_prev(frames: torch.Tensor, first: torch.Tensor | None = None, prev: torch.Tensor | None = None) -> torch.Tensor:
    return ssim(frames, prev_refs(frames, prev))


def psnr_first(frames: torch.Tensor, first: torch.Tensor | None = None, prev: torch.Tensor | None = None) -> torch.Tensor:
    return psnr(frames, first_refs(frames, first))


def psnr_prev(frames: torch.Tensor, first: torch.Tensor | None = None, prev: torch.Tensor | None = None) -> torch.Tensor:
    return psnr(frames, prev_refs(frames, prev))


@dataclass(frozen=True)
class FrameMeasure:
    """A named per-frame measure with the unit and direction of its own values."""

    name: str
    fn: MeasureFn
    unit: str
    direction: Direction
    description: str
    bounded: bool = False          # runs at the bounded work size (adabench.metrics.resolution)

    def work_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) the measure runs at for frames of ``height`` x ``width``."""
        return work_size(height, width) if self.bounded else (height, width)


MEASURES: dict[str, FrameMeasure] = {m.name: m for m in (
    FrameMeasure("sharpness", sharpness, "luma^2", "higher", "variance of the Laplacian of Rec. 709 luminance in [0, 1]"),
    FrameMeasure("exposure", exposure, "luma", "none", "mean Rec. 709 luminance"),
    FrameMeasure("clipping", clipping, "fraction", "lower", "fraction of pixels with a channel <= 1/255 or >= 254/255"),
    FrameMeasure("saturation", saturation, "fraction", "none", "mean HSV saturation"),
    FrameMeasure("ssim_first", ssim_first, "1", "none", "SSIM to the first frame", bounded=True),
    FrameMeasure("ssim_prev", ssim_prev, "1", "higher", "SSIM to the previous frame", bounded=True),
    FrameMeasure("psnr_first", psnr_first, "dB", "none", f"PSNR to the first frame (capped at {PSNR_CAP_DB:g} dB)"),
    FrameMeasure("psnr_prev", psnr_prev, "dB", "higher", f"PSNR to the previous frame (capped at {PSNR_CAP_DB:g} dB)"),
)}


def get_measure(name: str) -> FrameMeasure:
    """Look up a measure by name; unknown names are a user error listing the known ones."""
    if name not in MEASURES:
        raise UserError(f"unknown frame measure {name!r}; known: {', '.join(MEASURES)}")
    return MEASURES[name]


def measure_frames(name: str, frames: torch.Tensor, first: torch.Tensor | None = None,
                   prev: torch.Tensor | None = None) -> torch.Tensor:
    """Apply measure ``name`` to frames [T, 3, H, W] -> [T] float (see module docstring for refs)."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [T, 3, H, W], got {tuple(frames.shape)}")
    return get_measure(name).fn(frames.float(), first, prev).float()
