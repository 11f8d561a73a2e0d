"""Streaming generators: anything that yields frames chunk by chunk can be benchmarked.

:class:`CausalGenerator` is the embedded one: codec + causal DiT + cache policy + sampler.
Per chunk it draws fresh noise for the chunk (and for the state frames, if the policy has
them) from a generator seeded by the rollout's seed, denoises, decodes and yields the
chunk's frames, then runs one extra forward at t=0 that commits the clean chunk (and
state) into the cache, as the real systems do. A video whose length is no multiple of the
chunk ends on a whole chunk, trimmed (every chunk has the length the model was trained
with, and the published results were measured so); a chunk longer than all the frames
still to generate shrinks to them, so a long ``chunk=`` never denoises more than a short
video needs. In half precision the model runs in its dtype while the sampler integrates
in float32 (as real pipelines keep their latents).
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Protocol, runtime_checkable

import torch

from adabench.attention import ProbeFn
from adabench.backbone import CausalDiT
from adabench.cache import CachePolicy
from adabench.chunk import Chunk
from adabench.errors import UserError
from adabench.rollout import Rollout
from adabench.sampler import FlowSampler


# Optional capabilities a generator declares in ``capabilities`` (what the harness may ask of it):
CAPABILITIES = {
    "init_frames": "stream(..., init=frames) starts from given first frames (image-to-video)",
    "probe": "attention_probe(**options) makes a probe; stream(..., probe=it) reports per-chunk attention "
             "statistics in Chunk.attention (see adabench.metrics.attention) and leaves the frames bit-identical",
}


@runtime_checkable
class StreamingGenerator(Protocol):
    """Anything that streams video chunk by chunk can be benchmarked; nothing here needs PanWorld.

    Required: ``name``, ``fps`` (playback rate), ``frame_size``, ``chunk_frames``,
    ``stream`` and ``describe`` (a JSON-able dict: weights, settings; it becomes part of
    every result). Optional: ``capabilities``, a frozenset of :data:`CAPABILITIES` keys
    (none when absent), and ``check_prompt(prompt)``, which raises :class:`UserError` for a
    prompt the model cannot read so that a run fails before it starts.
    ``stream`` must be deterministic for a seed: the harness replays it to score and probe.
    """

    name: str
    fps: float
    frame_size: int
    chunk_frames: int

    def stream(self, prompt: str, seed: int, num_frames: int, init: torch.Tensor | None = None) -> Iterator[Chunk]:
        """Yield exactly ``num_frames`` frames in chunks; ``init`` [k, 3, H, W] in [0, 1]
        are given first frames (image-to-video), emitted as they are."""
        ...

    def describe(self) -> dict[str, Any]:
        ...


def capabilities(generator: Any) -> frozenset[str]:
    """The optional capabilities ``generator`` declares (an empty set when it declares none)."""
    return frozenset(getattr(generator, "capabilities", ()))


# The longest rollout one command asks for: about 1.7 hours of video at 16 fps. Streaming keeps
# the frames bounded, but a job's per-chunk records (timings, series) grow by a few KB a frame,
# and a count no machine can finish (--frames 10**20) should be refused, not run until memory ends.
MAX_FRAMES = 100_000
FRAMES_ACCEPTED = f"an integer from 1 to {MAX_FRAMES}"


def check_frames(num_frames: object) -> int:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or not 1 <= num_frames <= MAX_FRAMES:
        raise UserError(f"frames={str(num_frames)[:40]!r} is invalid; accepted: {FRAMES_ACCEPTED}")
    return num_frames


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pop_chunk_stats(probe: ProbeFn | None) -> dict[str, Any] | None:
    """Per-chunk statistics from a probe that keeps them (see ``adabench.metrics.attention``)."""
    return probe.pop_chunk() if probe is not None and hasattr(probe, "pop_chunk") else None


MAX_GUIDANCE = 20.0


def check_guidance(guidance: object) -> float:
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0.0 <= guidance <= MAX_GUIDANCE:
        raise UserError(f"guidance={guidance!r} is invalid; accepted: a number from 0 to {MAX_GUIDANCE:g} "
                        f"(classifier-free guidance scale; 1 = the prompt alone, no extra pass)")
    return float(guidance)


class GuidedRollouts:
    """The rollout of one prompt, plus, under classifier-free guidance (scale w != 1), a twin rollout of the
    null prompt with its own cache: both commit the same clean frames, and each denoising pass is
    ``v_null + w * (v_prompt - v_null)``, as a model trained with prompt dropout expects."""

    def __init__(self, generator: "CausalGenerator", rollout: Rollout, tokens: torch.Tensor) -> None:
        from adabench.backbone import null_prompt

        self.model, self.w, self.tokens, self.rollout = generator.model, generator.guidance, tokens, rollout
        self.dtype, self.device = generator.dtype, generator.device
        self.null = None
        if self.w != 1.0:
            self.null = Rollout(generator.model, generator.policy, 1, generator.device, generator.dtype)
            self.null_tokens = null_prompt(tokens, generator.model.config.vocab_size)
        self.null_ctx = None

    def velocity(self, layout, ctx, n_state: int):
        """``velocity(x, t)`` of the chunk with ``layout`` and the prompt rollout's context ``ctx``."""
        self.null_ctx = self.null.context(layout) if self.null is not None else None

        def velocity(x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
            tt = torch.as_tensor(t, dtype=torch.float32, device=self.device).reshape(1, -1)   # [1, 1 | Fs + F]
            v = self.model(x, tt, self.tokens, None, context=ctx, state_frames=n_state, rope=ctx.rope)
            if self.null is not None:
                nc = self.null_ctx
                vn = self.model(x, tt, self.null_tokens, None, context=nc, state_frames=n_state, rope=nc.rope)
                v = vn + self.w * (v - vn)
            return v.to(x.dtype)                  # the model runs in self.dtype, the Euler steps in float32

        return velocity

    def commit(self, layout, clean: torch.Tensor, ctx=None) -> None:
        self.rollout.commit(layout, clean, self.tokens, ctx)
        if self.null is not None:
            self.null.commit(layout, clean, self.null_tokens, self.null_ctx)
            self.null_ctx = None


class CausalGenerator:
    """The embedded chunk-wise autoregressive video diffusion model."""

    capabilities = frozenset({"init_frames", "probe"})

    def __init__(self, name: str, model: CausalDiT, codec: torch.nn.Module, policy: CachePolicy,
                 sampler: FlowSampler, tokenize, fps: float = 16.0, chunk_frames: int = 3,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 weights: str = "unknown", guidance: float = 1.0) -> None:
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(self.device, dtype).eval()
        self.codec = codec.to(self.device, dtype).eval()
        self.policy, self.sampler = policy, sampler
        self.tokenize = tokenize                  # prompt text -> list[int] token ids
        self.fps, self.chunk_frames = float(fps), int(chunk_frames)
        self.frame_size = model.config.frame_size
        self.weights = weights
        self.guidance = check_guidance(guidance)   # classifier-free guidance scale; 1: the prompt alone, one pass
        self.weights_sha256 = "unknown"          # content hash of the weights file (set by the model factories)

    def check_prompt(self, prompt: str) -> None:
        """Raise :class:`UserError` now for a prompt the model cannot read."""
        self.tokenize(prompt)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.policy.describe(), **self.sampler.describe(),
                "chunk_frames": self.chunk_frames, "fps": self.fps, "frame_size": self.frame_size,
                "params": sum(p.numel() for p in self.model.parameters()), "codec": self.model.config.codec,
                "weights": self.weights, "weights_sha256": self.weights_sha256, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""),
                **({"guidance": self.guidance} if self.guidance != 1.0 else {})}

    def attention_probe(self, **options: Any) -> ProbeFn:
        """A probe for ``stream(..., probe=)`` that counts only this sampler's denoising passes."""
        from adabench.metrics.attention import AttentionProbe

        return AttentionProbe.for_generator(self, **options)

    @torch.inference_mode()
    def stream(self, prompt: str, seed: int, num_frames: int, init: torch.Tensor | None = None,
               probe: ProbeFn | None = None) -> Iterator[Chunk]:
        check_frames(num_frames)
        cfg = self.model.config
        tokens = torch.tensor([self.tokenize(prompt)], device=self.device)           # [1, prompt_tokens]
        noise_gen = torch.Generator(device="cpu").manual_seed(int(seed))
        rollout = Rollout(self.model, self.policy, 1, self.device, self.dtype)
        guided = GuidedRollouts(self, rollout, tokens)
        emitted, index = 0, 0

        if init is not None:
            t0 = time.perf_counter()
            init = init[:num_frames]                                                  # [k, 3, H, W], emitted as given
            layout = rollout.layout(init.shape[0], with_state=False)
            guided.commit(layout, self.codec.encode(init.to(self.device, self.dtype))[None])
            _sync(self.device)
            _pop_chunk_stats(probe)          # the prefill is no generated chunk: its attention is not reported
            yield Chunk(index, 0, init.float().cpu(), self.fps, {"commit": time.perf_counter() - t0},
                        len(layout.keys), rollout.cache.bytes_held)
            emitted, index = init.shape[0], 1

        n_state = self.policy.state
        chunk_frames = min(self.chunk_frames, num_frames - emitted)   # longer than the video: only what is asked
        shape = (1, n_state + chunk_frames, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        while emitted < num_frames:
            t0 = time.perf_counter()
            layout = rollout.layout(chunk_frames)
            ctx = rollout.context(layout, probe)
            noise = torch.randn(shape, generator=noise_gen).to(self.device)     # the sampler integrates in float32
            velocity = guided.velocity(layout, ctx, n_state)
            clean = self.sampler.sample(velocity, noise, n_state)                     # [1, Fs + F, C, h, w]
            _sync(self.device)
            t1 = time.perf_counter()
            keep = min(chunk_frames, num_frames - emitted)
            frames = self.codec.decode(clean[0, n_state:n_state + keep].to(self.dtype)).float().cpu()  # [keep, 3, H, W]
            t2 = time.perf_counter()
            timings = {"denoise": t1 - t0, "decode": t2 - t1}
            if emitted + keep < num_frames:            # the last chunk is never needed as context
                guided.commit(layout, clean, ctx)
                _sync(self.device)
                timings["commit"] = time.perf_counter() - t2
            timings["total"] = time.perf_counter() - t0
            attention = _pop_chunk_stats(probe)
            yield Chunk(index, emitted, frames, self.fps, timings, len(layout.keys), rollout.cache.bytes_held, attention)
            emitted += keep
            index += 1
