"""PanWorld: an unbounded procedural 2D world seen through a camera panning at a known velocity.

Why: the embedded benchmark needs video whose true motion is known exactly, that never
repeats however far the camera goes, and that a tiny DiT can learn at 32x32.

The world is a pure function of world coordinates (1 world unit = 1 px at size 32):

- background: a sum of a few low-frequency plane waves (seed-derived direction,
  wavelength, phase) mapped through the scene's 3-colour palette;
- shapes (the prompt's kind and colour): on a grid of ``CELL``-unit cells each cell holds
  one shape with probability ``SHAPE_PROB``, at a hashed position anywhere in the cell,
  hashed size and brightness. A shape reaches less than half a cell from its centre, so
  a pixel only needs the 2x2 cells nearest to it. Edges are anti-aliased over one pixel
  (coverage = clamp(0.5 - signed_distance / pixel, 0, 1)) so sub-pixel motion renders
  smoothly and optical flow can measure it.

Frame ``t`` views the window centred on ``camera0 + camera_velocity * t``, where
``camera0`` is drawn from the seed; frame t is a pure function of (spec, seed, t, size), so
rendering a range equals slicing a longer render. Coordinates are computed in float64 on
small separable tensors ([.., W] and [.., H]); only per-pixel work is float32 / int64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from adabench.errors import UserError
from adabench.world.prompts import REFERENCE_SIZE, PromptSpec

CELL = 16.0                    # shape grid cell, world units
SHAPE_PROB = 0.65              # chance a cell holds a shape
RADIUS = (3.0, 5.0)            # shape size range, world units (circle radius)
SQUARE_HALF = 0.85             # square half-side / radius
TRIANGLE_CIRCUM = 1.3          # triangle circumradius / radius (max reach 6.5 < CELL / 2 - 1)
BRIGHTNESS = (0.8, 1.0)        # per-shape brightness jitter
NUM_WAVES = 4
WAVELENGTH = (18.0, 56.0)      # background wavelengths, world units
START_EXTENT = 8192.0          # starting camera positions drawn in [0, extent)^2
MIN_SIZE, MAX_SIZE = 16, 256
FRAME_BLOCK = 4096             # frames x clips rendered per block (bounds memory)
WORLD_SALT = 0xADA5EED         # changes the whole world; bump deliberately

# scene palettes: 3 stops dark -> light, RGB
SCENE_PALETTES: dict[str, tuple[tuple[float, float, float], ...]] = {
    "city": ((0.16, 0.17, 0.21), (0.36, 0.37, 0.41), (0.56, 0.54, 0.50)),
    "desert": ((0.40, 0.26, 0.12), (0.62, 0.45, 0.24), (0.78, 0.63, 0.40)),
    "forest": ((0.04, 0.16, 0.06), (0.13, 0.30, 0.10), (0.32, 0.40, 0.16)),
    "ocean": ((0.02, 0.09, 0.24), (0.05, 0.24, 0.40), (0.16, 0.44, 0.55)),
}
SHAPE_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.10),
    "green": (0.30, 0.95, 0.30),
    "blue": (0.20, 0.42, 1.00),
    "yellow": (1.00, 0.90, 0.15),
    "white": (1.00, 1.00, 1.00),
}
_MASK = 0xFFFFFFFF
_HASH_MUL = 0x45D9F3B


def _hash(x: torch.Tensor) -> torch.Tensor:
    """32-bit integer avalanche hash on int64 tensors holding values in [0, 2^32)."""
    x = (((x >> 16) ^ x) * _HASH_MUL) & _MASK
    x = (((x >> 16) ^ x) * _HASH_MUL) & _MASK
    return (x >> 16) ^ x


def _seed_params(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-seed world: camera start (2,), waves [K, 4] (kx, ky, phase, amp), shape salt."""
    rng = np.random.default_rng([WORLD_SALT, int(seed) % 2**64])
    cam0 = np.floor(rng.uniform(0.0, START_EXTENT, size=2) * 64.0) / 64.0   # exact binary fractions
    theta = rng.uniform(0.0, math.pi, NUM_WAVES)
    k = 2 * math.pi / rng.uniform(*WAVELENGTH, NUM_WAVES)
    phase = rng.uniform(0.0, 2 * math.pi, NUM_WAVES)
    amp = rng.uniform(0.5, 1.0, NUM_WAVES)
    waves = np.stack([k * np.cos(theta), k * np.sin(theta), phase, amp], axis=1)
    return cam0, waves, int(rng.integers(0, 2**32))


