"""3D rotary position embedding: time plus 2D space, applied per head.

The head dimension is split into a time part and two equal spatial parts (y, x); each
part rotates pairs of channels by angle ``position * frequency``. Positions may be any
real number (absolute video index, or a slot in a relative layout).
"""

from __future__ import annotations

import torch


def _freqs(dims: int, base: float = 10000.0) -> torch.Tensor:
    # [dims/2] frequencies of the standard RoPE ladder
    return base ** (-torch.arange(0, dims, 2, dtype=torch.float64) / dims)


def rope_angles(t: torch.Tensor, y: torch.Tensor, x: torch.Tensor, time_dims: int, head_dim: int) -> torch.Tensor:
    """Angles [N, head_dim/2] for tokens at positions (t, y, x), each of shape [N]."""
    space = (head_dim - time_dims) // 2
    parts = [
        t.double()[:, None] * _freqs(time_dims)[None],
        y.double()[:, None] * _freqs(space)[None],
        x.double()[:, None] * _freqs(space)[None],
    ]
    return torch.cat(parts, dim=1)


def rope_tables(angles: torch.Tensor, dtype: torch.dtype, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each [N, head_dim/2], ready for :func:`apply_rope`."""
    return angles.cos().to(device=device, dtype=dtype), angles.sin().to(device=device, dtype=dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of x [..., N, head_dim] by the angles behind cos/sin [N, head_dim/2].

    The rotation is computed in the tables' precision (float32 tables rotate bfloat16 keys in
    float32, as the Wan family does) and returned in x's dtype; same-dtype tables change nothing.
    """
    x1, x2 = x[..., 0::2], x[..., 1::2]          # [..., N, head_dim/2] each
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)


def frame_token_positions(frame_positions: torch.Tensor, grid: int | tuple[int, int]
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token positions for frames at time positions [n]: (t, y, x) each [n * rows * cols], frame-major,
    then row-major; ``grid`` is tokens per side of a square frame, or (rows, cols)."""
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    n = frame_positions.shape[0]
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    t = frame_positions.double().repeat_interleave(rows * cols)
    return t, ys.flatten().repeat(n).double(), xs.flatten().repeat(n).double()
