"""Building the three parts of a Wan generator: DiT, VAE, text encoder (from a folder or at random).

``path=DIR`` is a Wan2.1-T2V-1.3B folder in diffusers' layout (``model_index.json``,
``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``), read locally and never
downloaded; ``checkpoint=FILE`` replaces the DiT's weights by a generator checkpoint and
``lora=FILE`` merges a LoRA into them. ``random=tiny|1.3b`` builds randomly initialised parts
(fixed seed) of a tiny test configuration or of the real one (for speed and memory on a GPU).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adabench.errors import MissingWeightsError, UserError
from adabench.wan import weights
from adabench.wan.config import SIZES, WanConfig
from adabench.wan.model import CausalWanModel

RANDOM_SEED = 0
FOLDER_PARTS = ("model_index.json", "transformer", "vae", "text_encoder", "tokenizer")
DOWNLOAD_HINT = ("download it elsewhere, e.g. `huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers --local-dir DIR`, "
                 "and copy it here (adabench never downloads; docs/real-models.md)")


@dataclass
class Parts:
    model: CausalWanModel
    vae: torch.nn.Module
    tokenizer: Any
    text_encoder: torch.nn.Module
    weights: str                 # what the DiT's weights are, for describe()
    fingerprint: str             # identifies weight files (names, sizes, first and last MiB); "" for random
    text_source: str


def _require_extra() -> None:
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise UserError(f"the Wan generator needs the optional extra: pip install 'adabench[wan]' ({exc.name} is "
                        "missing)") from None


def fingerprint(files: list[Path]) -> str:
    """sha256 over each file's name, size, first and last MiB: cheap for multi-GB weights, and it changes
    when a file is replaced (the job store keys results on it)."""
    h = hashlib.sha256()
    for f in sorted(files):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as handle:
            h.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), 2)
                h.update(handle.read(1 << 20))
    return h.hexdigest()


def random_model(config: WanConfig, device: torch.device, seed: int = RANDOM_SEED) -> CausalWanModel:
    torch.manual_seed(seed)
    with torch.device(device):
        return CausalWanModel(config)


def load_model(config: WanConfig, state: dict[str, torch.Tensor], device: torch.device) -> CausalWanModel:
    """The DiT with checked ``state`` (built on the meta device, tensors assigned, then moved)."""
    with torch.device("meta"):
        model = CausalWanModel(config)
    model.load_state_dict(state, assign=True, strict=True)
    return model.to(device)


def check_folder(path: Path) -> None:
    try:
        is_dir = path.is_dir()
    except OSError as exc:
        raise MissingWeightsError(f"path {str(path)[:80]}: {exc.strerror or exc}") from None
    if not is_dir:
        raise MissingWeightsError(f"path {path} is not a folder; accepted: a Wan2.1-T2V-1.3B folder in diffusers' "
                                  f"layout ({', '.join(FOLDER_PARTS)}); {DOWNLOAD_HINT}")
    missing = [p for p in FOLDER_PARTS if not (path / p).exists()]
    if missing:
        raise MissingWeightsError(f"path {path} lacks {', '.join(missing)}; accepted: a Wan2.1-T2V-1.3B folder in "
                                  f"diffusers' layout ({', '.join(FOLDER_PARTS)}); {DOWNLOAD_HINT}")


def folder_config(path: Path) -> WanConfig:
    try:
        cfg = json.loads((path / "transformer" / "config.json").read_text(encoding="utf-8"))
        return WanConfig.from_diffusers(cfg)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MissingWeightsError(f"path {path}: transformer/config.json is missing or not a Wan transformer "
                                  f"config ({weights._first_line(exc)})") from None


def folder_transformer(path: Path, config: WanConfig) -> tuple[dict[str, torch.Tensor], list[Path]]:
    files = sorted((path / "transformer").glob("*.safetensors"))
    if not files:
        raise MissingWeightsError(f"path {path}: transformer/ holds no .safetensors weights; {DOWNLOAD_HINT}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(weights.read_tensors(f, "transformer weights"))
    state, _ = weights.to_wan_names(state)
    return weights.check_state(state, config, path / "transformer"), files


def load_parts(path: str | None, checkpoint: str | None, lora: str | None, lora_alpha: float | None,
               random: str | None, ema: bool, device: torch.device, dtype: torch.dtype) -> Parts:
    """The DiT (in ``dtype``, time embedding and modulation kept in float32), VAE and text encoder."""
    _require_extra()
    if random is not None:
        if random not in SIZES:
            raise UserError(f"random={random!r} is invalid; accepted: {', '.join(SIZES)}")
        if path is not None or checkpoint is not None or lora is not None:
            raise UserError("random= builds an untrained model; accepted: random= alone, or path= with "
                            "checkpoint= / lora=")
        if random == "1.3b" and device.type == "cpu":
            raise UserError("random=1.3b is the real configuration for GPU measurements (its umT5-XXL encoder alone "
                            "is 23 GB in float32); accepted on cpu: random=tiny")
        return _random_parts(random, device, dtype)
    if path is None:
        raise UserError("the Wan generator needs path=DIR (a Wan2.1-T2V-1.3B folder in diffusers' layout) or "
                        "random=tiny|1.3b (untrained, for tests and speed)")
    folder = Path(path)
    check_folder(folder)
    config = folder_config(folder)
    if checkpoint is not None:
        ckpt = Path(checkpoint)
        state, what = weights.read_generator(ckpt, config, ema)
        files = [ckpt]
    else:
        state, files = folder_transformer(folder, config)
        what = f"{folder.name}/transformer (base Wan2.1, not distilled)"
    if lora is not None:
        what += f" + LoRA {weights.merge_lora(state, Path(lora), lora_alpha)}"
        files.append(Path(lora))
    model = load_model(config, state, device)
    del state
    vae, tokenizer, encoder = _folder_vae_text(folder, device, dtype)
    return Parts(model, vae, tokenizer, encoder, what, fingerprint(files), f"{folder.name}/text_encoder (umT5)")


def _folder_vae_text(folder: Path, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any, Any]:
    from diffusers import AutoencoderKLWan
    from transformers import AutoTokenizer, UMT5EncoderModel

    try:
        vae = AutoencoderKLWan.from_pretrained(str(folder / "vae"), local_files_only=True, torch_dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)
        encoder = UMT5EncoderModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MissingWeightsError(f"path {folder}: cannot load vae/, tokenizer/ or text_encoder/ "
                                  f"({weights._first_line(exc)[:160]}); {DOWNLOAD_HINT}") from None
    vae = vae.to(device).eval().requires_grad_(False)
    encoder = encoder.to(device, dtype).eval().requires_grad_(False)
    return vae, tokenizer, encoder


def _random_parts(size: str, device: torch.device, dtype: torch.dtype) -> Parts:
    from adabench.wan.text import UMT5_TINY, UMT5_XXL, char_tokenizer, random_umt5
    from adabench.wan.vae import random_vae

    model = random_model(SIZES[size], device)
    vae = random_vae(size, device, dtype, RANDOM_SEED)
    encoder = random_umt5(UMT5_XXL if size == "1.3b" else UMT5_TINY, device, dtype, RANDOM_SEED)
    what = f"random-init(seed={RANDOM_SEED}, {size}): untrained"
    return Parts(model, vae, char_tokenizer(), encoder, what, "",
                 f"random umT5 ({'XXL' if size == '1.3b' else 'tiny'}) + character tokenizer stand-in")