def _check_size(size: int) -> None:
    if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"PanWorld frame size {size!r} is invalid; accepted: an integer from {MIN_SIZE} to {MAX_SIZE}")


def _axis_coords(cam: torch.Tensor, size: int) -> torch.Tensor:
    """Camera centre coordinate [N] (float64) -> world coordinate of each pixel centre [N, size]."""
    pixel = REFERENCE_SIZE / size
    offsets = (torch.arange(size, dtype=torch.float64) + 0.5 - size / 2) * pixel
    return cam[:, None] + offsets[None, :]


def _background(x: torch.Tensor, y: torch.Tensor, waves: torch.Tensor, palette: torch.Tensor,
                device: torch.device) -> torch.Tensor:
    """x [N, W], y [N, H] float64; waves [N, K, 4]; palette [N, 3, 3] -> RGB [N, 3, H, W] float32 on device.

    sin(kx x + ky y + p) = sin(kx x) cos(ky y + p) + cos(kx x) sin(ky y + p): separable, so
    the per-pixel work is two small matmuls.
    """
    ax = x[:, :, None] * waves[:, None, :, 0]                       # [N, W, K]
    ay = y[:, :, None] * waves[:, None, :, 1] + waves[:, None, :, 2]  # [N, H, K]
    amp = waves[:, None, :, 3]                                      # [N, 1, K]
    sx, cx = torch.sin(ax).float().to(device), torch.cos(ax).float().to(device)
    sy, cy = (torch.sin(ay) * amp).float().to(device), (torch.cos(ay) * amp).float().to(device)
    field = cy @ sx.transpose(1, 2) + sy @ cx.transpose(1, 2)        # [N, H, W]
    norm = (waves[:, :, 3].pow(2).sum(1).sqrt() * 1.2).float().to(device)      # ~ 1.7 std of the sum
    t = (0.5 + 0.5 * field / norm[:, None, None]).clamp(0.0, 1.0)  # [N, H, W] in [0, 1]
    lo = (2 * t).clamp(max=1.0)[:, None]                            # [N, 1, H, W]
    hi = (2 * t - 1).clamp(min=0.0)[:, None]
    p0, p1, p2 = (palette[:, i, :, None, None].float().to(device) for i in range(3))  # [N, 3, 1, 1]
    return p0 + (p1 - p0) * lo + (p2 - p1) * hi


