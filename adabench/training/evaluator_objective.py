"""``evaluator`` recipes: train the PanWorld evaluator to classify a clip's prompt attributes.

Loss: the mean over attributes (motion, scene, color, shape) of the cross-entropy on
PanWorld clips of ``clip_frames`` frames from random camera positions. Clips are lightly
degraded (Gaussian noise, blur) so that generated videos, which are softer than the ground
truth, are still read correctly. ``save_final`` measures held-out accuracy on ground-truth
clips from a data seed no recipe trains on and stores it in the checkpoint metadata
(``heldout_accuracy``, JSON: attribute -> fraction, plus ``all``: all four right).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adabench.errors import UserError
from adabench.evaluator import ATTRIBUTES, Evaluator, EvaluatorConfig, save_evaluator
from adabench.training.data import clip_batch
from adabench.training.recipe import Recipe, model_config

HELDOUT_DATA_SEED = 777_001     # never used by a training recipe
HELDOUT_CLIPS = 512
HELDOUT_BATCH = 64
NOISE_MAX = 0.04                # augmentation: Gaussian noise std drawn in [0, NOISE_MAX] per clip
AUGMENT_SHARE = 0.5             # share of clips degraded (noise and a random blur mix)


def degrade(frames: torch.Tensor) -> torch.Tensor:
    """Randomly blur and noise a share of the clips; frames [B, T, 3, H, W] -> same shape.

    Uses the global torch RNG (the training loop seeds it per step: exact resume).
    """
    b = frames.shape[0]
    dev = frames.device
    chosen = (torch.rand(b, device=dev) < AUGMENT_SHARE).float().view(b, 1, 1, 1, 1)
    kernel = torch.tensor([1.0, 2.0, 1.0], device=dev)
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)     # [3, 1, 3, 3] binomial blur
    flat = frames.flatten(0, 1)                                               # [B*T, 3, H, W]
    blurred = F.conv2d(F.pad(flat, (1, 1, 1, 1), mode="replicate"), kernel, groups=3).view_as(frames)
    mix = torch.rand(b, 1, 1, 1, 1, device=dev) * chosen                      # blur strength per clip
    sigma = torch.rand(b, 1, 1, 1, 1, device=dev) * NOISE_MAX * chosen        # noise std per clip
    out = (1 - mix) * frames + mix * blurred + sigma * torch.randn_like(frames)
    return out.clamp(0, 1)


@torch.no_grad()
def heldout_accuracy(net: Evaluator, clips: int = HELDOUT_CLIPS, data_seed: int = HELDOUT_DATA_SEED,
                     batch: int = HELDOUT_BATCH, device: torch.device | str = "cpu") -> dict[str, float]:
    """Fraction of ground-truth clips whose attribute the evaluator gets right (and ``all`` four)."""
    was_training = net.training
    net.eval()
    cfg = net.config
    right = {a: 0 for a in (*ATTRIBUTES, "all")}
    seen = 0
    for index in range((clips + batch - 1) // batch):
        n = min(batch, clips - seen)
        data = clip_batch(data_seed, index, n, cfg.clip_frames, cfg.frame_size, device)
        pred = net.predict(data.frames)
        hits = {a: pred[a].cpu() == data.labels[a] for a in ATTRIBUTES}
        for a in ATTRIBUTES:
            right[a] += int(hits[a].sum())
        right["all"] += int(torch.stack([hits[a] for a in ATTRIBUTES]).all(dim=0).sum())
        seen += n
    net.train(was_training)
    return {a: round(r / seen, 4) for a, r in right.items()}


class EvaluatorObjective:
    """Cross-entropy on every attribute; the evaluator is the only module."""

    def __init__(self, recipe: Recipe, net: Evaluator) -> None:
        self.recipe, self.net = recipe, net

    @classmethod
    def build(cls, recipe: Recipe, init_dir: Path) -> "EvaluatorObjective":
        if recipe.init:
            raise UserError(f"recipe {recipe.name}: evaluator recipes start fresh; remove init={recipe.init!r}")
        config = model_config(recipe, EvaluatorConfig, {"frame_size": recipe.frame_size}, lambda c: [Evaluator(c)])
        torch.manual_seed(recipe.seed)
        return cls(recipe, Evaluator(config))

    def modules(self) -> dict[str, nn.Module]:
        return {"evaluator": self.net}

    def trainable(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def loss(self, step: int, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        r, cfg = self.recipe, self.net.config
        data = clip_batch(r.data_seed, step, r.batch, cfg.clip_frames, cfg.frame_size, device)
        logits = self.net(degrade(data.frames))
        terms = {a: F.cross_entropy(logits[a], data.labels[a].to(device)) for a in ATTRIBUTES}
        loss = torch.stack(list(terms.values())).mean()
        log = {f"{a}_loss": t.item() for a, t in terms.items()}
        log.update({f"{a}_acc": float((logits[a].argmax(1).cpu() == data.labels[a]).float().mean())
                    for a in ATTRIBUTES})
        return loss, log

    def save_final(self, path: Path, metadata: dict[str, str]) -> None:
        self.net.eval()
        device = next(self.net.parameters()).device
        accuracy = heldout_accuracy(self.net, clips=HELDOUT_CLIPS, device=device)
        print(f"evaluator held-out accuracy ({HELDOUT_CLIPS} clips, data seed {HELDOUT_DATA_SEED}): "
              + ", ".join(f"{a} {v:.1%}" for a, v in accuracy.items()), file=sys.stderr)
        save_evaluator(path, self.net, {**metadata, "heldout_accuracy": json.dumps(accuracy),
                                        "heldout": json.dumps({"clips": HELDOUT_CLIPS, "data_seed": HELDOUT_DATA_SEED})})
