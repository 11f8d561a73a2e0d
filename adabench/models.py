"""The embedded models: the causal DiT under each cache policy, as registered generators.

Each factory takes the policy's parameters plus sampler, checkpoint and device settings,
so ``adastate:state=1,window=3,pos=relative,steps=8`` builds one (``chunk=N``: frames per
chunk; ``stagger=N``: frame k of a chunk starts k * N sampler steps after the first; ``guidance=W``:
classifier-free guidance, for weights trained with prompt dropout, two passes per step). Shipped checkpoints live
in ``adabench/weights/<name>.safetensors`` (see ``manifest.json`` there); ``checkpoint=PATH``
loads another one and ``checkpoint=random`` a fixed-seed untrained model (for tests and
speed measurements only: it says so in ``describe()["weights"]``). ``dit:policy=NAME,...``
runs the ``base`` weights under any registered cache policy, plug-ins included.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from adabench.adastate import DEFAULT_GAP, AdaptiveState
from adabench.backbone import CausalDiT
from adabench.baselines.ff_anchor import FirstFrameAnchor
from adabench.baselines.sliding_window import SlidingWindow
from adabench.cache import CachePolicy, build_policy
from adabench.checkpoints import load_model
from adabench.codec import build_codec
from adabench.config import ModelConfig
from adabench.errors import UserError
from adabench.generator import CausalGenerator
from adabench.sampler import FlowSampler

WEIGHTS_DIR = Path(__file__).parent / "weights"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
RANDOM_INIT_SEED = 0
# Frames generated per chunk: 3, as the models are trained and the engine is specified
# (chunk F = 3, >= 100 frames/s for the default model on 2 CPU cores). chunk=1 (frame by
# frame) measured truer camera speed at about half the throughput (docs/models.md).
DEFAULT_CHUNK = 3
# Staggered sampling (adabench.sampler): the default chunk of 3 in 4 + 2 passes. On the shipped
# weights (fine-tuned with the plain sampler) it measured truer camera speed than stagger 0
# at 21-126 frames (docs/models.md); stagger=0 restores the plain sampler.
DEFAULT_STAGGER = 1
# The schedule's shift (adabench.sampler.shifted_schedule): 5, the real systems' value. With
# staggering it measured truer camera speed than the 3 the fine-tunes unrolled (chosen among
# 1, 2, 3, 5, 8, 12 on seeds 2 and 3, which the reference report does not use; docs/models.md).
DEFAULT_SHIFT = 5.0
# the recipe that produced each shipped checkpoint (for the rebuild hint)
RECIPE_OF = {"adastate": "adastate-distillg", "ff-anchor": "ff-anchor-distillg",
             "sliding-window": "sliding-window-distillg", "base": "base-cfgb"}
# Frames one chunk may attend to (cached + state + its own) and time positions its layout may span
# (sink + state + gap + window + chunk): 64, three times the 21-frame clips the embedded DiT was
# trained on (the shipped layouts span 4-24). A documented cap: RoPE has no table to run out of,
# but the cache is preallocated per slot and every pass attends to all of it, so
# `adastate:window=1000000` would allocate tens of GB and `state=5000` run for minutes.
MAX_CONTEXT_FRAMES = 64
DEVICE_TYPES = ("cpu", "cuda")


def random_init(config: ModelConfig, seed: int = RANDOM_INIT_SEED) -> tuple[CausalDiT, torch.nn.Module]:
    """A deterministic untrained model whose every layer matters (no zero-initialised gates)."""
    torch.manual_seed(seed)
    model, codec = CausalDiT(config), build_codec(config)
    with torch.no_grad():
        for blk in model.blocks:
            blk.modulation.weight.normal_(0.0, 0.02)
            blk.modulation.bias.normal_(0.0, 0.2)
        model.final_modulation.weight.normal_(0.0, 0.02)
        model.head.weight.normal_(0.0, 0.05)
    return model, codec


def resolve_device(device: object, what: str = "device") -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch device that exists here, or a UserError naming ``what``."""
    try:
        dev = torch.device(device) if isinstance(device, str) else None
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:
        raise UserError(f"{what} {device!r} is not supported; accepted: cpu, cuda, cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{what} {device!r} was asked for but no CUDA GPU is available; accepted here: cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"{what} {device!r}: there is no such GPU; accepted here: cuda:0 .. "
                        f"cuda:{torch.cuda.device_count() - 1}")
    return dev


def check_context(policy: CachePolicy, chunk: int) -> None:
    """Refuse a cache layout beyond :data:`MAX_CONTEXT_FRAMES`, before anything is allocated."""
    attended = max(policy.budget, policy.capacity) + policy.state + chunk
    span = policy.sink + policy.state + policy.gap + policy.window + chunk
    if max(attended, span) > MAX_CONTEXT_FRAMES:
        raise UserError(f"{policy.spec()} with chunk={chunk} is beyond what the embedded DiT supports: each chunk "
                        f"would attend to {attended} frames over {span} time positions; accepted: at most "
                        f"{MAX_CONTEXT_FRAMES} of each (3x its 21-frame training clips): lower sink, state, gap, "
                        f"window or chunk")


