"""Resumable training state in safetensors: module weights, AdamW moments, the step.

Written atomically (temporary file, then rename), so an interruption never leaves a
half-written checkpoint behind; nothing is ever unpickled.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from adabench.checkpoints import read_metadata, save_modules


def save_training_state(path: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                        step: int, metadata: dict[str, str]) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    moments = {f"optim.{i}.{key}": torch.as_tensor(value).detach().cpu().contiguous()
               for i, p in enumerate(params) for key, value in optimizer.state.get(p, {}).items()}
    save_modules(path, modules, dict(metadata, step=str(step)), extra_tensors=moments)


def load_training_state(path: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer) -> int:
    """Restore modules and optimizer in place; returns the step to continue from.

    Raises ``ValueError`` (or ``RuntimeError`` from ``load_state_dict``) when the file does not
    hold these modules' tensors: a damaged or foreign checkpoint is refused before training."""
    tensors = load_file(str(path))
    for name, module in modules.items():
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, p in enumerate(params):
        state = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"optim.{i}.")}
        for key, value in state.items():
            if key != "step" and value.shape != p.shape:
                raise ValueError(f"optimizer tensor optim.{i}.{key} has shape {tuple(value.shape)}, "
                                 f"its parameter {tuple(p.shape)}")
        if state:
            optimizer.state[p] = {k: v.to(p.device) for k, v in state.items()}
    return int(read_metadata(path)["step"])
