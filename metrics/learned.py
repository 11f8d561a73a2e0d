"""Metrics that need pretrained networks: CLIP consistency (open_clip) and LPIPS (lpips).

Weights are never downloaded. They come from an explicit ``weights`` path, an environment
variable, or the framework's usual cache; when none is there the constructor raises
:class:`MissingWeightsError` with one line saying how to provide them. Checkpoints are read
with safetensors or ``torch.load(weights_only=True)``, never unpickled.

Both metrics also accept an injected ``network`` so that tests (and third parties) can run
them with any model: for CLIP an open_clip model (its real ``encode_image`` path is used,
with tensor preprocessing) or any callable frames [N, 3, H, W] in [0, 1] -> features [N, D];
for LPIPS an ``lpips.LPIPS`` module (called with ``normalize=True``) or any callable
``(frames, refs)`` both [N, 3, H, W] in [0, 1] -> distances [N].
"""

from __future__ import annotations

import glob
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from adabench.errors import MissingWeightsError, UserError
from adabench.metrics.base import MetricInfo, MetricResult
from adabench.metrics.drift import PerFrameMetric, consistency_terms, window_means
from adabench.metrics.frame_measures import first_refs, prev_refs

CLIP_ENV = "ADABENCH_CLIP_WEIGHTS"
LPIPS_ENV = "ADABENCH_LPIPS_WEIGHTS"
_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

FeatureFn = Callable[[torch.Tensor], torch.Tensor]
DistanceFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- weights --------------------------------------------------------------------------------

