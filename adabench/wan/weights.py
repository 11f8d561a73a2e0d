"""Reading the Wan family's weights: generator checkpoints, diffusers folders, LongLive's LoRA.

Nothing here unpickles an object: ``.pt`` files are read with ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers without running it; ``.safetensors``
hold tensors only. Accepted generator checkpoints (Self-Forcing, CausVid, LongLive): a dict
with ``generator_ema`` / ``generator`` / ``model`` (``ema=true`` prefers the EMA weights, as
the published inference commands do) or a bare state dict, with wrapper prefixes such as
``model.``, ``module.`` and FSDP's ``_fsdp_wrapped_module.`` removed; names in Wan's
original layout or in diffusers' (mapped, norm2/norm3 swap included). Every name and shape
is checked against the architecture before anything is allocated.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from adabench.errors import MissingWeightsError, UserError
from adabench.wan.config import WanConfig

# (Wan's original name, diffusers' name); {i} is a block index. Names not listed are the same in both.
NAME_PAIRS: tuple[tuple[str, str], ...] = (
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("head.head", "proj_out"),
    ("head.modulation", "scale_shift_table"),
    ("blocks.{i}.modulation", "blocks.{i}.scale_shift_table"),
    *((f"blocks.{{i}}.{wan}.{a}", f"blocks.{{i}}.{dif}.{b}")
      for wan, dif in (("self_attn", "attn1"), ("cross_attn", "attn2"))
      for a, b in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"),
                   ("norm_q", "norm_q"), ("norm_k", "norm_k"))),
    ("blocks.{i}.norm3", "blocks.{i}.norm2"),          # Wan's norm3 (affine, before cross-attention) is diffusers' norm2
    ("blocks.{i}.ffn.0", "blocks.{i}.ffn.net.0.proj"),
    ("blocks.{i}.ffn.2", "blocks.{i}.ffn.net.2"),
)
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
LEADING_PREFIXES = ("base_model.model.", "module.", "model.", "transformer.", "diffusion_model.", "generator.")
STATE_KEYS_EMA = ("generator_ema", "generator", "model", "state_dict")
STATE_KEYS = ("generator", "generator_ema", "model", "state_dict")
TENSOR_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _compile(pairs: tuple[tuple[str, str], ...], reverse: bool) -> list[tuple[re.Pattern, str]]:
    rules = []
    for wan, dif in pairs:
        src, dst = (dif, wan) if reverse else (wan, dif)
        pattern = "^" + re.escape(src).replace(r"\{i\}", r"(\d+)") + r"(?=\.|$)"
        rules.append((re.compile(pattern), dst.replace("{i}", r"\1")))
    return sorted(rules, key=lambda r: -len(r[0].pattern))       # longest source first


_TO_DIFFUSERS = _compile(NAME_PAIRS, reverse=False)
_TO_WAN = _compile(NAME_PAIRS, reverse=True)


def _rename(key: str, rules: list[tuple[re.Pattern, str]]) -> str:
    for pattern, replacement in rules:
        new, count = pattern.subn(replacement, key, count=1)
        if count:
            return new
    return key


def wan_to_diffusers(key: str) -> str:
    return _rename(key, _TO_DIFFUSERS)


def diffusers_to_wan(key: str) -> str:
    return _rename(key, _TO_WAN)


def is_diffusers_layout(keys: list[str]) -> bool:
    return any(k.startswith(("condition_embedder.", "proj_out.")) or ".attn1." in k for k in keys)


def strip_prefixes(key: str) -> str:
    """``model._fsdp_wrapped_module.blocks.0...`` -> ``blocks.0...``."""
    for segment in WRAPPER_SEGMENTS:
        key = key.replace(segment, "")
    changed = True
    while changed:
        changed = False
        for prefix in LEADING_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def read_tensors(path: Path, what: str) -> Any:
    """The object in a ``.safetensors`` or ``.pt`` file, tensors only; UserError for anything else."""
    try:
        exists, regular = path.exists(), path.is_file()
    except OSError as exc:
        raise MissingWeightsError(f"{what} {str(path)[:80]}: {exc.strerror or exc}") from None
    if not exists:
        raise MissingWeightsError(f"{what} {path} not found; accepted: a .pt or .safetensors file")
    if not regular:
        raise MissingWeightsError(f"{what} {path} is not a regular file; accepted: a .pt or .safetensors file")
    suffix = path.suffix.lower()
    if suffix in TENSOR_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{what} {path} is not a readable safetensors file ({_first_line(exc)})") from None
    if suffix not in PICKLE_SUFFIXES:
        raise UserError(f"{what} {path} has suffix {suffix or '(none)'!r}; accepted: .safetensors, "
                        f"{', '.join(PICKLE_SUFFIXES)} (read with torch.load(weights_only=True))")
    try:
        try:                                # memory-mapped: a 5.7 GB generator checkpoint is not read into RAM twice
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)     # the legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        found = f" (it names {found.group(1)})" if found else ""
        raise UserError(f"{what} {path} holds Python objects besides tensors{found}; refused without running it "
                        "(torch.load weights_only=True); accepted: a state dict of tensors") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise UserError(f"{what} {path} is not a readable torch file ({_first_line(exc)[:120]})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any, path: Path, ema: bool) -> tuple[dict[str, torch.Tensor], str]:
    """(flat state dict, which entry it came from) of a loaded checkpoint object."""
    if _is_state_dict(obj):
        return obj, "state dict"
    if isinstance(obj, dict):
        for key in STATE_KEYS_EMA if ema else STATE_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                return obj[key], key
    keys = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, dict) else type(obj).__name__
    raise UserError(f"checkpoint {path} holds no generator weights (found: {keys}); accepted: a state dict, or a "
                    f"dict with {', '.join(STATE_KEYS)}")


def to_wan_names(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Wrapper prefixes stripped and diffusers' names mapped to Wan's; returns (state, layout found)."""
    stripped = {strip_prefixes(k): v for k, v in state.items()}
    if is_diffusers_layout(list(stripped)):
        return {diffusers_to_wan(k): v for k, v in stripped.items()}, "diffusers"
    return stripped, "wan"


