"""Training recipes: versioned TOML files in ``adabench/recipes/``, one per shipped model."""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from adabench.errors import UserError
from adabench.world.panworld import MAX_SIZE, MIN_SIZE

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
    teacher: str = ""              # policy fine-tunes: recipe whose checkpoint is the teacher ("": regress to ground truth)
    teacher_policy: str = "sliding-window:window=21"   # the teacher's cache: the whole clip, as the base was trained
    teacher_steps: int = 32        # the teacher's Euler steps per chunk (unstaggered)
    teacher_shift: float = 3.0     # the teacher's schedule shift
    teacher_guidance: float = 1.0  # the teacher's classifier-free guidance scale (1: none; needs a prompt_dropout teacher)
    prompt_dropout: float = 0.0    # share of training clips shown the null prompt (classifier-free guidance)
    first_chunk_weight: float = 1.0   # base: weight of the first chunk's loss in text-to-video clips (from the prompt alone)
    model: dict = field(default_factory=dict)   # ModelConfig overrides for a fresh model (tests use tiny ones)
    notes: str = ""

    def digest(self) -> str:
        """Content hash of the recipe; keys added after version 2 count only when set (older runs keep theirs)."""
        items = {k: v for k, v in asdict(self).items() if k not in LATER_KEYS or v != LATER_KEYS[k]}
        return hashlib.sha256(repr(sorted(items.items())).encode()).hexdigest()[:16]


# Keys added after the shipped recipes were trained, with their defaults: left out of the digest at
# the default, so every finished run of an older recipe is still recognised as finished.
LATER_KEYS: dict[str, Any] = {"teacher": "", "teacher_policy": "sliding-window:window=21", "teacher_steps": 32,
                              "teacher_shift": 3.0, "teacher_guidance": 1.0, "prompt_dropout": 0.0,
                              "first_chunk_weight": 1.0}


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")     # no dots: no name is another's file plus a suffix
NAME_RULE = "1-100 letters, digits, '_' or '-', starting with a letter or digit (it names files inside --out)"

# Accepted range of each numeric key, inclusive (None: no bound).
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "version": (0, None), "seed": (0, 2**32 - 1), "data_seed": (0, 2**63 - 1), "steps": (1, 10**9),
    "batch": (1, 4096), "lr": (0.0, None), "warmup": (0, None), "weight_decay": (0.0, None), "grad_clip": (0.0, None),
    "checkpoint_every": (1, None), "log_every": (1, None), "frame_size": (MIN_SIZE, MAX_SIZE), "clip_chunks": (1, 1024),
    "chunk_frames": (1, 1024), "i2v_fraction": (0.0, 1.0), "context_noise": (0.0, 1.0), "sampler_steps": (1, 1000),
    "sampler_shift": (0.0, None), "sampler_stagger": (0, 1000), "bptt_chunks": (0, None), "self_rollout": (0.0, 1.0),
    "horizon_alpha": (0.0, None), "flow_weight": (0.0, None), "x0_weight": (0.0, None),
    "latent_equivariance": (0.0, None), "decoder_equivariance": (0.0, None), "edge_weight": (0.0, None),
    "teacher_steps": (1, 100), "teacher_shift": (0.0, None), "teacher_guidance": (0.0, 20.0),
    "prompt_dropout": (0.0, 1.0), "first_chunk_weight": (0.0, 1000.0),
}
POSITIVE = {"lr", "grad_clip", "sampler_shift", "teacher_shift"}           # floats that must be > 0, not only >= 0
TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,)}
TYPE_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false", "dict": "a table"}
MAX_CLIP_BYTES = 2 * 2**30      # one training batch of float32 clips; the shipped recipes use under 5 MB


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("adabench.recipes").iterdir() if p.name.endswith(".toml"))


def check_file_name(what: str, value: str) -> None:
    """Refuse a recipe or init name that is not a plain file name: names become paths inside --out."""
    if not NAME_PATTERN.fullmatch(value):
        raise UserError(f"{what} {value!r} is invalid; accepted: {NAME_RULE}")


def recipe_source(name_or_path: str) -> tuple[str, str]:
    """(text, where it came from) of a shipped recipe name or a .toml file path."""
    names = recipe_names()
    if not (name_or_path.endswith(".toml") or "/" in name_or_path or os.sep in name_or_path):
        if name_or_path in names:
            return resources.files("adabench.recipes").joinpath(f"{name_or_path}.toml").read_text(), name_or_path
        close = difflib.get_close_matches(name_or_path, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown recipe {name_or_path!r}{hint}; accepted: {', '.join(names)} or a .toml file")
    path = Path(name_or_path)
    if not path.exists():
        raise UserError(f"recipe file {path} does not exist; accepted: an existing .toml file or a shipped recipe: "
                        f"{', '.join(names)}")
    if not path.is_file():
        raise UserError(f"recipe file {path} is not a regular file; accepted: a .toml file")
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"recipe file {path} cannot be read ({exc}); accepted: a readable UTF-8 .toml file") from None


