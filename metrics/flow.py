"""Optical-flow backends behind one interface: ``backend(prev, next) -> flow``.

Every backend takes two batches of RGB frames ``[N, 3, H, W]`` float in [0, 1] and returns
the flow from ``prev`` to ``next`` as ``[N, 2, H, W]`` float32 in pixels, channel 0 = x
(right), channel 1 = y (down): a pixel at ``p`` in ``prev`` is found at ``p + flow`` in
``next``.

Backends:

- ``dis`` (default): OpenCV DIS, preset MEDIUM with patch 8, stride 3 and finest scale 0
  (full resolution). Chosen for tiny frames: at 32x32 a patch of 8 with stride 3 still
  gives ~100 overlapping patches, and working at full resolution keeps sub-pixel motion;
  on blurred-noise textures it reads translations of 0.5-5 px/frame within 1 % at 32x32
  and 64x64 and costs ~13 ms per 256x256 pair on one CPU core.
- ``farneback``: OpenCV Farneback (pyramid 0.5, 3 levels, window 15, 3 iterations, poly 5/1.2).
- ``raft-large`` / ``raft-small`` (``raft`` = ``raft-large``, VBench's choice): torchvision
  RAFT. Weights are the chairs+things ``C_T_V2`` checkpoints (VBench uses RAFT "things"),
  taken only from the torch hub cache (``torch.hub.get_dir()/checkpoints``) or from a local
  file (``raft:weights=/path.pth`` or ``.safetensors``); nothing is ever downloaded.
  Frames are padded (replicate, centred like VBench's InputPadder) to multiples of 8 and
  to at least 128 px, which RAFT's correlation pyramid needs; the flow is cropped back.

Classical backends read lower than RAFT on real video; numbers from different backends
must never be mixed (metrics carry the backend name, e.g. ``flow=dis``).
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from adabench.errors import MissingWeightsError, UserError

FLOW_BACKENDS = ("dis", "farneback", "raft-small", "raft-large")
ALIASES = {"raft": "raft-large"}


class FlowBackend(ABC):
    """Optical flow between two batches of frames; ``name`` identifies the numbers it makes."""

    name: str
    params: tuple = ()   # everything besides the name that changes the flow it computes

    @property
    def key(self) -> tuple:
        """Identity of the flow this backend computes: equal keys give equal flow for equal frames."""
        return (self.name, *self.params)

    @abstractmethod
    def __call__(self, prev: torch.Tensor, next: torch.Tensor) -> torch.Tensor:
        """prev, next: [N, 3, H, W] in [0, 1] -> flow [N, 2, H, W] in pixels (x, y)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def check_pair(prev: torch.Tensor, next: torch.Tensor) -> None:
    if prev.shape != next.shape or prev.ndim != 4 or prev.shape[1] != 3:
        raise ValueError(f"flow needs two [N, 3, H, W] batches of one shape, got {tuple(prev.shape)} "
                         f"and {tuple(next.shape)}")


def to_gray_uint8(frames: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] float in [0, 1] -> [N, H, W] uint8 luma (BT.601 weights, as OpenCV).

    numpy, not torch: tiny per-chunk tensors pay more for torch's thread pool than they gain.
    """
    x = frames.detach().float().cpu().numpy()                                          # [N, 3, H, W]
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]                          # [N, H, W]
    return np.rint(np.clip(luma, 0.0, 1.0) * 255.0).astype(np.uint8)


class OpenCVFlow(FlowBackend):
    """Shared loop of the classical backends: gray uint8 pairs, one OpenCV call each."""

    def __call__(self, prev: torch.Tensor, next: torch.Tensor) -> torch.Tensor:
        import cv2

        check_pair(prev, next)
        a, b = to_gray_uint8(prev), to_gray_uint8(next)                                # [N, H, W]
        try:
            flows = [self.pair(a[i], b[i]) for i in range(a.shape[0])]                 # N x [H, W, 2]
        except cv2.error as exc:                    # e.g. frames too small for DIS's patches
            raise UserError(f"{self.name} flow cannot run on {prev.shape[-1]}x{prev.shape[-2]} frames "
                            f"({opencv_reason(exc)}); accepted: larger frames, or another --flow backend") from None
        if not flows:
            return torch.zeros(0, 2, *prev.shape[-2:])
        return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).float().contiguous()  # [N, 2, H, W]

    @abstractmethod
    def pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a, b: [H, W] uint8 -> [H, W, 2] float32."""


def opencv_reason(exc: Exception) -> str:
    """The human part of an OpenCV error: ``... error: (-201:Incorrect size) The input ... in function 'calc'``."""
    text = " ".join(str(exc).split())
    match = re.search(r"error: \(-?\d+:[^)]*\) (.*?)(?: in function .*)?$", text)
    return (match.group(1) if match else text)[:200]


class DISFlow(OpenCVFlow):
    name = "dis"

    def __init__(self, preset: str = "medium", patch_size: int = 8, patch_stride: int = 3,
                 finest_scale: int = 0) -> None:
        import cv2

        presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                   "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
        if preset not in presets:
            raise UserError(f"unknown DIS preset {preset!r}; accepted: {', '.join(presets)}")
        self.params = (preset, int(patch_size), int(patch_stride), int(finest_scale))
        self.dis = cv2.DISOpticalFlow_create(presets[preset])
        self.dis.setPatchSize(int(patch_size))
        self.dis.setPatchStride(int(patch_stride))
        self.dis.setFinestScale(int(finest_scale))

    def pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.dis.calc(a, b, None)


