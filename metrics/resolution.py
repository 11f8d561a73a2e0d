"""The resolution optical flow and SSIM run at: memory bounded at any frame size.

Flow and SSIM cost many times a frame's pixels (torchmetrics' SSIM allocates ~250 bytes per
pixel and channel; DIS a few dozen), so at 3840x2160 a handful of frames asked for more than
16 GB. Frames whose short side is above :data:`WORK_SHORT_SIDE` (512 px) are therefore
scaled down to it, aspect ratio kept, with area interpolation (the mean of the pixels each
output pixel covers) before flow and SSIM; smaller frames are used as they are, bit for bit.
Flow computed on a scaled copy is scaled back to the pixels of the frames given, so that
px/frame keeps its meaning. ``adabench score`` says in each record at what resolution each
measure ran.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

WORK_SHORT_SIDE = 512     # px: frames with a longer short side are scaled down to this for flow and SSIM


def work_size(height: int, width: int, short_side: int = WORK_SHORT_SIDE) -> tuple[int, int]:
    """(H, W) that flow and SSIM run at for frames of ``height`` x ``width``: their own up to
    ``short_side`` px on the short side, scaled down to it (aspect kept) above."""
    shortest = min(height, width)
    if shortest <= short_side:
        return height, width
    scale = short_side / shortest
    return max(1, round(height * scale)), max(1, round(width * scale))


def to_work_size(frames: torch.Tensor, short_side: int = WORK_SHORT_SIDE) -> torch.Tensor:
    """[T, C, H, W] -> [T, C, h, w] at :func:`work_size` (area interpolation); unchanged when small."""
    size = work_size(*frames.shape[-2:], short_side=short_side)
    if size == tuple(frames.shape[-2:]) or frames.shape[0] == 0:
        return frames
    return F.interpolate(frames.float(), size=size, mode="area")


def in_frame_pixels(flow: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Flow [N, 2, h, w] in pixels of its own grid -> in pixels of ``height`` x ``width`` frames
    (x scaled by width / w, y by height / h); the grid stays h x w."""
    h, w = flow.shape[-2:]
    if (h, w) == (height, width):
        return flow
    scale = torch.tensor([width / w, height / h], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)
    return flow * scale


def bounded_flow(backend: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], prev: torch.Tensor,
                 nxt: torch.Tensor) -> torch.Tensor:
    """Flow from ``prev`` to ``nxt`` ([N, 3, H, W]) computed at :func:`work_size`: [N, 2, h, w]
    in pixels of the given H x W frames."""
    height, width = prev.shape[-2:]
    return in_frame_pixels(backend(to_work_size(prev), to_work_size(nxt)), height, width)
