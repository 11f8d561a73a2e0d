"""The PanWorld evaluator: a small clip classifier, the embedded stand-in for CLIP and I3D.

Why: prompt adherence and a Fréchet distance need a network that knows what PanWorld
prompts look like; real CLIP / I3D weights are neither shipped nor meaningful at 32x32.

Input: clips [B, T, 3, H, W] in [0, 1] (T >= 2 consecutive frames at the native 16 fps;
``clip_frames`` = 8 by default; other frame sizes are resized to ``frame_size``). Each
consecutive pair (x_t, x_t+1, x_t+1 - x_t) goes through one shared 2D conv encoder (the
difference channel makes sub-pixel motion visible); the pair codes are averaged over time,
projected to a small feature vector (``features``, D = 32: few enough dimensions for a
Fréchet distance from a few dozen clips) and classified by one linear head per prompt
attribute (``motion``, ``scene``, ``color``, ``shape``; classes from
:func:`adabench.world.prompts.attribute_classes`).

Checkpoints are safetensors written by :func:`adabench.checkpoints.save_modules` (key
prefix ``evaluator.``), metadata ``format`` = :data:`FORMAT` and ``config`` (JSON).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adabench.errors import MissingWeightsError
from adabench.world.prompts import attribute_classes

FORMAT = "adabench-evaluator/1"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "evaluator.safetensors"
TRAIN_HINT = "adabench train evaluator --out DIR"
ATTRIBUTES = ("motion", "scene", "color", "shape")


def _default_classes() -> dict[str, list[str]]:
    return attribute_classes()


@dataclass(frozen=True)
class EvaluatorConfig:
    """Architecture and input convention; stored as JSON in the checkpoint."""

    frame_size: int = 32
    clip_frames: int = 8            # frames per clip the metrics feed (native 16 fps)
    fps: float = 16.0               # frame rate the evaluator was trained at
    widths: tuple[int, int, int] = (24, 48, 64)
    feature_dim: int = 32
    classes: dict[str, list[str]] = field(default_factory=_default_classes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EvaluatorConfig":
        data = dict(data)
        if "widths" in data:
            data["widths"] = tuple(data["widths"])
        return cls(**data)


def _block(c_in: int, c_out: int, stride: int, kernel: int = 3) -> nn.Sequential:
    pad = (kernel - stride + 1) // 2 if stride > 1 else kernel // 2
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, pad), nn.GroupNorm(4, c_out), nn.GELU())


class Evaluator(nn.Module):
    """Clip -> per-attribute logits, with a small penultimate feature vector."""

    def __init__(self, config: EvaluatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or EvaluatorConfig()
        w1, w2, w3 = self.config.widths
        self.encoder = nn.Sequential(                          # pair [9, 32, 32] ->
            _block(9, w1, stride=2, kernel=4),                 # [w1, 16, 16]
            _block(w1, w2, stride=2, kernel=4),                # [w2, 8, 8]
            _block(w2, w3, stride=1),                          # [w3, 8, 8]
            _block(w3, w3, stride=1),                          # [w3, 8, 8]
        )
        self.project = nn.Linear(2 * w3, self.config.feature_dim)
        self.heads = nn.ModuleDict({a: nn.Linear(self.config.feature_dim, len(c))
                                    for a, c in self.config.classes.items()})
        self.weights_sha: str | None = None      # set by load_evaluator: the backend identity
        self.metadata: dict[str, str] = {}       # checkpoint metadata (held-out accuracy, ...)

    def _prepare(self, clips: torch.Tensor) -> torch.Tensor:
        """clips [B, T, 3, H, W] -> float [B, T, 3, S, S] at the evaluator's frame size S."""
        if clips.dim() != 5 or clips.shape[2] != 3 or clips.shape[1] < 2:
            raise ValueError(f"evaluator expects clips [B, T>=2, 3, H, W], got {tuple(clips.shape)}")
        clips = clips.float()
        s = self.config.frame_size
        if clips.shape[-2:] != (s, s):
            b, t = clips.shape[:2]
            clips = F.interpolate(clips.flatten(0, 1), size=(s, s), mode="bilinear", antialias=True,
                                  align_corners=False).unflatten(0, (b, t))
        return clips

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """clips [B, T, 3, H, W] in [0, 1] -> features [B, D]."""
        x = self._prepare(clips)
        b, t = x.shape[:2]
        a, n = x[:, :-1], x[:, 1:]                              # [B, P, 3, S, S], P = T - 1
        pairs = torch.cat([a, n, n - a], dim=2).flatten(0, 1)   # [B*P, 9, S, S]
        h = self.encoder(pairs)                                 # [B*P, w3, s, s]
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)   # [B*P, 2*w3]
        pooled = pooled.unflatten(0, (b, t - 1)).mean(dim=1)    # [B, 2*w3]
        return F.gelu(self.project(pooled))                     # [B, D]

    def classify(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """features [B, D] -> {attribute: logits [B, classes]}."""
        return {a: head(feats) for a, head in self.heads.items()}

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """clips [B, T, 3, H, W] in [0, 1] -> {attribute: logits [B, classes]}."""
        return self.classify(self.features(clips))

    @torch.no_grad()
    def predict(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """clips -> {attribute: predicted class index [B]}."""
        return {a: logits.argmax(dim=1) for a, logits in self(clips).items()}


def save_evaluator(path: str | Path, net: Evaluator, extra: dict[str, str] | None = None) -> None:
    from adabench.checkpoints import save_modules

    metadata = {"format": FORMAT, "config": json.dumps(net.config.to_dict())}
    metadata.update(extra or {})
    save_modules(path, {"evaluator": net}, metadata)


def weights_sha(path: str | Path) -> str:
    """Short content hash of a weights file: the evaluator's identity in metric backends."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def load_evaluator(path: str | Path | None = None, device: str | torch.device = "cpu") -> Evaluator:
    """The evaluator in eval mode from ``path`` (the shipped weights by default).

    Raises :class:`MissingWeightsError` naming the file and how to train it when the file is
    missing, corrupted or not an evaluator checkpoint. ``net.weights_sha`` is set.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from adabench.checkpoints import read_metadata

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    hint = f"; train it with `{TRAIN_HINT}` and pass DIR/evaluator.safetensors"
    if not path.is_file():
        raise MissingWeightsError(f"evaluator weights {path} not found{hint}")
    try:
        metadata = read_metadata(path)
        if metadata.get("format") != FORMAT:
            raise ValueError(f"format {metadata.get('format')!r}, expected {FORMAT!r}")
        net = Evaluator(EvaluatorConfig.from_dict(json.loads(metadata["config"])))
        tensors = load_file(str(path))
        net.load_state_dict({k[len("evaluator."):]: v for k, v in tensors.items() if k.startswith("evaluator.")})
    except (SafetensorError, ValueError, KeyError, TypeError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MissingWeightsError(f"evaluator weights {path} are corrupted or incompatible ({first}){hint}") from None
    net.weights_sha = weights_sha(path)
    net.metadata = metadata
    return net.to(device).eval()
