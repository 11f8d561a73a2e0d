"""What each recipe kind minimises.

- ``codec``: per-frame reconstruction of PanWorld frames by the conv autoencoder, optionally
  with an L1 term on the decoded frame's pixel differences (``edge_weight``: squared error
  alone blurs the edges of small shapes, whose sub-pixel motion optical flow then misses),
  and optionally the decoder only on a trained codec (``freeze_encoder``: the latents, and
  every DiT trained on them, stay exactly as they were).
- ``base``: teacher-forced flow matching, chunk by chunk through the real cache (the
  recipe's policy; block-causal over the whole clip by default), with noisy-context
  augmentation: committed context frames are mixed with noise of a random small level so
  the model does not trust its context blindly (exposure bias).
- ``policy``: the model rolls the clip out chunk by chunk exactly as at inference (same
  policy, same few-step sampler, state frames denoised from noise with every chunk) with
  gradients through the sampler and the cache, so later chunks' losses reach earlier state
  and context (back-propagation through the recurrence). Loss per chunk: x0 regression of
  the sampler's output to the ground truth plus a flow-matching term at a random noise
  level whose state input is the state the rollout produced; per-frame weights grow with
  the frame index (horizon weighting, strength ``horizon_alpha``). Context is the ground
  truth or, for a ``self_rollout`` share of batches, the model's own output. With a
  ``teacher`` (distillation), the regression target is no longer the ground truth but the
  teacher's many-step sample from the same noise, on the same context (the teacher keeps its
  own cache of the committed frames): x0 regression to the ground truth teaches a few-step
  sampler the conditional mean (blur, and a flat first frame from the prompt alone), while a
  deterministic noise-to-sample map can be learned without averaging.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pathlib import Path

from adabench.backbone import CausalDiT, null_prompt
from adabench.checkpoints import load_model, save_model
from adabench.codec import build_codec
from adabench.config import ModelConfig
from adabench.errors import UserError
from adabench.registry import POLICIES
from adabench.rollout import Rollout
from adabench.sampler import FlowSampler, frame_lags, shift_time
from adabench.training.data import ClipBatch, clip_batch
from adabench.training.recipe import Recipe, model_config
from adabench.world.prompts import VOCAB_SIZE, parse_prompt


def horizon_weights(num_frames: int, alpha: float) -> torch.Tensor:
    """w_i = 1 + alpha * i / N for frames i = 0..N-1, normalised to mean 1 ([N])."""
    w = 1.0 + alpha * torch.arange(num_frames, dtype=torch.float32) / num_frames
    return w / w.mean()


def sample_times(batch: int, shift: float, lags: torch.Tensor | None = None) -> torch.Tensor:
    """Flow times, uniform then shifted toward noise like the sampler's schedule: [B, 1] for
    one time per block, or [B, n] for frames that start ``lags`` [n] steps-fractions after the
    first (a staggered sampler: lag = k * stagger / steps), on the same pyramid the sampler walks."""
    if lags is None or not bool(lags.any()):
        return shift_time(torch.rand(batch, 1), shift)
    progress = torch.rand(batch, 1) * (1.0 + lags.max())                         # the first frame's progress
    return shift_time(1.0 - (progress - lags[None, :]).clamp(0.0, 1.0), shift)   # [B, n]


CODEC_FIELDS = {"frame_size", "codec", "latent_channels", "latent_size"}


def initial_modules(recipe: Recipe, weights_dir: Path) -> tuple[CausalDiT, nn.Module]:
    """The recipe's starting point: its ``init`` checkpoint, or a fresh seeded model."""
    if recipe.init:
        path = weights_dir / f"{recipe.init}.safetensors"
        model, codec, _ = load_model(path, rebuild_hint=f"adabench train {recipe.init} --out {weights_dir}")
        config = dit_config(recipe, model.config.to_dict())
        if config != model.config:     # another DiT architecture on the init's codec: the DiT starts fresh
            clash = sorted(k for k in CODEC_FIELDS if getattr(config, k) != getattr(model.config, k))
            if clash or recipe.kind != "base":
                what = f"model keys {', '.join(clash)} belong to the codec" if clash else "a fine-tune keeps the DiT"
                raise UserError(f"recipe {recipe.name}: {what} of its init {recipe.init!r}; accepted: DiT keys, "
                                f"in base recipes only")
            torch.manual_seed(recipe.seed)
            model = CausalDiT(config)
        return model, codec
    config = dit_config(recipe, {"frame_size": recipe.frame_size})
    torch.manual_seed(recipe.seed)
    return CausalDiT(config), build_codec(config)


