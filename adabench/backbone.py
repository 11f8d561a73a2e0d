"""A tiny causal video DiT on latent frames (nanoGPT-sized and readable).

Tokens are patches of latent frames; each block is adaLN-modulated self-attention plus an
MLP, conditioned on the flow-matching time (per frame) and the prompt's token ids. Self-
attention reads and writes the KV cache only through an :class:`AttentionContext`, and
computes attention only through :func:`adabench.attention.attend`.
The model predicts the flow-matching velocity ``noise - x0``.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from adabench.attention import ProbeFn, KeyLayout, attend
from adabench.config import ModelConfig
from adabench.rope import apply_rope, frame_token_positions, rope_angles, rope_tables


class AttentionContext(Protocol):
    """How one forward pass sees the cache (or, in training, an explicit mask)."""

    layout: KeyLayout | None
    mask: torch.Tensor | None
    probe: ProbeFn | None

    def extend(self, layer: int, k_rot: torch.Tensor, v: torch.Tensor, k_raw: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Given the query block's keys/values [B, H, Nq, Dh], return all keys/values to attend to."""
        ...


class NoCache:
    """Attention over the query block alone, optionally masked (training, full recomputation)."""

    layout = None
    probe = None

    def __init__(self, mask: torch.Tensor | None = None) -> None:
        self.mask = mask

    def extend(self, layer, k_rot, v, k_raw):
        return k_rot, v


def null_prompt(prompt: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The learned "no prompt" of classifier-free guidance: every token the vocabulary's last id
    (PanWorld's grammar never uses it), same shape [B, prompt_tokens] as ``prompt``."""
    return torch.full_like(prompt, vocab_size - 1)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled to 0..1000), [...] -> [..., dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[..., None] * 1000.0 * freqs
    return torch.cat([args.cos(), args.sin()], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layer: int,
                context: AttentionContext) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # [B, H, N, Dh] each
        q_rot, k_rot = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k_all, v_all = context.extend(layer, k_rot, v, k)
        y = attend(q_rot, k_all, v_all, layer=layer, layout=context.layout, mask=context.mask, probe=context.probe)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * width, width))
        self.modulation = nn.Linear(width, 6 * width)   # adaLN-Zero: shift/scale/gate for attn and mlp

    def forward(self, x, cond, cos, sin, layer, context):
        s1, c1, g1, s2, c2, g2 = self.modulation(F.silu(cond)).chunk(6, dim=-1)   # each [B, m, D]
        x = x + gate(g1, self.attn(modulate(self.norm1(x), s1, c1), cos, sin, layer, context))
        return x + gate(g2, self.mlp(modulate(self.norm2(x), s2, c2)))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN on x [B, N, D] with per-group shift/scale [B, m, D] (m frames, or 1 for all tokens)."""
    b, n, d = x.shape
    m = shift.shape[1]
    y = x.view(b, m, n // m, d) * (1 + scale[:, :, None]) + shift[:, :, None]
    return y.view(b, n, d)


def gate(g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-group gate [B, m, D] times y [B, N, D]."""
    b, n, d = y.shape
    m = g.shape[1]
    return (y.view(b, m, n // m, d) * g[:, :, None]).view(b, n, d)


class CausalDiT(nn.Module):
    """The backbone. Inputs are blocks of latent frames; outputs their predicted velocity."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.width
        self.patch_embed = nn.Linear(config.token_dim, d)
        self.prompt_embed = nn.Embedding(config.vocab_size, d)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.state_embed = nn.Parameter(torch.zeros(d))   # marks tokens of AdaState's hidden state
        self.blocks = nn.ModuleList(Block(d, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(d, 2 * d)
        self.head = nn.Linear(d, config.token_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.prompt_embed.weight, std=0.02)
        nn.init.normal_(self.state_embed, std=0.02)
        for blk in self.blocks:   # adaLN-Zero: every block starts as the identity
            nn.init.zeros_(blk.modulation.weight)
            nn.init.zeros_(blk.modulation.bias)
        nn.init.zeros_(self.final_modulation.weight)
        nn.init.zeros_(self.final_modulation.bias)
        nn.init.zeros_(self.head.weight)

    # --- token plumbing -------------------------------------------------------------
    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, n, C, h, w] -> [B, n * g * g, C * p * p] (frame-major, then row-major)."""
        b, n, c, h, w = latents.shape
        p, g = self.config.patch, self.config.grid
        x = latents.reshape(b, n, c, g, p, g, p).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(b, n * g * g, c * p * p)

    def unpatchify(self, tokens: torch.Tensor, n: int) -> torch.Tensor:
        """Inverse of :meth:`patchify`: [B, n * g * g, C * p * p] -> [B, n, C, h, w]."""
        b = tokens.shape[0]
        c, p, g = self.config.latent_channels, self.config.patch, self.config.grid
        x = tokens.reshape(b, n, g, g, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, n, c, g * p, g * p)

    def rope(self, frame_positions: torch.Tensor, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) [n * g * g, head_dim / 2] for frames at the given time positions [n]."""
        t, y, x = frame_token_positions(frame_positions, self.config.grid)
        return rope_tables(rope_angles(t, y, x, self.config.rope_time_dims, self.config.head_dim), dtype, device)

    # --- forward --------------------------------------------------------------------
    def forward(self, latents: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor,
                positions: torch.Tensor, context: AttentionContext | None = None,
                state_frames: int = 0, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Velocity for a block of frames.

        latents [B, n, C, h, w]; t [B, n] flow time per frame (0 = clean, 1 = noise), or
        [B, 1] when all frames share it (cheaper: one modulation for the whole block);
        prompt [B, prompt_tokens] token ids; positions [n] time positions of the frames;
        the first ``state_frames`` frames are AdaState's hidden state. Returns [B, n, C, h, w] in the
        model's dtype: inputs in another dtype (a float32 sampler state, float32 times) are cast once here.
        """
        b, n = latents.shape[:2]
        tpf = self.config.tokens_per_frame
        x = self.patch_embed(self.patchify(latents.to(self.patch_embed.weight.dtype)))    # [B, N, D], model's dtype
        if state_frames:
            is_state = torch.zeros(n * tpf, 1, device=x.device, dtype=x.dtype)
            is_state[: state_frames * tpf] = 1.0
            x = x + is_state * self.state_embed
        temb = self.time_mlp(timestep_embedding(t, self.config.width).to(x.dtype))        # [B, n|1, D], model's dtype
        cond = temb + self.prompt_embed(prompt).sum(1, keepdim=True)         # [B, n|1, D]
        cos, sin = rope if rope is not None else self.rope(positions, x.device, x.dtype)
        context = context if context is not None else NoCache()
        for layer, blk in enumerate(self.blocks):
            x = blk(x, cond, cos, sin, layer, context)
        shift, scale = self.final_modulation(F.silu(cond)).chunk(2, dim=-1)
        out = self.head(modulate(self.final_norm(x), shift, scale))         # [B, N, C * p * p]
        return self.unpatchify(out, n)
