"""The Wan family as a streaming generator: ``wan:path=DIR,checkpoint=FILE,policy=NAME,...``.

Per chunk of ``chunk`` latent frames (plus the policy's state frames, denoised with it and
never decoded) the generator draws fresh noise from a generator seeded by the rollout's seed,
runs the distilled sampler (:mod:`adabench.wan.sampler`) against the cached context, decodes
the chunk's latent frames with the streaming VAE (:mod:`adabench.wan.vae`) and yields its
pixel frames; then one more forward at the context-noise level (0 by default) commits the
clean chunk's (and state's) K/V, as the published systems do. ``--frames`` counts pixel
frames: a rollout makes ``1 + ceil((frames - 1) / 4)`` latent frames (the first decodes to 1
pixel frame, each later one to 4) and exactly ``frames`` come out. Keys are cached before
RoPE and rotated when read, by the position the cache policy gives each cached frame.

Presets carry each system's published settings (any policy can be put on any checkpoint;
``describe()`` records exactly what ran):

- ``self-forcing``: steps 1000/750/500/250 warped onto the shift-5 schedule; no sink, 21
  latent frames attended (a window of 18 cached frames + the chunk of 3), absolute positions;
- ``causvid``: steps 1000/757/522 unwarped, shift 8; the same 21-frame window (CausVid's
  restart from an overlap after 21 frames is not reproduced: its window rolls instead);
- ``longlive``: as self-forcing, with the first chunk (3 frames) as a permanent sink and 12
  frames attended (sink 3 + window 6 + chunk 3); pass its LoRA with ``lora=FILE``.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from adabench.attention import ProbeFn
from adabench.cache import CachePolicy, build_policy
from adabench.chunk import Chunk
from adabench.errors import UserError
from adabench.generator import _pop_chunk_stats, _sync, check_frames
from adabench.rollout import Rollout
from adabench.wan.config import Geometry, latent_frames_for
from adabench.wan.sampler import DistilledSampler, parse_steps

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
WAN_FPS = 16.0
# Frames one chunk may attend to (sink + state + window + state queries + chunk): 128, six times
# the 21 latent frames the family is trained on. A documented cap: at 480x832 each attended frame
# costs 0.29 GB of K/V cache in bf16 (docs/real-models.md), so window=100000 is refused up front.
MAX_ATTENDED_FRAMES = 128
DEFAULT_SIZE = {"tiny": (32, 48)}           # random=tiny: 2 x 3 tokens per latent frame
WAN_SIZE = (480, 832)


@dataclass(frozen=True)
class Preset:
    steps: tuple[float, ...]
    shift: float
    warp: bool
    policy: str
    policy_args: tuple[tuple[str, Any], ...]


PRESETS = {
    "self-forcing": Preset((1000, 750, 500, 250), 5.0, True, "sliding-window", (("window", 18), ("pos", "absolute"))),
    "causvid": Preset((1000, 757, 522), 8.0, False, "sliding-window", (("window", 18), ("pos", "absolute"))),
    "longlive": Preset((1000, 750, 500, 250), 5.0, True, "ff-anchor", (("sink", 3), ("window", 6), ("pos", "absolute"))),
}
WAN_KEYS = ("path", "checkpoint", "lora", "lora_alpha", "ema", "random", "preset", "policy", "steps", "shift", "warp",
            "context_noise", "chunk", "height", "width", "dtype", "device", "encoder")


class WanGenerator:
    """A Wan2.1 causal DiT + streaming VAE + umT5 text encoder under an adabench cache policy."""

    capabilities = frozenset({"probe"})

    def __init__(self, name: str, parts: Any, policy: CachePolicy, sampler: DistilledSampler, geometry: Geometry,
                 chunk_frames: int, device: torch.device, dtype: torch.dtype, encoder_mode: str,
                 preset: str, fps: float = WAN_FPS) -> None:
        from adabench.wan.model import AtResolution
        from adabench.wan.text import PromptEncoder

        self.name, self.device, self.dtype = name, device, dtype
        self.model = parts.model.to(device, dtype).keep_float32().eval().requires_grad_(False)
        self.backbone = AtResolution(self.model, geometry)
        self.vae = parts.vae
        self.text = PromptEncoder(parts.tokenizer, parts.text_encoder, device, dtype, self.model.config.text_len,
                                  encoder_mode, parts.text_source)
        self.policy, self.sampler, self.geometry, self.preset = policy, sampler, geometry, preset
        self.chunk_frames, self.fps = int(chunk_frames), float(fps)
        self.height, self.width = geometry.height, geometry.width
        self.frame_size = min(self.height, self.width)
        self.weights = parts.weights + (f" [fingerprint {parts.fingerprint[:16]}]" if parts.fingerprint else "")

    # --- what the harness asks ---------------------------------------------------------
    def check_prompt(self, prompt: str) -> None:
        """Encode the prompt now (and cache it), so a bad prompt fails before the run and
        ``encoder=release`` can free the encoder at the first rollout."""
        self.text.check(prompt)

    def describe(self) -> dict[str, Any]:
        cfg = self.model.config
        return {"name": self.name, "family": "wan2.1-t2v", "preset": self.preset, **self.policy.describe(),
                **self.sampler.describe(), "chunk_frames": self.chunk_frames, "chunk_unit": "latent frames",
                "fps": self.fps, "frame_size": self.frame_size, "height": self.height, "width": self.width,
                "tokens_per_latent_frame": self.geometry.tokens_per_frame,
                "params": sum(p.numel() for p in self.model.parameters()), "dim": cfg.dim, "layers": cfg.num_layers,
                "weights": self.weights, "keys_cached": "before RoPE, rotated at read by layout position",
                **self.text.describe(), "device": str(self.device), "dtype": str(self.dtype).replace("torch.", "")}

    def attention_probe(self, **options: Any) -> ProbeFn:
        """A probe for ``stream(..., probe=)`` that counts only the sampler's passes (commit passes excluded)."""
        from adabench.metrics.attention import AttentionProbe

        return AttentionProbe.for_generator(self, **options)

    def kv_cache_bytes(self) -> int:
        """K and V preallocated per rollout: every layer, every slot of the policy, in the model's dtype."""
        cfg = self.model.config
        per_slot = cfg.num_heads * self.geometry.tokens_per_frame * cfg.head_dim
        return 2 * cfg.num_layers * self.policy.capacity * per_slot * torch.finfo(self.dtype).bits // 8

    def memory(self) -> dict[str, int]:
        """Bytes the generator keeps on its device: DiT weights, text encoder (0 once offloaded or released),
        VAE, and the KV cache a rollout preallocates."""
        def size(module: torch.nn.Module) -> int:
            return sum(p.numel() * p.element_size() for p in module.parameters())

        return {"dit_weights": size(self.model), "text_encoder": self.text.resident_bytes, "vae": size(self.vae),
                "kv_cache": self.kv_cache_bytes()}

    # --- the rollout ---------------------------------------------------------------------
    @torch.inference_mode()
    def stream(self, prompt: str, seed: int, num_frames: int, init: torch.Tensor | None = None,
               probe: ProbeFn | None = None) -> Iterator[Chunk]:
        from adabench.wan.vae import StreamingDecode

        check_frames(num_frames)
        if init is not None:
            raise UserError(f"model {self.name!r} generates from text only (no image-to-video here); accepted: --init none")
        text = self.text.encode(prompt)                                         # [1, 512, text_dim]
        self.text.release()
        noise_gen = torch.Generator(device="cpu").manual_seed(int(seed))
        rollout = Rollout(self.backbone, self.policy, 1, self.device, self.dtype, raw_keys=True)
        decoder = StreamingDecode(self.vae)
        latent_total = latent_frames_for(num_frames)
        n_state = self.policy.state
        chunk = min(self.chunk_frames, latent_total)
        rows, cols = self.geometry.latent
        shape = (1, n_state + chunk, self.model.config.in_dim, rows, cols)

        def noise() -> torch.Tensor:
            return torch.randn(shape, generator=noise_gen).to(self.device)       # float32, seeded

        emitted, latents_done, index = 0, 0, 0
        while emitted < num_frames:
            t0 = time.perf_counter()
            layout = rollout.layout(chunk)
            ctx = rollout.context(layout, probe)

            def flow(x: torch.Tensor, t: float) -> torch.Tensor:
                tt = torch.full((1, 1), t, dtype=torch.float32, device=self.device)    # one timestep, every frame
                return self.backbone(x, tt, text, None, context=ctx, state_frames=n_state, rope=ctx.rope)

            clean = self.sampler.sample(flow, noise)                             # [1, Fs + F, C, h, w] float32
            _sync(self.device)
            t1 = time.perf_counter()
            keep = min(chunk, latent_total - latents_done)
            pixels = decoder.decode(clean[0, n_state:n_state + keep])            # [P, 3, H, W], state frames left out
            frames = pixels[:num_frames - emitted]                               # the last latent may decode past the end
            _sync(self.device)
            t2 = time.perf_counter()
            timings = {"denoise": t1 - t0, "decode": t2 - t1}
            if emitted + frames.shape[0] < num_frames:                            # the last chunk is never context
                block = self.sampler.context_input(clean, noise)
                rollout.commit(layout, block, text, ctx, t=self.sampler.context_noise)
                _sync(self.device)
                timings["commit"] = time.perf_counter() - t2
            timings["total"] = time.perf_counter() - t0
            attention = _pop_chunk_stats(probe)
            yield Chunk(index, emitted, frames, self.fps, timings, len(layout.keys), rollout.cache.bytes_held, attention)
            emitted += frames.shape[0]
            latents_done += keep
            index += 1