def _sdf(kind: str, px: torch.Tensor, py: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance (world units, < 0 inside) of a shape of size r centred at 0 (y down)."""
    if kind == "circles":
        return torch.sqrt(px * px + py * py) - r
    if kind == "squares":
        h = SQUARE_HALF * r
        qx, qy = px.abs() - h, py.abs() - h
        outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
        return outside + torch.maximum(qx, qy).clamp(max=0)
    if kind == "triangles":   # equilateral, apex up (Inigo Quilez's exact SDF, y flipped)
        k = math.sqrt(3.0)
        h = TRIANGLE_CIRCUM * r * k / 2                             # half side
        qx = px.abs() - h
        qy = -py + h / k
        fold = qx + k * qy > 0
        qx, qy = torch.where(fold, (qx - k * qy) / 2, qx), torch.where(fold, (-k * qx - qy) / 2, qy)
        qx = qx - torch.minimum(torch.maximum(qx, -2 * h), torch.zeros_like(qx))
        return -torch.sqrt(qx * qx + qy * qy) * torch.sign(qy)
    raise ValueError(f"unknown shape kind {kind!r}")


def _shapes(img: torch.Tensor, kind: str, x: torch.Tensor, y: torch.Tensor, salt: torch.Tensor,
            color: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """Composite the 2x2 candidate cells' shapes over img [N, 3, H, W]; x [N, W], y [N, H] float64."""
    pixel = REFERENCE_SIZE / size
    mx = torch.floor(x / CELL - 0.5).long()                         # [N, W] first candidate cell column
    my = torch.floor(y / CELL - 0.5).long()                         # [N, H]
    salt = salt[:, None].to(device)                                 # [N, 1]
    color = color[:, :, None, None].to(device)                      # [N, 3, 1, 1]
    r_lo, r_span = RADIUS[0], RADIUS[1] - RADIUS[0]
    b_lo, b_span = BRIGHTNESS[0], BRIGHTNESS[1] - BRIGHTNESS[0]
    for dy in (0, 1):
        cy = my + dy
        ly = (y - cy * CELL).float().to(device)[:, :, None]          # [N, H, 1] local y in the cell
        hy = _hash((cy.to(device) & _MASK) ^ salt)[:, :, None]      # [N, H, 1]
        for dx in (0, 1):
            cx = mx + dx
            lx = (x - cx * CELL).float().to(device)[:, None, :]      # [N, 1, W]
            hx = (((cx.to(device) & _MASK) * 0x27D4EB2D) & _MASK)[:, None, :]
            h = _hash(hy ^ hx)                                      # [N, H, W] one hash per cell
            h2 = _hash(h ^ 0x165667B1)
            present = ((h & 0xFF) < int(SHAPE_PROB * 256)).float()
            ox = (((h >> 8) & 0xFF).float() + 0.5) * (CELL / 256)
            oy = (((h >> 16) & 0xFF).float() + 0.5) * (CELL / 256)
            r = r_lo + r_span / 255 * ((h >> 24) & 0xFF).float()
            bright = b_lo + b_span / 255 * (h2 & 0xFF).float()
            sd = _sdf(kind, lx - ox, ly - oy, r)                    # [N, H, W]
            alpha = ((0.5 - sd / pixel).clamp(0.0, 1.0) * present)[:, None]   # [N, 1, H, W]
            img = img + alpha * (color * bright[:, None] - img)
    return img


def _render_group(kind: str, cams: torch.Tensor, waves: torch.Tensor, salts: torch.Tensor,
                  palettes: torch.Tensor, colors: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """Frames of one shape kind: cams [N, 2] float64 camera centres -> [N, 3, H, W] float32."""
    x = _axis_coords(cams[:, 0], size)                              # [N, W]
    y = _axis_coords(cams[:, 1], size)                              # [N, H]
    img = _background(x, y, waves, palettes, device)                # [N, 3, H, W]
    return _shapes(img, kind, x, y, salts, colors, size, device).clamp(0.0, 1.0)


def render_batch(specs: list[PromptSpec], seeds: list[int], num_frames: int, starts: list[int] | None = None,
                 size: int = 32, device: torch.device | str = "cpu") -> torch.Tensor:
    """Render clips: frames starts[b] .. starts[b]+num_frames-1 of each video -> [B, T, 3, H, W] in [0, 1].

    Vectorised over clips, frames and pixels; loops only over shape kinds (and blocks of
    frames to bound memory). Clip b is the video of (specs[b], seeds[b]).
    """
    _check_size(size)
    if len(specs) != len(seeds) or (starts is not None and len(starts) != len(specs)):
        raise ValueError("specs, seeds and starts must have the same length")
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    device = torch.device(device)
    b_n, t_n = len(specs), num_frames
    out = torch.empty(b_n, t_n, 3, size, size, device=device)
    if b_n == 0 or t_n == 0:
        return out
    starts = [0] * b_n if starts is None else [int(s) for s in starts]
    params = [_seed_params(s) for s in seeds]
    cam0 = torch.tensor(np.stack([p[0] for p in params]), dtype=torch.float64)       # [B, 2]
    camv = torch.tensor([s.camera_velocity for s in specs], dtype=torch.float64)     # [B, 2]
    t = torch.tensor(starts, dtype=torch.float64)[:, None] + torch.arange(t_n, dtype=torch.float64)  # [B, T]
    cams = (cam0[:, None, :] + camv[:, None, :] * t[:, :, None]).reshape(-1, 2)     # [B*T, 2]
    waves = torch.tensor(np.stack([p[1] for p in params]))                          # [B, K, 4]
    salts = torch.tensor([p[2] for p in params], dtype=torch.int64)                 # [B]
    palettes = torch.tensor([SCENE_PALETTES[s.scene] for s in specs], dtype=torch.float64)   # [B, 3, 3]
    colors = torch.tensor([SHAPE_COLORS[s.color] for s in specs], dtype=torch.float32)      # [B, 3]
    flat = out.view(b_n * t_n, 3, size, size)
    clip = torch.arange(b_n).repeat_interleave(t_n)                                # [B*T] clip of each frame
    for kind in sorted({s.shape for s in specs}):
        rows = torch.nonzero(torch.tensor([s.shape == kind for s in specs])[clip]).flatten()
        for block in rows.split(max(1, FRAME_BLOCK * (32 * 32) // (size * size))):
            c = clip[block]
            flat[block.to(device)] = _render_group(kind, cams[block], waves[c], salts[c], palettes[c],
                                                   colors[c], size, device)
    return out


def render_clip(spec: PromptSpec, seed: int, num_frames: int, start: int = 0, size: int = 32,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Frames start .. start+num_frames-1 of the video of (spec, seed) -> [T, 3, H, W] in [0, 1]."""
    return render_batch([spec], [seed], num_frames, [start], size=size, device=device)[0]