def expected_shapes(config: WanConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of the DiT for ``config`` with its shape (built on the meta device: nothing allocated)."""
    from adabench.wan.model import CausalWanModel

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in CausalWanModel(config).state_dict().items()}


def check_state(state: dict[str, torch.Tensor], config: WanConfig, path: Path | str) -> dict[str, torch.Tensor]:
    """The DiT's tensors of ``state`` (Wan names), after checking names and shapes; extra top-level parts a
    training run may add (a GAN head, register tokens) are left out."""
    shapes = expected_shapes(config)
    tops = {k.split(".")[0] for k in shapes}
    missing = sorted(set(shapes) - set(state))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"checkpoint {path} lacks tensor {missing[0]}{more}; accepted: Wan2.1 DiT weights "
                        f"(dim {config.dim}, {config.num_layers} layers) in Wan's or diffusers' names")
    unexpected = sorted(k for k in state if k not in shapes and k.split(".")[0] in tops)
    if unexpected:
        raise UserError(f"checkpoint {path} has tensor {unexpected[0]}, which a Wan2.1 DiT (dim {config.dim}, "
                        f"{config.num_layers} layers) does not have; accepted: Wan2.1 T2V DiT weights")
    for name, shape in shapes.items():
        if tuple(state[name].shape) != shape:
            raise UserError(f"checkpoint {path}: tensor {name} is {list(state[name].shape)}, the model expects "
                            f"{list(shape)} (dim {config.dim}, {config.num_layers} layers); accepted: weights of "
                            f"this architecture")
    return {k: state[k] for k in shapes}


def read_generator(path: Path, config: WanConfig, ema: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """Checked DiT weights from a Self-Forcing / CausVid / LongLive ``.pt`` or a ``.safetensors``."""
    state, entry = unwrap_state_dict(read_tensors(path, "checkpoint"), path, ema)
    state, layout = to_wan_names(state)
    return check_state(state, config, path), f"{path.name} ({entry}, {layout} names)"


def merge_lora(state: dict[str, torch.Tensor], path: Path, alpha: float | None = None) -> str:
    """Merge a LoRA (PEFT's ``lora_A`` / ``lora_B`` per linear layer; LongLive's ``generator_lora``) into
    ``state`` in place: ``W += alpha / rank * B @ A`` (alpha defaults to the rank, LongLive's setting)."""
    obj = read_tensors(path, "lora")
    if isinstance(obj, dict) and not _is_state_dict(obj):
        obj = next((obj[k] for k in ("generator_lora", "lora", "state_dict") if k in obj and _is_state_dict(obj[k])), obj)
    if not _is_state_dict(obj):
        raise UserError(f"lora {path} holds no LoRA tensors; accepted: PEFT lora_A/lora_B tensors, bare or under "
                        "'generator_lora'")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in obj.items():
        match = re.match(r"^(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$", key)
        if match is None:
            raise UserError(f"lora {path}: tensor {key} is not a LoRA factor; accepted: NAME.lora_A.weight and "
                            "NAME.lora_B.weight pairs")
        module = strip_prefixes(match.group(1))
        pairs.setdefault(module, {})[match.group(2)] = value
    diffusers = is_diffusers_layout([f"{m}.weight" for m in pairs])
    rank = None
    for module, ab in sorted(pairs.items()):
        name = (diffusers_to_wan(f"{module}.weight") if diffusers else f"{module}.weight")
        if set(ab) != {"A", "B"}:
            raise UserError(f"lora {path}: {module} has lora_{next(iter(ab))} without its pair")
        if name not in state:
            raise UserError(f"lora {path}: no layer {name} in the DiT to merge {module} into")
        a, b = ab["A"].float(), ab["B"].float()                      # [r, in], [out, r]
        w = state[name]
        if a.shape[0] != b.shape[1] or (b.shape[0], a.shape[1]) != tuple(w.shape):
            raise UserError(f"lora {path}: {module} is {list(b.shape)} x {list(a.shape)}, the layer is {list(w.shape)}")
        rank = a.shape[0]
        scale = (alpha if alpha is not None else rank) / rank
        state[name] = (w.float() + scale * (b @ a)).to(w.dtype)
    return f"{path.name} ({len(pairs)} layers, rank {rank}, alpha {alpha if alpha is not None else rank})"