def dit_config(recipe: Recipe, base: dict) -> ModelConfig:
    """The DiT's config: ``base`` with the recipe's overrides, refused unless the model can be built and
    read the recipe's clips (PanWorld's prompt vocabulary, the recipe's frame size)."""
    config = model_config(recipe, ModelConfig, base, lambda c: [CausalDiT(c), build_codec(c)])
    if recipe.prompt_dropout > 0 and config.vocab_size <= VOCAB_SIZE:
        raise UserError(f"recipe {recipe.name}: prompt_dropout needs a model vocab_size above {VOCAB_SIZE} (the null "
                        f"prompt is the last id, which PanWorld's grammar must not use); accepted: vocab_size > "
                        f"{VOCAB_SIZE}")
    if config.vocab_size < VOCAB_SIZE:
        raise UserError(f"recipe {recipe.name}: model vocab_size {config.vocab_size} is too small; accepted: at least "
                        f"{VOCAB_SIZE} (PanWorld's prompt vocabulary)")
    if config.frame_size != recipe.frame_size:
        raise UserError(f"recipe {recipe.name}: the model's frame_size {config.frame_size} differs from the recipe's "
                        f"frame_size {recipe.frame_size} (the size clips are rendered at); accepted: equal sizes")
    return config


class _ModelObjective:
    """Objectives that train the DiT and/or its codec and ship them as one model checkpoint."""

    def __init__(self, recipe: Recipe, model: CausalDiT, codec: nn.Module) -> None:
        self.recipe, self.model, self.codec = recipe, model, codec

    @classmethod
    def build(cls, recipe: Recipe, init_dir: Path) -> "_ModelObjective":
        return cls(recipe, *initial_modules(recipe, init_dir))

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "codec": self.codec}

    def save_final(self, path: Path, metadata: dict[str, str]) -> None:
        save_model(path, self.model.eval(), self.codec.eval(), metadata)