def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A tensor state dict from .safetensors or a torch file (weights_only: no arbitrary objects)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd: Any = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, TorchScript archive, pickled objects
        raise UserError(f"cannot read weights {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise UserError(f"weights {path} hold a {type(sd).__name__}, expected a state dict of tensors")
    return sd


def _existing(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingWeightsError(f"{what} weights file not found: {p}")
    return p


def _hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"


def cached_clip_weights(model: str) -> Path | None:
    """An open_clip checkpoint for ``model`` already in the Hugging Face cache, if any."""
    import open_clip

    for tag in open_clip.list_pretrained_tags_by_model(model):
        hub = open_clip.get_pretrained_cfg(model, tag).get("hf_hub", "")
        parts = hub.strip("/").split("/")
        if len(parts) < 2:
            continue
        repo_dir = _hf_hub_cache() / f"models--{parts[0]}--{parts[1]}" / "snapshots"
        names = parts[2:] or list(_HF_FILES)
        for name in names:
            found = sorted(glob.glob(str(repo_dir / "*" / name)))
            if found:
                return Path(found[-1])
    return None


def find_clip_weights(weights: str | None, model: str) -> Path:
    """Explicit path, else $ADABENCH_CLIP_WEIGHTS, else the HF cache; else MissingWeightsError."""
    if weights:
        return _existing(weights, "CLIP")
    if os.environ.get(CLIP_ENV):
        return _existing(os.environ[CLIP_ENV], f"CLIP (${CLIP_ENV})")
    cached = cached_clip_weights(model)
    if cached is not None:
        return cached
    raise MissingWeightsError(
        f"no local CLIP weights for {model}: pass clip-consistency:weights=PATH or set ${CLIP_ENV} "
        f"to an open_clip checkpoint (.safetensors or state-dict .bin/.pt); adabench never downloads")


def _lpips_trunk_file(net: str) -> str:
    """File name torchvision gives the ImageNet trunk ``net`` in its hub cache."""
    from torchvision import models as tv

    enums = {"alex": tv.AlexNet_Weights, "vgg": tv.VGG16_Weights, "squeeze": tv.SqueezeNet1_1_Weights}
    return os.path.basename(enums[net].IMAGENET1K_V1.url)


def find_lpips_trunk(weights: str | None, net: str) -> Path:
    """Explicit path, else $ADABENCH_LPIPS_WEIGHTS, else torch's hub cache; else MissingWeightsError."""
    if weights:
        return _existing(weights, f"LPIPS {net} trunk")
    if os.environ.get(LPIPS_ENV):
        return _existing(os.environ[LPIPS_ENV], f"LPIPS {net} trunk (${LPIPS_ENV})")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / _lpips_trunk_file(net)
    if cached.is_file():
        return cached
    raise MissingWeightsError(
        f"no local LPIPS {net} trunk weights: pass lpips:weights=PATH or set ${LPIPS_ENV} to torchvision's "
        f"{_lpips_trunk_file(net)}, or put it in {cached.parent}; adabench never downloads")


# --- CLIP -----------------------------------------------------------------------------------

class ClipImageEncoder:
    """An open_clip model as frames [N, 3, H, W] in [0, 1] -> image features [N, D].

    Preprocessing on tensors, as open_clip's eval transform: resize the shorter side to the
    model's input size (bicubic, antialiased), centre crop, normalise with the model's mean/std.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        import open_clip
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        self.model = model.eval()
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg.get("size", 224)
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = torch.tensor(cfg.get("mean") or OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std") or OPENAI_DATASET_STD).view(1, 3, 1, 1)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> normalised [N, 3, h, w] at the model's input size."""
        h, w = frames.shape[-2:]
        th, tw = self.size
        scale = max(th / h, tw / w)
        rh, rw = max(th, round(h * scale)), max(tw, round(w * scale))
        x = F.interpolate(frames, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (rh - th) // 2, (rw - tw) // 2
        x = x[..., top:top + th, left:left + tw].clamp(0, 1)
        return (x - self.mean.to(x)) / self.std.to(x)

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model.encode_image(self.preprocess(frames.to(device).float())).float()


def load_clip(model: str, weights: Path, device: str = "cpu") -> torch.nn.Module:
    """open_clip ``model`` with the local checkpoint ``weights`` (no tag, so no download)."""
    import open_clip

    if model not in open_clip.list_models():
        raise UserError(f"unknown open_clip model {model!r}; e.g. ViT-B-32, ViT-B-16, ViT-L-14")
    clip, _, _ = open_clip.create_model_and_transforms(model, pretrained=str(weights), device=device,
                                                       weights_only=True)
    return clip.eval()


def _batched(fn: Callable[..., torch.Tensor], batch_size: int, *tensors: torch.Tensor) -> torch.Tensor:
    """Apply ``fn`` to aligned slices of ``tensors`` (dim 0) and concatenate the results on the CPU."""
    n = tensors[0].shape[0]
    outs = [fn(*(t[i:i + batch_size] for t in tensors)).detach().float().cpu() for i in range(0, n, batch_size)]
    return torch.cat(outs, dim=0)


class ClipConsistency(PerFrameMetric):
    """VBench-style consistency on CLIP image features (VBench uses CLIP ViT-B/32 for background).

    Scalar ``clip_consistency`` = :func:`~adabench.metrics.drift.vbench_consistency` of
    the video's frame features; series ``clip_consistency``: mean per-frame term per window
    (frame 0, its own first and previous frame, counts 1 in the first window only).
    """

    needs = frozenset({"frames", "fps", "device"})

    def __init__(self, weights: str | None = None, model: str = "ViT-B-32", fps: float = 16.0,
                 window_seconds: float = 1.0, device: str = "cpu", batch_size: int = 32,
                 network: FeatureFn | torch.nn.Module | None = None) -> None:
        super().__init__(["clip_consistency"], fps, window_seconds)
        self.batch_size = max(1, int(batch_size))
        if network is None:
            self.backend = f"clip={model}"
            network = load_clip(model, find_clip_weights(weights, model), device)
        else:
            self.backend = f"clip=custom:{type(network).__name__}"
        self.encoder: FeatureFn = ClipImageEncoder(network) if hasattr(network, "encode_image") else network

    @property
    def info(self) -> MetricInfo:
        return MetricInfo("clip_consistency", "1", "higher", self.backend,
                          "mean of 0.5 [cos+(f_{i-1}, f_i) + cos+(f_0, f_i)] over CLIP image features")

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        return _batched(self.encoder, self.batch_size, frames)                     # [F, D]

    def score(self, items: torch.Tensor, first: torch.Tensor | None,
              prev: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"clip_consistency": consistency_terms(items, first, prev)}

    def compute(self) -> MetricResult:
        v = self.values("clip_consistency")
        scalar = math.nan if not v else (1.0 if len(v) < 2 else sum(v[1:]) / (len(v) - 1))
        info = self.info
        return MetricResult({"clip_consistency": scalar},
                            {"clip_consistency": window_means(v, self.window_frames)},
                            {"clip_consistency": info})


# --- LPIPS ----------------------------------------------------------------------------------

def load_lpips(net: str, trunk: Path, lin: Path | None = None, version: str = "0.1") -> torch.nn.Module:
    """``lpips.LPIPS`` built without fetching anything, then filled from local files.

    The trunk comes from torchvision's ImageNet checkpoint (``features.<i>.*`` keys, mapped
    onto lpips' ``slice<k>.<i>.*``); the linear layers from ``lin``, by default the file the
    lpips package ships (``lpips/weights/v<version>/<net>.pth``).
    """
    import lpips

    with warnings.catch_warnings():          # torchvision's deprecation of pretrained=
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(pretrained=False, net=net, version=version, pnet_rand=True, verbose=False)
    trunk_sd = load_state_dict(trunk)
    mapped = {}
    for name in model.net.state_dict():      # "slice1.0.weight" <- "features.0.weight"
        key = "features." + name.split(".", 1)[1]
        if key not in trunk_sd:
            raise UserError(f"{trunk} is not a torchvision {net} checkpoint: missing {key!r}")
        mapped[name] = trunk_sd[key]
    model.net.load_state_dict(mapped)
    lin = lin or Path(lpips.__file__).parent / "weights" / f"v{version}" / f"{net}.pth"
    lin_sd = load_state_dict(_existing(lin, f"LPIPS {net} linear-layer"))
    # lpips registers each linear layer twice (lin<k> and lins.<k>); its files name lin<k>
    missing = [k for k in model.state_dict() if re.match(r"lin\d+\.", k) and k not in lin_sd]
    if missing:
        raise UserError(f"{lin} is not an LPIPS {net} linear-layer file: missing {missing[0]!r}")
    model.load_state_dict(lin_sd, strict=False)
    return model.eval()


class _LpipsCall:
    """An ``lpips.LPIPS`` module as (frames, refs) in [0, 1] -> distances [N]."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model(frames.to(device), refs.to(device), normalize=True).reshape(-1)


class LpipsDistance(PerFrameMetric):
    """LPIPS distance of every frame to the first frame and to the previous frame.

    Series ``lpips_first`` / ``lpips_prev`` (mean per window); scalars ``lpips_first_mean``,
    ``lpips_first_end`` (mean over the last window) and ``lpips_prev_mean`` (frames 1..T-1;
    frame 0 is its own predecessor and reads 0). Direction "none": motion raises both.
    """

    needs = frozenset({"frames", "fps", "device"})

    def __init__(self, weights: str | None = None, net: str = "alex", lin_weights: str | None = None,
                 fps: float = 16.0, window_seconds: float = 1.0, device: str = "cpu", batch_size: int = 16,
                 network: DistanceFn | torch.nn.Module | None = None) -> None:
        super().__init__(["lpips_first", "lpips_prev"], fps, window_seconds)
        self.batch_size = max(1, int(batch_size))
        if net not in ("alex", "vgg", "squeeze"):
            raise UserError(f"unknown LPIPS net {net!r}; known: alex, vgg, squeeze")
        if network is None:
            self.backend = f"lpips={net}"
            lin = Path(lin_weights) if lin_weights else None
            network = load_lpips(net, find_lpips_trunk(weights, net), lin).to(device)
        else:
            self.backend = f"lpips=custom:{type(network).__name__}"
        import lpips

        self.distance: DistanceFn = _LpipsCall(network) if isinstance(network, lpips.LPIPS) else network

    @property
    def info(self) -> MetricInfo:
        return MetricInfo("lpips_first", "1", "none", self.backend, "LPIPS distance to the first frame")

    def score(self, items: torch.Tensor, first: torch.Tensor | None,
              prev: torch.Tensor | None) -> dict[str, torch.Tensor]:
        frames = items.float()                                                      # [F, 3, H, W]
        return {
            "lpips_first": _batched(self.distance, self.batch_size, frames, first_refs(frames, first)).reshape(-1),
            "lpips_prev": _batched(self.distance, self.batch_size, frames, prev_refs(frames, prev)).reshape(-1),
        }

    def compute(self) -> MetricResult:
        first, prev = self.values("lpips_first"), self.values("lpips_prev")
        tail = first[-self.window_frames:]
        scalars = {
            "lpips_first_mean": sum(first) / len(first) if first else math.nan,
            "lpips_first_end": sum(tail) / len(tail) if tail else math.nan,
            "lpips_prev_mean": sum(prev[1:]) / (len(prev) - 1) if len(prev) > 1 else math.nan,
        }
        series = {"lpips_first": window_means(first, self.window_frames),
                  "lpips_prev": window_means(prev, self.window_frames)}
        descr = {"lpips_first_mean": "mean LPIPS to the first frame",
                 "lpips_first_end": "mean LPIPS to the first frame over the last window",
                 "lpips_prev_mean": "mean LPIPS to the previous frame",
                 "lpips_first": "LPIPS to the first frame per window",
                 "lpips_prev": "LPIPS to the previous frame per window"}
        info = {k: MetricInfo(k, "1", "none", self.backend, d) for k, d in descr.items()}
        return MetricResult(scalars, series, info)
