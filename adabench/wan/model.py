"""A compact causal Wan2.1 DiT with Wan's original parameter names (so the field's checkpoints load as they are).

Tokens are 1x2x2 patches of latent frames (frame-major, then row-major). Each block is
per-frame adaLN-modulated self-attention (q/k RMS-normed across heads, 3D RoPE), cross-
attention to the umT5 text embedding, and a feed-forward layer. Timesteps are per frame
([B, n], Wan's 0..1000 scale), so clean context, the chunk being denoised and an AdaState
state frame each carry their own time. Self-attention reads and writes the KV cache only
through an :class:`~adabench.backbone.AttentionContext` and computes attention only
through :func:`adabench.attention.attend`, like the embedded DiT: the cache policies, the
attention probe and the metrics work unchanged. Keys go to the cache before RoPE
(``Rollout(raw_keys=True)``) and are rotated when read, by the position the policy gives.

Numerics as upstream where they matter: layer and RMS norms in float32, RoPE angles and the
timestep sinusoid in float64 (rotations applied in float32), the time embedding and the
modulation tables kept in float32 (:meth:`CausalWanModel.keep_float32`) and added in Wan's
order per frame, residual additions in float32.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from adabench.attention import attend
from adabench.backbone import AttentionContext, NoCache, gate, modulate
from adabench.rope import apply_rope, frame_token_positions, rope_angles, rope_tables
from adabench.wan.config import Geometry, WanConfig


def sinusoid(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan's timestep embedding in float64: [...] -> [..., dim] as [cos | sin]."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    args = t.double()[..., None] * freqs
    return torch.cat([args.cos(), args.sin()], dim=-1)


class RMSNorm(nn.Module):
    """RMS norm over the last dim, computed in float32 (Wan's WanRMSNorm; parameter ``weight``)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        return (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class LayerNorm(nn.LayerNorm):
    """Layer norm computed in float32; returns float32 (callers cast back)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], layer: int,
                context: AttentionContext) -> torch.Tensor:
        b, n, d = x.shape
        split = (b, n, self.heads, d // self.heads)
        q = self.norm_q(self.q(x)).view(split).transpose(1, 2)          # [B, H, N, Dh]
        k = self.norm_k(self.k(x)).view(split).transpose(1, 2)          # [B, H, N, Dh], before RoPE
        v = self.v(x).view(split).transpose(1, 2)
        q_rot, k_rot = apply_rope(q, *rope), apply_rope(k, *rope)
        k_all, v_all = context.extend(layer, k_rot, v, k)               # cached context + this block
        y = attend(q_rot, k_all, v_all, layer=layer, layout=context.layout, mask=context.mask, probe=context.probe)
        return self.o(y.transpose(1, 2).reshape(b, n, d))


class CrossAttention(nn.Module):
    """Attention of the video tokens to the (embedded) text tokens; no positions, no mask."""

    def __init__(self, dim: int, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        q = self.norm_q(self.q(x)).view(b, n, h, -1).transpose(1, 2)            # [B, H, N, Dh]
        k = self.norm_k(self.k(text)).view(b, text.shape[1], h, -1).transpose(1, 2)   # [B, H, L, Dh]
        v = self.v(text).view(b, text.shape[1], h, -1).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.o(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Wan's attention block. ``norm3`` (affine) precedes cross-attention, ``norm2`` the FFN."""

    def __init__(self, cfg: WanConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.norm1 = LayerNorm(d, eps=cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(d, cfg.num_heads, cfg.eps)
        self.norm3 = LayerNorm(d, eps=cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else None
        self.cross_attn = CrossAttention(d, cfg.num_heads, cfg.eps)
        self.norm2 = LayerNorm(d, eps=cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, d))
        self.modulation = nn.Parameter(torch.randn(1, 6, d) / d ** 0.5)

    def forward(self, x: torch.Tensor, e0: torch.Tensor, text: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                layer: int, context: AttentionContext) -> torch.Tensor:
        """x [B, N, D]; e0 [B, m, 6, D] float32 time projection per frame (m frames, or 1 for all)."""
        mod = self.modulation.float()[:, None] + e0                                 # [B, m, 6, D]
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.unbind(2)               # each [B, m, D]
        y = self.self_attn(modulate(self.norm1(x), shift1, scale1).type_as(x), rope, layer, context)
        x = (x.float() + gate(gate1, y.float())).type_as(x)
        cross_in = x if self.norm3 is None else self.norm3(x).type_as(x)
        x = x + self.cross_attn(cross_in, text)
        y = self.ffn(modulate(self.norm2(x), shift2, scale2).type_as(x))
        return (x.float() + gate(gate2, y.float())).type_as(x)


class Head(nn.Module):
    def __init__(self, cfg: WanConfig) -> None:
        super().__init__()
        self.norm = LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * cfg.patch[0] * cfg.patch[1] * cfg.patch[2])
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim ** 0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x [B, N, D]; e [B, m, D] float32 time embedding per frame -> [B, N, patch volume * out_dim]."""
        shift, scale = (self.modulation.float()[:, None] + e[:, :, None]).unbind(2)   # each [B, m, D]
        return self.head(modulate(self.norm(x), shift, scale).type_as(x))


class CausalWanModel(nn.Module):
    """Wan2.1 text-to-video DiT, run block by block over a KV cache. Predicts the flow ``noise - x0``."""

    FLOAT32_PARTS = ("time_embedding", "time_projection")   # + every ``modulation`` and affine norm

    def __init__(self, config: WanConfig) -> None:
        super().__init__()
        self.config = c = config
        self.patch_embedding = nn.Conv3d(c.in_dim, c.dim, kernel_size=c.patch, stride=c.patch)
        self.text_embedding = nn.Sequential(nn.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(c.dim, c.dim))
        self.time_embedding = nn.Sequential(nn.Linear(c.freq_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, 6 * c.dim))
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.num_layers))
        self.head = Head(c)

    def keep_float32(self) -> "CausalWanModel":
        """After ``.to(bfloat16)``: time embedding, projections, modulation tables and affine norms back to float32."""
        for name in self.FLOAT32_PARTS:
            getattr(self, name).float()
        for module in self.modules():
            if isinstance(module, LayerNorm):
                module.float()
            for pname, p in module.named_parameters(recurse=False):
                if pname == "modulation":
                    p.data = p.data.float()
        return self

    def rope(self, frame_positions: torch.Tensor, grid: tuple[int, int], device: torch.device | str
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) float32 [n * rows * cols, head_dim / 2] for frames at time positions [n] (any real numbers:
        angles are computed from positions, there is no table to run off the end of)."""
        t, y, x = frame_token_positions(frame_positions, grid)
        return rope_tables(rope_angles(t, y, x, self.config.rope_time_dims, self.config.head_dim), torch.float32, device)

    def forward(self, latents: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                positions: torch.Tensor | None = None, context: AttentionContext | None = None,
                state_frames: int = 0, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Flow prediction for a block of latent frames.

        latents [B, n, C, h, w]; t [B, n] Wan timesteps per frame (0 = clean, 1000 = noise), or
        [B, 1] for all; text [B, L, text_dim] umT5 embeddings (zero past the prompt); positions
        [n] time positions (default 0..n-1) unless ``rope`` is given. ``state_frames`` is accepted
        for the engine's interface: Wan has no state embedding, a state frame is a frame with its
        own time and position. Returns [B, n, C_out, h, w] in the model's dtype.
        """
        b, n = latents.shape[:2]
        dtype = self.patch_embedding.weight.dtype
        x = self.patch_embedding(latents.transpose(1, 2).to(dtype))                 # [B, D, n, rows, cols]
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2).contiguous()                               # [B, N, D]
        e = self.time_embedding(sinusoid(self.config.freq_dim, t).float())          # [B, m, D] float32
        e0 = self.time_projection(e).unflatten(-1, (6, self.config.dim))            # [B, m, 6, D] float32
        text = self.text_embedding(text.to(dtype))                                  # [B, L, D]
        if rope is None:
            pos = positions if positions is not None else torch.arange(n)
            rope = self.rope(pos, grid, x.device)
        context = context if context is not None else NoCache()
        for layer, blk in enumerate(self.blocks):
            x = blk(x, e0, text, rope, layer, context)
        return self.unpatchify(self.head(x, e), n, grid)

    def unpatchify(self, tokens: torch.Tensor, n: int, grid: tuple[int, int]) -> torch.Tensor:
        """[B, N, pt * ph * pw * C] (channel last, as Wan) -> [B, n, C, rows * ph, cols * pw]."""
        b = tokens.shape[0]
        _, ph, pw = self.config.patch
        rows, cols = grid
        x = tokens.view(b, n, rows, cols, ph, pw, self.config.out_dim).permute(0, 1, 6, 2, 4, 3, 5)
        return x.reshape(b, n, self.config.out_dim, rows * ph, cols * pw)


class _RolloutShape(NamedTuple):
    depth: int
    heads: int
    head_dim: int
    tokens_per_frame: int


class AtResolution:
    """The model at one frame geometry, as adabench's Rollout sees a backbone (``config``, ``rope``, call)."""

    def __init__(self, model: CausalWanModel, geometry: Geometry) -> None:
        self.model, self.geometry = model, geometry
        c = model.config
        self.config = _RolloutShape(c.depth, c.heads, c.head_dim, geometry.tokens_per_frame)

    def rope(self, frame_positions: torch.Tensor, device: torch.device | str, dtype: torch.dtype
             ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.rope(frame_positions, self.geometry.grid, device)     # float32 whatever the cache dtype

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return self.model(*args, **kwargs)