def checkpoint_path(name: str, checkpoint: object) -> tuple[Path, str]:
    """The weights file to load and, for a shipped one only, how to rebuild it if it is missing."""
    if checkpoint is None:
        recipe = RECIPE_OF.get(name, name)
        return WEIGHTS_DIR / f"{name}.safetensors", (
            f"adabench train {recipe} --out runs/train` (after the runs it starts from: docs/models.md, "
            f"\"Reproducing\") then `python -m adabench.training.ship --runs runs/train {recipe}={name}")
    if not isinstance(checkpoint, str):
        raise UserError(f"checkpoint={checkpoint!r} is invalid; accepted: a path to a .safetensors file (a name "
                        f"that reads as a number: write ./{checkpoint}) or 'random'")
    return Path(checkpoint), ""


def build_generator(name: str, policy: CachePolicy, steps: int, shift: float, checkpoint: str | None,
                    device: str, dtype: str, chunk: int = DEFAULT_CHUNK, stagger: int = DEFAULT_STAGGER,
                    guidance: float = 1.0) -> CausalGenerator:
    from adabench.world.prompts import parse_prompt   # the embedded models speak PanWorld's grammar

    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} is invalid; accepted: {', '.join(DTYPES)}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise UserError(f"chunk={chunk!r} is invalid; accepted: an integer >= 1 (frames generated per chunk)")
    check_context(policy, chunk)
    sampler = FlowSampler(steps, shift, stagger)
    dev = resolve_device(device)
    if checkpoint == "random":
        model, codec = random_init(ModelConfig())
        weights = f"random-init(seed={RANDOM_INIT_SEED}): untrained"
    else:
        path, hint = checkpoint_path(name, checkpoint)
        model, codec, meta = load_model(path, rebuild_hint=hint)
        decoder = f", decoder {meta['decoder']}" if "decoder" in meta else ""
        weights = f"{path.name} ({meta.get('recipe', 'unknown recipe')}, {meta.get('steps', '?')} steps{decoder})"
        weights_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    generator = CausalGenerator(name, model, codec, policy, sampler, lambda text: list(parse_prompt(text).tokens),
                                chunk_frames=chunk, device=dev, dtype=DTYPES[dtype], weights=weights,
                                guidance=guidance)
    generator.weights_sha256 = weights_sha if checkpoint != "random" else f"random-init(seed={RANDOM_INIT_SEED})"
    return generator


def ff_anchor(sink: int = 1, window: int = 3, pos: str = "absolute", steps: int = 4, shift: float = DEFAULT_SHIFT,
              checkpoint: str | None = None, device: str = "cpu", dtype: str = "float32",
              chunk: int = DEFAULT_CHUNK, stagger: int = DEFAULT_STAGGER, guidance: float = 1.0) -> CausalGenerator:
    return build_generator("ff-anchor", FirstFrameAnchor(sink, window, pos), steps, shift, checkpoint, device, dtype, chunk,
                           stagger, guidance)


def sliding_window(window: int = 4, pos: str = "absolute", steps: int = 4, shift: float = DEFAULT_SHIFT,
                   checkpoint: str | None = None, device: str = "cpu", dtype: str = "float32",
                   chunk: int = DEFAULT_CHUNK, stagger: int = DEFAULT_STAGGER, guidance: float = 1.0) -> CausalGenerator:
    return build_generator("sliding-window", SlidingWindow(window, pos), steps, shift, checkpoint, device, dtype, chunk,
                           stagger, guidance)


def base(window: int = 21, pos: str = "absolute", steps: int = 4, shift: float = DEFAULT_SHIFT,
         checkpoint: str | None = None, device: str = "cpu", dtype: str = "float32",
         chunk: int = DEFAULT_CHUNK, stagger: int = DEFAULT_STAGGER, guidance: float = 1.0) -> CausalGenerator:
    """The backbone before any policy fine-tune, with the block-causal window it was trained with."""
    return build_generator("base", SlidingWindow(window, pos), steps, shift, checkpoint, device, dtype, chunk, stagger,
                           guidance)


DIT_KEYS = ("policy", "steps", "shift", "checkpoint", "device", "dtype", "chunk", "stagger", "guidance")


def dit(policy: str = "sliding-window", steps: int = 4, shift: float = DEFAULT_SHIFT, checkpoint: str | None = None,
        device: str = "cpu", dtype: str = "float32", chunk: int = DEFAULT_CHUNK, stagger: int = DEFAULT_STAGGER,
        guidance: float = 1.0, **policy_args: Any) -> CausalGenerator:
    """The embedded DiT under any registered cache policy, plug-ins included (``dit:policy=NAME,key=value``).

    Keys the sampler and weights do not take go to the policy. The weights default to the
    shipped ``base`` checkpoint: the backbone before any policy fine-tune, the fair start for a
    policy that has none (``checkpoint=PATH`` for one trained with a recipe whose ``policy`` is it).
    """
    cache_policy = build_policy("dit", policy, policy_args, DIT_KEYS)
    generator = build_generator("base", cache_policy, steps, shift, checkpoint, device, dtype, chunk, stagger, guidance)
    generator.name = f"dit[{cache_policy.spec()}]"
    return generator


def adastate(state: int = 1, window: int = 3, pos: str = "relative", gap: int = DEFAULT_GAP, steps: int = 4,
             shift: float = DEFAULT_SHIFT, checkpoint: str | None = None, device: str = "cpu", dtype: str = "float32",
             chunk: int = DEFAULT_CHUNK, stagger: int = DEFAULT_STAGGER, guidance: float = 1.0) -> CausalGenerator:
    return build_generator("adastate", AdaptiveState(state, window, pos, gap), steps, shift, checkpoint, device, dtype,
                           chunk, stagger, guidance)