def _policy(preset: Preset, policy: str | None, policy_args: dict[str, Any]) -> CachePolicy:
    """The preset's policy with its published arguments, or another policy with only the spec's."""
    if policy is None:
        return build_policy("wan", preset.policy, policy_args, WAN_KEYS, defaults=dict(preset.policy_args))
    return build_policy("wan", policy, policy_args, WAN_KEYS)


def sampler_and_policy(preset: str, policy: str | None, steps: int | str | None, shift: float | None,
                       warp: bool | None, context_noise: float, chunk: int, policy_args: dict[str, Any]
                       ) -> tuple[DistilledSampler, CachePolicy]:
    """The preset's sampler and cache policy, with what the spec overrides; UserError for bad values."""
    if preset not in PRESETS:
        close = difflib.get_close_matches(str(preset), PRESETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"preset={preset!r} is unknown{hint}; accepted: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    if warp is not None and not isinstance(warp, bool):
        raise UserError(f"warp={warp!r} is invalid; accepted: true or false")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise UserError(f"chunk={chunk!r} is invalid; accepted: an integer >= 1 (latent frames per chunk)")
    sampler = DistilledSampler(parse_steps(steps) if steps is not None else p.steps,
                               shift if shift is not None else p.shift, p.warp if warp is None else warp, context_noise)
    cache_policy = _policy(p, policy, policy_args)
    attended = cache_policy.budget + 2 * cache_policy.state + chunk
    if attended > MAX_ATTENDED_FRAMES:
        raise UserError(f"{cache_policy.spec()} with chunk={chunk} attends to {attended} latent frames; accepted: at "
                        f"most {MAX_ATTENDED_FRAMES} (six times the family's 21-frame training clips)")
    return sampler, cache_policy


def wan(path: str | None = None, checkpoint: str | None = None, lora: str | None = None,
        lora_alpha: float | None = None, ema: bool = True, random: str | None = None, preset: str = "self-forcing",
        policy: str | None = None, steps: int | str | None = None, shift: float | None = None,
        warp: bool | None = None, context_noise: float = 0.0, chunk: int = 3, height: int | None = None,
        width: int | None = None, dtype: str = "auto", device: str = "cpu", encoder: str = "offload",
        **policy_args: Any) -> WanGenerator:
    """``wan:path=DIR[,checkpoint=FILE][,lora=FILE][,preset=NAME][,policy=NAME,key=value...]`` or ``wan:random=tiny``.

    Keys the generator does not take go to the cache policy (``sink=``, ``window=``, ``state=``,
    ``pos=``, ``gap=``). ``steps``: a count (evenly spaced from 1000) or ``1000/750/500/250``.
    """
    from adabench.models import resolve_device
    from adabench.wan.loader import load_parts

    for name, value in (("path", path), ("checkpoint", checkpoint), ("lora", lora), ("random", random)):
        if value is not None and not isinstance(value, str):
            raise UserError(f"{name}={value!r} is invalid; accepted: a path (a name that reads as a number: ./{value})"
                            if name != "random" else f"random={value!r} is invalid; accepted: tiny, 1.3b")
    if not isinstance(ema, bool):
        raise UserError(f"ema={ema!r} is invalid; accepted: true or false")
    if lora_alpha is not None and (isinstance(lora_alpha, bool) or not isinstance(lora_alpha, (int, float)) or lora_alpha <= 0):
        raise UserError(f"lora_alpha={lora_alpha!r} is invalid; accepted: a number > 0 (default: the LoRA's rank)")
    sampler, cache_policy = sampler_and_policy(preset, policy, steps, shift, warp, context_noise, chunk, policy_args)
    dev = resolve_device(device)
    if dtype == "auto":
        dtype = "bfloat16" if dev.type == "cuda" else "float32"
    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} is invalid; accepted: auto, {', '.join(DTYPES)}")
    h_default, w_default = DEFAULT_SIZE.get(str(random), WAN_SIZE)
    geometry = Geometry(height if height is not None else h_default, width if width is not None else w_default)
    from adabench.wan.text import ENCODER_MODES
    if encoder not in ENCODER_MODES:
        raise UserError(f"encoder={encoder!r} is invalid; accepted: {', '.join(ENCODER_MODES)}")
    parts = load_parts(path, checkpoint, lora, lora_alpha, random, ema, dev, DTYPES[dtype])
    name = f"wan[{preset}|{cache_policy.spec()}]"
    return WanGenerator(name, parts, cache_policy, sampler, geometry, chunk, dev, DTYPES[dtype], encoder, preset)
