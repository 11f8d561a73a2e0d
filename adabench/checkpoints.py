"""Model checkpoints as safetensors: backbone + codec weights with the config in the metadata.

Never unpickles anything: a checkpoint is tensors plus JSON strings.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from adabench.atomic import atomic_path
from adabench.backbone import CausalDiT
from adabench.codec import build_codec
from adabench.config import ModelConfig
from adabench.errors import MissingWeightsError

FORMAT = "adabench-model/1"


def save_modules(path: str | Path, modules: dict[str, torch.nn.Module], metadata: dict[str, str],
                 extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Weights of named modules (keys ``name.param``) plus string metadata, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{name}.{k}": v.detach().cpu().contiguous()
               for name, module in modules.items() for k, v in module.state_dict().items()}
    tensors.update(extra_tensors or {})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def save_model(path: str | Path, model: CausalDiT, codec: torch.nn.Module, extra: dict[str, str] | None = None) -> None:
    metadata = {"format": FORMAT, "config": json.dumps(model.config.to_dict())}
    metadata.update(extra or {})
    save_modules(path, {"model": model, "codec": codec}, metadata)


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_model(path: str | Path, rebuild_hint: str = "") -> tuple[CausalDiT, torch.nn.Module, dict[str, str]]:
    """(model, codec, metadata) from a checkpoint; a clear error when missing or corrupted."""
    path = Path(path)
    hint = f"; rebuild it with `{rebuild_hint}`" if rebuild_hint else ""
    if not path.is_file():
        raise MissingWeightsError(f"checkpoint {path} not found{hint}")
    try:
        metadata = read_metadata(path)
        tensors = load_file(str(path))
        if metadata.get("format") != FORMAT:
            raise ValueError(f"format {metadata.get('format')!r}, expected {FORMAT!r}")
        config = ModelConfig.from_dict(json.loads(metadata["config"]))
        model, codec = CausalDiT(config), build_codec(config)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        codec.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("codec.")})
    except (SafetensorError, ValueError, KeyError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MissingWeightsError(f"checkpoint {path} is corrupted or incompatible ({first}){hint}") from None
    return model, codec, metadata