class FarnebackFlow(OpenCVFlow):
    name = "farneback"

    def __init__(self, pyr_scale: float = 0.5, levels: int = 3, winsize: int = 15, iterations: int = 3,
                 poly_n: int = 5, poly_sigma: float = 1.2) -> None:
        self.params = (float(pyr_scale), int(levels), int(winsize), int(iterations), int(poly_n), float(poly_sigma))

    def pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.calcOpticalFlowFarneback(a, b, None, *self.params, 0)


class RAFTFlow(FlowBackend):
    """torchvision RAFT; ``model=`` injects a ready network (tests use a random one)."""

    MIN_SIDE = 128   # RAFT's 4-level correlation pyramid needs feature maps >= 16 = 128 px / 8

    def __init__(self, size: str = "large", weights: str | None = None, iters: int = 20,
                 device: str | None = None, model: torch.nn.Module | None = None) -> None:
        if size not in ("small", "large"):
            raise UserError(f"unknown RAFT size {size!r}; accepted: small, large")
        self.name = f"raft-{size}"
        self.iters = int(iters)
        self.device = torch.device(device or "cpu")
        self.model = (model if model is not None else load_raft(size, weights)).to(self.device).eval()
        self.params = (str(weights) if model is None else f"model@{id(self.model)}", self.iters, str(self.device))

    @torch.no_grad()
    def __call__(self, prev: torch.Tensor, next: torch.Tensor) -> torch.Tensor:
        check_pair(prev, next)
        h, w = prev.shape[-2:]
        pad = raft_padding(h, w, self.MIN_SIDE)                                        # (left, right, top, bottom)
        a = F.pad(prev.float().to(self.device) * 2 - 1, pad, mode="replicate")        # [N, 3, H', W'] in [-1, 1]
        b = F.pad(next.float().to(self.device) * 2 - 1, pad, mode="replicate")
        flow = self.model(a, b, num_flow_updates=self.iters)[-1]                      # [N, 2, H', W']
        return flow[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w].float().cpu().contiguous()  # [N, 2, H, W]


def raft_padding(h: int, w: int, min_side: int) -> tuple[int, int, int, int]:
    """Centred padding to a multiple of 8 and at least ``min_side`` (VBench's InputPadder, sintel mode)."""
    ht = max(-(-h // 8) * 8, min_side) - h
    wd = max(-(-w // 8) * 8, min_side) - w
    return wd // 2, wd - wd // 2, ht // 2, ht - ht // 2


def raft_cache_file(size: str) -> str:
    """Where torchvision's usual weight mechanism keeps the C_T_V2 checkpoint (may not exist)."""
    from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights

    enum = Raft_Large_Weights.C_T_V2 if size == "large" else Raft_Small_Weights.C_T_V2
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.url))


def load_raft(size: str, weights: str | None) -> torch.nn.Module:
    """Build RAFT and load weights from ``weights`` (a local file) or the torch hub cache; never download."""
    from torchvision.models.optical_flow import raft_large, raft_small

    path = str(weights) if weights else raft_cache_file(size)
    if not os.path.isfile(path):
        where = f"weights file {path!r} not found" if weights else f"RAFT-{size} weights not found in the torch cache"
        raise MissingWeightsError(f"{where}: pass a local file with --flow raft-{size}:weights=/path/to/raft.pth "
                                  f"(.pth or .safetensors), or put torchvision's C_T_V2 checkpoint at {raft_cache_file(size)}")
    model = (raft_large if size == "large" else raft_small)(weights=None)
    accepted = ("accepted: a state dict of tensors saved with torch.save (.pth) or a .safetensors file, "
                f"such as torchvision's RAFT-{size} C_T_V2 checkpoint")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the user's file; torch's advice to unpickle it is not ours to give
        raise UserError(f"cannot load RAFT-{size} weights from {path}: not a readable checkpoint of plain tensors "
                        f"({type(exc).__name__}; pickled Python objects are never loaded); {accepted}") from None
    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise UserError(f"cannot load RAFT-{size} weights from {path}: {mismatch}; {accepted}")
    model.load_state_dict(state)
    return model


def state_dict_mismatch(expected: dict[str, torch.Tensor], state: Any) -> str:
    """What keeps ``state`` from loading into a model whose state dict is ``expected`` ('' when nothing)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return f"it holds a {type(state).__name__}, not a state dict of tensors"
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    problems = [f"{len(missing)} tensor(s) missing (e.g. {missing[0]})" if missing else "",
                f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                f"wrong shape: {wrong[0]}" + (f" and {len(wrong) - 1} more" if len(wrong) > 1 else "") if wrong else ""]
    problems = [p for p in problems if p]
    return f"its tensors do not match the network: {'; '.join(problems)}" if problems else ""


def get_flow_backend(spec: str | FlowBackend = "dis", **kwargs: Any) -> FlowBackend:
    """``"dis"``, ``"farneback"``, ``"raft"``, ``"raft-small:weights=/p.pth,iters=12"`` -> a backend.

    An already built backend passes through (so metrics can share one RAFT network).
    """
    if isinstance(spec, FlowBackend):
        return spec
    from adabench.registry import parse_spec

    name, spec_kwargs = parse_spec(str(spec))
    name = ALIASES.get(name.lower(), name.lower())
    kwargs = {**kwargs, **spec_kwargs}
    if name not in FLOW_BACKENDS:
        raise UserError(f"unknown flow backend {spec!r}; accepted: {', '.join(FLOW_BACKENDS)} (raft = raft-large)")
    if name.startswith("raft-"):
        factory: Any = lambda **kw: RAFTFlow(size=name.split("-")[1], **kw)  # noqa: E731
    else:
        factory = DISFlow if name == "dis" else FarnebackFlow
        kwargs.pop("device", None)   # classical backends run on the CPU
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise UserError(f"bad option for flow backend {name!r}: {exc}") from None
