"""Chunk-by-chunk rollout state: the cache, what has been committed, and the attention
context each forward pass of a chunk sees. Shared by generation and training."""

from __future__ import annotations

import torch

from adabench.attention import ProbeFn, KeyLayout
from adabench.backbone import CausalDiT
from adabench.cache import CachedItem, CachePolicy, ChunkLayout, FrameCache
from adabench.rope import apply_rope


class ChunkContext:
    """Attention context of one chunk: cached K/V gathered once, reused by every denoising step."""

    mask = None

    def __init__(self, k_ctx: list[torch.Tensor], v_ctx: list[torch.Tensor], layout: KeyLayout,
                 rope: tuple[torch.Tensor, torch.Tensor], probe: ProbeFn | None, store_raw: bool) -> None:
        self.k_ctx, self.v_ctx = k_ctx, v_ctx      # per layer [B, H, Nc, Dh] (post-RoPE)
        self.layout = layout
        self.rope = rope                           # (cos, sin) of the query block
        self.probe = probe
        self.store_raw = store_raw
        self.recorded: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def extend(self, layer: int, k_rot: torch.Tensor, v: torch.Tensor, k_raw: torch.Tensor):
        if self.recorded is not None:
            self.recorded.append((k_raw if self.store_raw else k_rot, v))
        kc, vc = self.k_ctx[layer], self.v_ctx[layer]
        if kc.shape[2] == 0:
            return k_rot, v
        return torch.cat([kc, k_rot], dim=2), torch.cat([vc, v], dim=2)


class Rollout:
    """One (batched) rollout under a cache policy.

    ``raw_keys``: cache K before RoPE and rotate it when read, by the position the policy gives
    each cached frame, whatever the positional scheme (the Wan backbones do; in the absolute
    scheme this equals rotating at birth). Otherwise only the relative scheme caches raw K.
    """

    def __init__(self, model: CausalDiT, policy: CachePolicy, batch: int = 1,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 raw_keys: bool = False) -> None:
        cfg = model.config
        self.model, self.policy = model, policy
        self.raw_keys = raw_keys or policy.pos == "relative"
        self.cache = FrameCache(policy, cfg.depth, cfg.heads, cfg.head_dim, cfg.tokens_per_frame, batch, device, dtype)
        self.committed = 0          # frames 0 .. committed-1 have been committed
        self.has_state = False

    def layout(self, num_frames: int, with_state: bool = True) -> ChunkLayout:
        return self.policy.layout(self.committed, num_frames, self.committed, self.has_state, with_state)

    def context(self, layout: ChunkLayout, probe: ProbeFn | None = None) -> ChunkContext:
        """Gather the visible cache for ``layout`` (raw keys rotated by their layout positions)."""
        cfg = self.model.config
        ref = self.cache.k[0]
        rope_q = self.model.rope(torch.tensor(layout.query_positions), ref.device, ref.dtype)
        raw = self.raw_keys
        rope_k = self.model.rope(torch.tensor([k.position for k in layout.keys]), ref.device, ref.dtype) if raw else None
        k_ctx, v_ctx = [], []
        index = self.cache.slot_index(layout.keys)
        for layer in range(cfg.depth):
            k, v = self.cache.gather(layer, index)              # [B, H, Nc, Dh]
            if raw and k.shape[2]:
                k = apply_rope(k, *rope_k)
            k_ctx.append(k)
            v_ctx.append(v)
        return ChunkContext(k_ctx, v_ctx, layout.key_layout(cfg.tokens_per_frame), rope_q, probe, store_raw=raw)

    def commit(self, layout: ChunkLayout, clean: torch.Tensor, prompt: torch.Tensor,
               context: ChunkContext | None = None, t: float = 0.0) -> None:
        """Run the t=0 forward on the clean block [B, n, C, h, w] and store its K/V.

        The block is state frames (if any) followed by the chunk's frames, as in ``layout``.
        ``t`` is the time the block is committed at, in the model's own units (0: clean; the
        Wan family's context noise re-noises the block and commits it at that timestep).
        """
        ctx = context if context is not None else self.context(layout)
        ctx.recorded = []
        n_state = len(layout.state_positions)
        t = torch.full((clean.shape[0], 1), float(t), device=clean.device)
        self.model(clean, t, prompt, None, context=ctx, state_frames=n_state, rope=ctx.rope)
        items = [CachedItem("state", j) for j in range(n_state)]
        items += [CachedItem("frame", self.committed + i) for i in range(len(layout.frame_positions))]
        self.cache.write(items, ctx.recorded)
        ctx.recorded = None
        self.committed += len(layout.frame_positions)
        self.has_state = self.has_state or n_state > 0