def recipe_table(text: str, source: str) -> dict:
    """The ``[recipe]`` table of a TOML text, with syntax errors reported by file and line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"recipe {source}: TOML syntax error: {exc}; accepted: a TOML file with a [recipe] table") \
            from None
    table = data.get("recipe")
    if not isinstance(table, dict):
        outside = f" (keys found outside it: {', '.join(sorted(data))})" if data else ""
        raise UserError(f"recipe {source} has no [recipe] table{outside}; accepted: a TOML file whose [recipe] table "
                        f"holds name, kind and the training keys")
    return table


def load_recipe(name_or_path: str) -> Recipe:
    """A shipped recipe by name, or a TOML file by path, checked key by key."""
    text, source = recipe_source(name_or_path)
    data = recipe_table(text, source)
    known = {f.name: f for f in fields(Recipe)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserError(f"recipe {source}: unknown keys {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
    for key in ("name", "kind"):
        if key not in data:
            raise UserError(f"recipe {source}: missing key {key!r}; accepted: name (a file name) and kind "
                            f"({', '.join(KINDS)}) in every [recipe] table")
    for key, value in data.items():
        kind = str(known[key].type)
        if isinstance(value, bool) != (kind == "bool") or not isinstance(value, TYPES[kind]):
            raise UserError(f"recipe {source}: {key} = {value!r} has the wrong type; accepted: {TYPE_WORDS[kind]}")
    recipe = Recipe(**data)
    check_recipe(recipe, source)
    return recipe


def check_recipe(recipe: Recipe, source: str | None = None) -> None:
    """Refuse values no training run can use (out of range, not finite, unsafe names), before anything runs."""
    where = f"recipe {source or recipe.name}"
    check_file_name(f"{where}: name", recipe.name)
    if recipe.init:
        check_file_name(f"{where}: init", recipe.init)
    if recipe.teacher:
        check_file_name(f"{where}: teacher", recipe.teacher)
        if recipe.kind != "policy":
            raise UserError(f"{where}: teacher needs kind = \"policy\" (a fine-tune distilled from the teacher's "
                            f"samples); accepted: teacher in policy recipes only")
    if recipe.kind not in KINDS:
        raise UserError(f"{where}: kind {recipe.kind!r} is invalid; accepted: {', '.join(KINDS)}")
    for key, (low, high) in LIMITS.items():
        value = getattr(recipe, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{where}: {key} = {value} is invalid; accepted: a finite number")
        too_low = low is not None and (value <= low if key in POSITIVE else value < low)
        if too_low or (high is not None and value > high):
            accepted = ("an integer " if isinstance(low, int) else "a number ") + ("> " if key in POSITIVE else ">= ")
            accepted += str(low)
            accepted += f" and <= {high}" if high is not None else ""
            extra = " (0: back-propagate through the whole clip)" if key == "bptt_chunks" else ""
            raise UserError(f"{where}: {key} {value} is invalid; accepted: {accepted}{extra}")
    clip_bytes = recipe.batch * (1 + recipe.clip_chunks * recipe.chunk_frames) * 3 * recipe.frame_size ** 2 * 4
    if clip_bytes > MAX_CLIP_BYTES:
        raise UserError(f"{where}: one batch of training clips would take {clip_bytes / 2**30:.1f} GiB; accepted: at "
                        f"most {MAX_CLIP_BYTES // 2**30} GiB (lower batch, frame_size, clip_chunks or chunk_frames)")
    if recipe.freeze_encoder and (recipe.kind != "codec" or not recipe.init):
        raise UserError(f"{where}: freeze_encoder needs kind = \"codec\" and an init codec to keep; "
                        f"accepted: a codec recipe with init set")


MODEL_INT_RANGE = (1, 4096)       # every integer size of a model (rope_time_dims may be 0) ...
MODEL_INT_MAX = {"depth": 256}    # ... and fewer blocks (each is built on the meta device to count parameters)
MAX_PARAMETERS = 10**8            # the embedded models have about 1 M; AdamW on 100 M already needs 1.6 GB


def model_config(recipe: Recipe, config_class: type, base: dict, build: Callable[[Any], list]) -> Any:
    """``config_class`` from ``base`` with the recipe's ``model`` overrides, checked key by key, then
    built on the meta device (no memory) so that impossible or oversized models are refused up front."""
    import torch

    where = f"recipe {recipe.name}: model"
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory()   # type: ignore[misc]
                for f in fields(config_class)}
    unknown = sorted(set(recipe.model) - set(defaults))
    if unknown:
        raise UserError(f"{where} has unknown keys {', '.join(unknown)}; accepted: {', '.join(sorted(defaults))}")
    for key, value in recipe.model.items():
        check_model_value(where, key, value, defaults[key])
    try:
        config = config_class.from_dict({**base, **recipe.model})
        with torch.device("meta"):
            modules = build(config)
    except (ValueError, TypeError, ZeroDivisionError, RuntimeError) as exc:
        raise UserError(f"{where} sizes are impossible ({exc}); accepted: sizes that fit together "
                        f"(e.g. width a multiple of heads, patch dividing latent_size)") from None
    count = sum(p.numel() for module in modules for p in module.parameters())
    if count > MAX_PARAMETERS:
        raise UserError(f"{where} would have {count:,} parameters; accepted: at most {MAX_PARAMETERS:,}")
    return config


def check_model_value(where: str, key: str, value: Any, default: Any) -> None:
    """One ``model`` override against the type of its default: sizes are integers in MODEL_INT_RANGE."""
    low, high = (0 if key == "rope_time_dims" else MODEL_INT_RANGE[0]), MODEL_INT_MAX.get(key, MODEL_INT_RANGE[1])
    sizes = list(value) if isinstance(default, tuple) and isinstance(value, list) else [value]
    if isinstance(default, bool) or not isinstance(default, (int, tuple)):
        ok = isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int))
        ok = ok and not (isinstance(value, bool) and not isinstance(default, bool))
        ok = ok and not (isinstance(value, float) and not math.isfinite(value))
        if not ok:
            raise UserError(f"{where}: {key} = {value!r} has the wrong type; accepted: {type(default).__name__} "
                            f"like the default {default!r}")
        return
    shape_ok = not isinstance(default, tuple) or (isinstance(value, list) and len(value) == len(default))
    if not shape_ok or not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in sizes):
        what = f"a list of {len(default)} integers" if isinstance(default, tuple) else "an integer"
        raise UserError(f"{where}: {key} = {value!r} is invalid; accepted: {what} from {low} to {high}")