class CodecObjective(_ModelObjective):
    CALIBRATION_INDEX = 10**9       # the calibration batch: far beyond any training step
    CALIBRATION_FRAMES = 2048

    def trainable(self) -> list[nn.Parameter]:
        return list((self.codec.decoder if self.recipe.freeze_encoder else self.codec).parameters())

    def save_final(self, path: Path, metadata: dict[str, str]) -> None:
        """Measure the latent normalisation on fresh PanWorld frames, then save (a frozen
        encoder keeps its init's normalisation: the latents must not move)."""
        r = self.recipe
        if r.freeze_encoder:
            super().save_final(path, metadata)
            return
        device = next(self.codec.parameters()).device
        frames = clip_batch(r.data_seed, self.CALIBRATION_INDEX, self.CALIBRATION_FRAMES // 2, 2, r.frame_size,
                            device).frames.flatten(0, 1)                              # [N, 3, H, W]
        self.codec.eval().calibrate(frames)
        super().save_final(path, metadata)

    def loss(self, step: int, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        r = self.recipe
        batch = clip_batch(r.data_seed, step, r.batch, 2, r.frame_size, device)
        frames = batch.frames                                                   # [B, 2, 3, H, W]
        flat = frames.flatten(0, 1)                                              # [2B, 3, H, W]
        with torch.set_grad_enabled(not r.freeze_encoder):
            raw = self.codec.raw_encode(flat)                                    # [2B, C, h, w]
        decoded = self.codec.raw_decode(raw)                                     # [2B, 3, H, W]
        mse = F.mse_loss(decoded, flat)
        terms = {"recon_mse": mse.item()}
        loss = mse
        if r.edge_weight > 0:
            edge = edge_error(decoded, flat)
            terms["edge_l1"] = edge.item()
            loss = loss + r.edge_weight * edge
        if r.latent_equivariance <= 0 and r.decoder_equivariance <= 0:
            return loss, terms
        velocity = torch.tensor([parse_prompt(p).velocity_at(r.frame_size) for p in batch.prompts], device=device)
        lat_eq, dec_eq = equivariance_errors(self.codec, raw.unflatten(0, (frames.shape[0], 2)), frames, velocity)
        terms.update(latent_equivariance=lat_eq.item(), decoder_equivariance=dec_eq.item())
        return loss + r.latent_equivariance * lat_eq + r.decoder_equivariance * dec_eq, terms


def edge_error(decoded: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Mean L1 error of horizontal plus that of vertical neighbour differences, decoded [N, 3, H, W]
    against frames [N, 3, H, W]: zero only where the decoded edges are as sharp as the true ones."""
    dx = F.l1_loss(decoded.diff(dim=-1), frames.diff(dim=-1))
    dy = F.l1_loss(decoded.diff(dim=-2), frames.diff(dim=-2))
    return dx + dy


def translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Move the content of x [N, C, H, W] by shift [N, 2] = (dx, dy) pixels (x right, y down),
    bilinearly; samples from outside the frame repeat its border."""
    n, _, h, w = x.shape
    ys = torch.arange(h, dtype=x.dtype, device=x.device) + 0.5
    xs = torch.arange(w, dtype=x.dtype, device=x.device) + 0.5
    gx = (xs[None, None, :] - shift[:, 0, None, None]) * (2.0 / w) - 1.0         # [N, 1, W]
    gy = (ys[None, :, None] - shift[:, 1, None, None]) * (2.0 / h) - 1.0         # [N, H, 1]
    grid = torch.stack([gx.expand(n, h, w), gy.expand(n, h, w)], dim=-1)         # [N, H, W, 2]
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def equivariance_errors(codec: nn.Module, raw: torch.Tensor, frames: torch.Tensor, velocity: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """How far the codec is from turning a camera pan into a shift of its latent.

    PanWorld is a camera panning over a world, so frame 1 is frame 0 moved by the prompt's
    velocity. A latent that moves the same way lets the DiT transport content by (learned)
    interpolation; a latent that aliases turns every sub-pixel pan into an arbitrary non-linear
    change (the version-2 codec: moving frame 0's latent explains 3 % (slow pans) / 40 %
    (fast) of the change to frame 1's, against 74-95 % in pixel space). raw [B, 2, C, h, w] raw latents of
    frames [B, 2, 3, H, W]; velocity [B, 2] px/frame. Returns (latent error relative to the
    latent variance, pixel MSE of decoding the moved latent against frame 1), both on the
    interior, away from the border where new content enters.
    """
    scale = raw.shape[-1] / frames.shape[-1]                                    # latent px per pixel
    moved = translate(raw[:, 0], velocity * scale)                               # [B, C, h, w]
    m = max(1, math.ceil(float(velocity.abs().max()) * scale))                  # latent px the border reaches
    pm = math.ceil(m / scale)
    lat = ((moved - raw[:, 1])[..., m:-m, m:-m] ** 2).mean() / raw.detach().var().clamp(min=1e-8)
    dec = F.mse_loss(codec.raw_decode(moved)[..., pm:-pm, pm:-pm], frames[:, 1, :, pm:-pm, pm:-pm])
    return lat, dec


class _RolloutObjective(_ModelObjective):
    """Shared plumbing of the base and policy objectives."""

    def __init__(self, recipe: Recipe, model: CausalDiT, codec: nn.Module) -> None:
        super().__init__(recipe, model, codec)
        self.policy = POLICIES.build(recipe.policy)
        for p in codec.parameters():
            p.requires_grad_(False)

    def trainable(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def clip(self, step: int, device: torch.device) -> tuple[ClipBatch, torch.Tensor, bool]:
        """(batch, latents [B, T, C, h, w], i2v?) with T = 1 + chunks * chunk_frames."""
        r = self.recipe
        batch = clip_batch(r.data_seed, step, r.batch, 1 + r.clip_chunks * r.chunk_frames, r.frame_size, device)
        with torch.no_grad():
            b, t = batch.frames.shape[:2]
            latents = self.codec.encode(batch.frames.flatten(0, 1)).unflatten(0, (b, t))
        i2v = torch.rand(()) < r.i2v_fraction
        if r.prompt_dropout > 0:        # classifier-free guidance: some clips, commits included, get the null prompt
            drop = torch.rand(b, device=device) < r.prompt_dropout
            batch.tokens = torch.where(drop[:, None], null_prompt(batch.tokens, self.model.config.vocab_size),
                                       batch.tokens)
        return batch, latents, bool(i2v)

    def lags(self, state_frames: int) -> torch.Tensor:
        """Start lag of each frame of a block as a fraction of the sampler's steps, [Fs + F]."""
        r = self.recipe
        return frame_lags(state_frames, r.chunk_frames, r.sampler_stagger).float() / r.sampler_steps

    def noisy_context(self, clean: torch.Tensor) -> torch.Tensor:
        level = self.recipe.context_noise
        if level <= 0:
            return clean
        sigma = torch.rand(clean.shape[0], *([1] * (clean.dim() - 1)), device=clean.device) * level
        return (1 - sigma) * clean + sigma * torch.randn_like(clean)


class BaseObjective(_RolloutObjective):
    def loss(self, step: int, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        r = self.recipe
        batch, lat, i2v = self.clip(step, device)
        b = lat.shape[0]
        rollout = Rollout(self.model, self.policy, b, device)
        first = 0
        if i2v:
            layout = rollout.layout(1, with_state=False)
            rollout.commit(layout, self.noisy_context(lat[:, :1]), batch.tokens)
            first = 1
        losses = []
        for c in range(r.clip_chunks):
            start = first + c * r.chunk_frames
            x0 = lat[:, start:start + r.chunk_frames]                          # [B, F, C, h, w]
            layout = rollout.layout(r.chunk_frames, with_state=False)
            ctx = rollout.context(layout)
            t = sample_times(b, r.sampler_shift, self.lags(0)).to(device)          # [B, 1 | F]
            noise = torch.randn_like(x0)
            xt = (1 - t[..., None, None, None]) * x0 + t[..., None, None, None] * noise
            v = self.model(xt, t, batch.tokens, None, context=ctx, rope=ctx.rope)
            losses.append(F.mse_loss(v, noise - x0))
            if c + 1 < r.clip_chunks:
                rollout.commit(layout, self.noisy_context(x0), batch.tokens, ctx)
        per_chunk = torch.stack(losses)                                          # [chunks]
        mean = per_chunk.mean()
        if i2v or r.first_chunk_weight == 1.0:
            return mean, {"flow_mse": mean.item()}
        # text-to-video: the first chunk, from the prompt alone, weighs first_chunk_weight chunks
        w = torch.ones_like(per_chunk)
        w[0] = r.first_chunk_weight
        loss = (w * per_chunk).sum() / w.sum()
        return loss, {"flow_mse": mean.item(), "first_chunk_mse": per_chunk[0].item()}


class PolicyObjective(_RolloutObjective):
    def __init__(self, recipe: Recipe, model: CausalDiT, codec: nn.Module, teacher: CausalDiT | None = None) -> None:
        super().__init__(recipe, model, codec)
        self.teacher = teacher
        self.teacher_policy = POLICIES.build(recipe.teacher_policy) if teacher is not None else None
        if self.teacher_policy is not None and self.teacher_policy.state:
            raise UserError(f"recipe {recipe.name}: teacher_policy {recipe.teacher_policy!r} has state frames; "
                            f"accepted: a policy without state (the teacher samples content frames only)")

    @classmethod
    def build(cls, recipe: Recipe, init_dir: Path) -> "PolicyObjective":
        model, codec = initial_modules(recipe, init_dir)
        return cls(recipe, model, codec, load_teacher(recipe, codec, init_dir) if recipe.teacher else None)

    def loss(self, step: int, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        r = self.recipe
        batch, lat, i2v = self.clip(step, device)
        b = lat.shape[0]
        n_state, fr = self.policy.state, r.chunk_frames
        self_context = bool(torch.rand(()) < r.self_rollout)
        sampler = FlowSampler(r.sampler_steps, r.sampler_shift, r.sampler_stagger)
        weights = horizon_weights(r.clip_chunks * fr, r.horizon_alpha).to(device)   # [N] per generated frame
        rollout = Rollout(self.model, self.policy, b, device)
        teacher = TeacherRollout(self, b, device, batch.tokens) if self.teacher is not None else None
        first = 0
        if i2v:
            layout = rollout.layout(1, with_state=False)
            rollout.commit(layout, lat[:, :1], batch.tokens)
            if teacher is not None:
                teacher.commit(lat[:, :1])
            first = 1
        x0_terms, flow_terms = [], []
        for c in range(r.clip_chunks):
            start = first + c * fr
            truth = lat[:, start:start + fr]                                    # [B, F, C, h, w]
            layout = rollout.layout(fr)
            ctx = rollout.context(layout)

            def velocity(x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
                tt = torch.as_tensor(t, dtype=torch.float32, device=device).reshape(1, -1).expand(b, -1)
                return self.model(x, tt, batch.tokens, None, context=ctx, state_frames=n_state, rope=ctx.rope)

            noise = torch.randn(b, n_state + fr, *truth.shape[2:], device=device)
            # the target: the ground truth, or the teacher's sample from the same content noise and context
            target = truth if teacher is None else teacher.sample(noise[:, n_state:])
            x = sampler.sample(velocity, noise, n_state)                          # the inference sampler, with grad
            w = weights[c * fr:(c + 1) * fr].view(1, fr, 1, 1, 1)
            x0_terms.append(((x[:, n_state:] - target) ** 2 * w).mean())
            if r.flow_weight > 0:   # keep the velocity field a flow toward the data, state as the rollout made it
                clean = torch.cat([x[:, :n_state], target], dim=1)
                t = sample_times(b, r.sampler_shift, self.lags(n_state)).to(device)   # [B, 1 | Fs + F]
                noise = torch.randn_like(clean)
                xt = (1 - t[..., None, None, None]) * clean + t[..., None, None, None] * noise
                v = self.model(xt, t, batch.tokens, None, context=ctx, state_frames=n_state, rope=ctx.rope)
                flow_terms.append((((v - (noise - clean))[:, n_state:]) ** 2 * w).mean())
            if c + 1 < r.clip_chunks:
                content = x[:, n_state:] if self_context else truth
                rollout.commit(layout, torch.cat([x[:, :n_state], content], dim=1), batch.tokens, ctx)
                if teacher is not None:
                    teacher.commit(content)
                if r.bptt_chunks and (c + 1) % r.bptt_chunks == 0:
                    rollout.cache.detach()          # truncated back-propagation through the recurrence
        x0_loss = torch.stack(x0_terms).mean()
        flow_loss = torch.stack(flow_terms).mean() if flow_terms else torch.zeros((), device=device)
        loss = r.x0_weight * x0_loss + r.flow_weight * flow_loss
        return loss, {"x0_mse": x0_loss.item(), "flow_mse": flow_loss.item(), "self_context": float(self_context)}


def load_teacher(recipe: Recipe, codec: nn.Module, weights_dir: Path) -> CausalDiT:
    """The frozen teacher DiT of a distilled fine-tune; refused unless it reads the student's latents
    (its encoder and latent normalisation bit-identical to the student's codec)."""
    path = weights_dir / f"{recipe.teacher}.safetensors"
    teacher, teacher_codec, _ = load_model(path, rebuild_hint=f"adabench train {recipe.teacher} --out {weights_dir}")
    mine, theirs = codec.state_dict(), teacher_codec.state_dict()
    differ = sorted(k for k in mine
                    if not k.startswith("decoder.") and (k not in theirs or not torch.equal(mine[k], theirs[k])))
    if differ:
        raise UserError(f"recipe {recipe.name}: teacher {path} encodes other latents than the student's codec "
                        f"({', '.join(differ[:3])}); accepted: a teacher trained on the same codec")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


class TeacherRollout:
    """The teacher's own cache beside the student's: it commits the same content frames and samples
    each chunk from the noise the student's content frames start from (distillation of the teacher's
    many-step sampler into the student's few-step one, on the student's own context). Under
    classifier-free guidance (``teacher_guidance`` w != 1) a twin cache of the null prompt runs beside
    it and each step is ``v_null + w * (v_prompt - v_null)``: the student learns the guided samples in
    one pass per step."""

    def __init__(self, objective: PolicyObjective, batch: int, device: torch.device, tokens: torch.Tensor) -> None:
        r = objective.recipe
        self.model = objective.teacher.to(device)
        self.w = r.teacher_guidance
        prompts = [tokens] + ([null_prompt(tokens, self.model.config.vocab_size)] if self.w != 1.0 else [])
        self.rollouts = [(Rollout(self.model, objective.teacher_policy, batch, device), p) for p in prompts]
        self.sampler = FlowSampler(r.teacher_steps, r.teacher_shift, 0)
        self.batch, self.device = batch, device
        self.pending: list | None = None           # (layout, context) per rollout of the chunk just sampled

    @torch.no_grad()
    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """The teacher's clean chunk [B, F, C, h, w] from ``noise`` [B, F, C, h, w]."""
        self.pending = []
        for rollout, _ in self.rollouts:
            layout = rollout.layout(noise.shape[1], with_state=False)
            self.pending.append((layout, rollout.context(layout)))

        def one(x: torch.Tensor, tt: torch.Tensor, i: int) -> torch.Tensor:
            ctx = self.pending[i][1]
            return self.model(x, tt, self.rollouts[i][1], None, context=ctx, rope=ctx.rope)

        def velocity(x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
            tt = torch.as_tensor(t, dtype=torch.float32, device=self.device).reshape(1, -1).expand(self.batch, -1)
            v = one(x, tt, 0)
            if len(self.rollouts) > 1:
                vn = one(x, tt, 1)
                v = vn + self.w * (v - vn)
            return v

        return self.sampler.sample(velocity, noise)

    @torch.no_grad()
    def commit(self, frames: torch.Tensor) -> None:
        """Commit clean content frames [B, n, C, h, w] (the first frame, or the chunk just sampled)."""
        for i, (rollout, prompt) in enumerate(self.rollouts):
            if self.pending is None:       # the first frame of image-to-video: no chunk sampled before it
                rollout.commit(rollout.layout(frames.shape[1], with_state=False), frames.detach(), prompt)
            else:
                layout, ctx = self.pending[i]
                rollout.commit(layout, frames.detach(), prompt, ctx)
        self.pending = None


OBJECTIVES = {"codec": CodecObjective, "base": BaseObjective, "policy": PolicyObjective}


def objective_class(kind: str):
    """The objective of a recipe kind (the evaluator's lives with the evaluator)."""
    if kind == "evaluator":
        from adabench.training.evaluator_objective import EvaluatorObjective
        return EvaluatorObjective
    return OBJECTIVES[kind]
