"""An independent, slow recomputation of a rollout's attention for the engine tests.

It shares only the model's weights with the engine: no cache, no ``attend``, no SDPA.
Every block of the rollout (committed blocks plus the query block) is recomputed from its
latents through every layer. Each block's queries attend over the *whole* token sequence
through an explicit boolean mask (visible items of its layout plus itself), with every
visible key rotated by the position the layout assigns it, and softmax written out.
"""

from __future__ import annotations

import torch

from adabench.backbone import CausalDiT, modulate, gate, timestep_embedding
from adabench.cache import ChunkLayout
from adabench.rope import apply_rope


class Block_:
    """One block of the rollout: its latents [1, n, C, h, w], time t (one for the block, or per frame
    [n] for a staggered sampler), layout, and how many state frames lead it."""

    def __init__(self, latents: torch.Tensor, t: float | torch.Tensor, layout: ChunkLayout, first_frame: int) -> None:
        self.latents, self.t, self.layout, self.first_frame = latents, t, layout, first_frame
        self.state_frames = len(layout.state_positions)
        self.n = latents.shape[1]


def _token_owner(blocks: list[Block_], tpf: int) -> tuple[dict, dict]:
    """Map logical items to token index ranges in the concatenated sequence.

    frame f -> its tokens in the committed block that produced it; state j -> the state
    tokens of the latest committed block that had state frames (before each query block).
    """
    frame_tokens, state_tokens_per_block = {}, []
    offset, latest_state = 0, {}
    for blk in blocks:
        state_tokens_per_block.append(dict(latest_state))          # what this block sees as the cached state
        for j in range(blk.state_frames):
            latest_state[j] = range(offset + j * tpf, offset + (j + 1) * tpf)
        for i in range(blk.n - blk.state_frames):
            start = offset + (blk.state_frames + i) * tpf
            frame_tokens[blk.first_frame + i] = range(start, start + tpf)
        offset += blk.n * tpf
    return frame_tokens, state_tokens_per_block


@torch.no_grad()
def reference_velocity(model: CausalDiT, blocks: list[Block_], prompt: torch.Tensor) -> torch.Tensor:
    """Velocity of the last block in ``blocks`` [1, n, C, h, w], all earlier blocks being clean history."""
    cfg = model.config
    tpf = cfg.tokens_per_frame
    frame_tokens, cached_state = _token_owner(blocks, tpf)
    sizes = [b.n * tpf for b in blocks]
    total = sum(sizes)
    starts = [sum(sizes[:i]) for i in range(len(blocks))]

    # Per block: explicit mask row over the whole sequence, and the position of every visible key.
    masks, key_pos, own_pos = [], [], []
    for bi, blk in enumerate(blocks):
        mask = torch.zeros(total, dtype=torch.bool)
        pos = torch.zeros(total, dtype=torch.float64)
        for vf in blk.layout.keys:
            tokens = frame_tokens[vf.item.index] if vf.item.kind == "frame" else cached_state[bi][vf.item.index]
            idx = torch.tensor(list(tokens))
            assert not mask[idx].any(), "an item is visible twice"
            mask[idx] = True
            pos[idx] = vf.position
        own = torch.arange(starts[bi], starts[bi] + sizes[bi])
        mask[own] = True
        qpos = torch.tensor(blk.layout.query_positions, dtype=torch.float64)
        pos[own] = qpos.repeat_interleave(tpf)
        masks.append(mask)
        key_pos.append(pos)
        own_pos.append(qpos)

    grid_y = torch.arange(cfg.grid).repeat_interleave(cfg.grid).double()
    grid_x = torch.arange(cfg.grid).repeat(cfg.grid).double()
    from adabench.rope import rope_angles

    def rot(x: torch.Tensor, t_pos: torch.Tensor) -> torch.Tensor:
        # x [H, N, Dh], t_pos [N] time position per token (spatial position from the token's place in its frame)
        n = t_pos.shape[0]
        ang = rope_angles(t_pos, grid_y.repeat(n // tpf), grid_x.repeat(n // tpf), cfg.rope_time_dims, cfg.head_dim)
        return apply_rope(x, ang.cos().float(), ang.sin().float())

    hidden, conds = [], []
    for blk in blocks:
        x = model.patch_embed(model.patchify(blk.latents))[0]                        # [N_b, D]
        if blk.state_frames:
            x[: blk.state_frames * tpf] += model.state_embed
        t = torch.as_tensor(blk.t, dtype=torch.float32).reshape(1, -1)              # [1, 1 | n]
        temb = model.time_mlp(timestep_embedding(t, cfg.width))
        conds.append(temb + model.prompt_embed(prompt).sum(1, keepdim=True))        # [1, 1 | n, D]
        hidden.append(x)

    heads, dh = cfg.heads, cfg.head_dim
    for blk_mod in model.blocks:
        raw_k, vals, queries, mods = [], [], [], []
        for x, cond in zip(hidden, conds):
            mod = blk_mod.modulation(torch.nn.functional.silu(cond)).chunk(6, dim=-1)
            h = modulate(blk_mod.norm1(x)[None], mod[0], mod[1])[0]
            q, k, v = blk_mod.attn.qkv(h).view(-1, 3, heads, dh).permute(1, 2, 0, 3)   # [H, N_b, Dh] each
            raw_k.append(k); vals.append(v); queries.append(q); mods.append(mod)
        all_k, all_v = torch.cat(raw_k, 1), torch.cat(vals, 1)                       # [H, total, Dh]
        new_hidden = []
        for bi, x in enumerate(hidden):
            q = rot(queries[bi], own_pos[bi].repeat_interleave(tpf))
            k = rot(all_k, key_pos[bi])                                              # every key at its position for this block
            scores = (q @ k.transpose(1, 2)) * dh ** -0.5                           # [H, N_b, total]
            scores = scores.masked_fill(~masks[bi][None, None], float("-inf"))
            y = torch.softmax(scores, dim=-1) @ all_v                               # [H, N_b, Dh]
            y = blk_mod.attn.out(y.transpose(0, 1).reshape(-1, heads * dh))
            mod = mods[bi]
            x = x + gate(mod[2], y[None])[0]
            x = x + gate(mod[5], blk_mod.mlp(modulate(blk_mod.norm2(x)[None], mod[3], mod[4])))[0]
            new_hidden.append(x)
        hidden = new_hidden

    last, cond = hidden[-1], conds[-1]
    shift, scale = model.final_modulation(torch.nn.functional.silu(cond)).chunk(2, dim=-1)
    out = model.head(modulate(model.final_norm(last)[None], shift, scale))
    return model.unpatchify(out, blocks[-1].n)
