"""Model checkpoints as safetensors: backbone + codec weights with the config in the metadata.

Never unpickles anything: a checkpoint is tensors plus JSON strings.
"""

from __future__ import annotations

import json
from dataclasses import fields
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
    """(model, codec, metadata) from a checkpoint; a clear error when missing or corrupted.

    ``rebuild_hint`` (a command) is given for the files adabench ships or trains itself; without
    it a missing file is the user's path and the message says what is accepted instead.
    """
    path = Path(path)
    hint = (f"; rebuild it with `{rebuild_hint}`" if rebuild_hint else
            "; accepted: the path of an adabench model checkpoint (.safetensors, from `adabench train`)")
    try:
        exists, regular = path.exists(), path.is_file()
    except OSError as exc:                           # a name too long for the file system, a loop of links
        raise MissingWeightsError(f"checkpoint {str(path)[:80]}: {exc.strerror or exc}{hint}") from None
    if not exists:
        raise MissingWeightsError(f"checkpoint {path} not found{hint}")
    if not regular:
        raise MissingWeightsError(f"checkpoint {path} is not a regular file{hint}")
    try:
        metadata = read_metadata(path)
        if metadata.get("format") != FORMAT:
            raise ValueError(f"format {metadata.get('format')!r}, expected {FORMAT!r}")
        config = config_from_metadata(metadata["config"])
        tensors = load_file(str(path))
        model, codec = build_checked(config, tensors)
    except (SafetensorError, ValueError, KeyError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MissingWeightsError(f"checkpoint {path} is corrupted or incompatible ({first}){hint}") from None
    return model, codec, metadata


def config_from_metadata(text: str) -> ModelConfig:
    """The stored architecture, each field of the type :class:`ModelConfig` declares (ValueError otherwise)."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"stored config is a JSON {type(data).__name__}, expected an object")
    for field in fields(ModelConfig):
        expected = type(field.default)
        value = data.get(field.name, field.default)
        if type(value) is not expected:                                      # bool is no int here
            raise ValueError(f"stored config {field.name}={value!r} has type {type(value).__name__}, "
                             f"expected {expected.__name__}")
    try:
        return ModelConfig.from_dict(data)
    except (TypeError, ZeroDivisionError) as exc:
        raise ValueError(f"stored config is invalid: {exc}") from None


def build_checked(config: ModelConfig, tensors: dict[str, torch.Tensor]) -> tuple[CausalDiT, torch.nn.Module]:
    """Backbone and codec for ``config`` with ``tensors`` loaded, after every tensor's name and shape
    were checked on the meta device (nothing is allocated for a config the file does not match)."""
    try:
        with torch.device("meta"):
            shapes = {f"{name}.{k}": tuple(v.shape) for name, module in (("model", CausalDiT(config)),
                                                                          ("codec", build_codec(config)))
                      for k, v in module.state_dict().items()}
    except (TypeError, ZeroDivisionError, RuntimeError) as exc:
        raise ValueError(f"stored config is invalid: {exc}") from None
    missing = sorted(set(shapes) - set(tensors))
    if missing:
        raise ValueError(f"tensor {missing[0]} is missing"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unexpected = sorted(k for k in tensors if k.startswith(("model.", "codec.")) and k not in shapes)
    if unexpected:
        raise ValueError(f"tensor {unexpected[0]} is not part of the model its stored config describes"
                         + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"tensor {name} is {list(tensors[name].shape)} in the file, {list(shape)} for its "
                             f"stored config")
    model, codec = CausalDiT(config), build_codec(config)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    codec.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("codec.")})
    return model, codec
