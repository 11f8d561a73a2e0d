"""Training recipes: versioned TOML files in ``adabench/recipes/``, one per shipped model."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

from adabench.errors import UserError

KINDS = ("codec", "base", "policy", "evaluator")


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a training run (with the code version and the machine)."""

    name: str
    kind: str                      # codec | base | policy | evaluator
    version: int = 1
    init: str = ""                 # recipe whose final checkpoint this run starts from ("" = fresh)
    seed: int = 0                  # model init and noise
    data_seed: int = 1000          # PanWorld clips: batch i is a pure function of (data_seed, i)
    steps: int = 1000
    batch: int = 8
    lr: float = 3e-4
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    log_every: int = 25
    frame_size: int = 32
    clip_chunks: int = 7           # chunks per training clip (7 x 3 = 21 frames: the training horizon)
    chunk_frames: int = 3
    i2v_fraction: float = 0.5      # share of batches that start from a ground-truth first frame
    policy: str = "sliding-window:window=21"   # attention pattern trained in
    context_noise: float = 0.0     # noisy-context augmentation: max noise level mixed into committed context
    sampler_steps: int = 4         # policy fine-tunes: the unrolled sampler's steps (inference's default too)
    sampler_shift: float = 3.0
    sampler_stagger: int = 0       # steps between the starts of a chunk's consecutive frames (adabench.sampler)
    bptt_chunks: int = 0           # policy fine-tunes: cut gradients through the cache every N chunks (0: never)
    self_rollout: float = 0.0      # share of batches whose context is the model's own output
    horizon_alpha: float = 0.0     # horizon-weighted loss strength (AdaState): w_i ~ 1 + alpha * i / N
    flow_weight: float = 1.0       # policy fine-tunes: weight of the flow-matching term next to x0 regression
    x0_weight: float = 1.0         # policy fine-tunes: weight of the x0 regression of the unrolled sampler's output
    latent_equivariance: float = 0.0    # codec: weight of the latent shift-equivariance error
    decoder_equivariance: float = 0.0   # codec: weight of decoding a moved latent against the moved frame
    freeze_encoder: bool = False   # codec: train the decoder only (the init's latents, and every DiT on them, stay valid)
    edge_weight: float = 0.0       # codec: weight of the L1 error of the decoded frame's pixel differences (edges)
    model: dict = field(default_factory=dict)   # ModelConfig overrides for a fresh model (tests use tiny ones)
    notes: str = ""

    def digest(self) -> str:
        return hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:16]


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("adabench.recipes").iterdir() if p.name.endswith(".toml"))


def load_recipe(name_or_path: str) -> Recipe:
    """A shipped recipe by name, or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        text = path.read_text()
    elif name_or_path in recipe_names():
        text = resources.files("adabench.recipes").joinpath(f"{name_or_path}.toml").read_text()
    else:
        raise UserError(f"unknown recipe {name_or_path!r}; accepted: {', '.join(recipe_names())} or a .toml file")
    data = tomllib.loads(text).get("recipe", {})
    known = {f.name for f in fields(Recipe)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"recipe {name_or_path}: unknown keys {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
    recipe = Recipe(**data)
    if recipe.bptt_chunks < 0:
        raise UserError(f"recipe {name_or_path}: bptt_chunks {recipe.bptt_chunks} is invalid; accepted: an integer >= 0 "
                        f"(0: back-propagate through the whole clip)")
    if recipe.kind not in KINDS:
        raise UserError(f"recipe {name_or_path}: kind {recipe.kind!r} is invalid; accepted: {', '.join(KINDS)}")
    if recipe.freeze_encoder and (recipe.kind != "codec" or not recipe.init):
        raise UserError(f"recipe {name_or_path}: freeze_encoder needs kind = \"codec\" and an init codec to keep; "
                        f"accepted: a codec recipe with init set")
    return recipe
