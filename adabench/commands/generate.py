"""``adabench generate``: stream one rollout of a model to a video file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import torch

from adabench.errors import UserError
from adabench.generator import FRAMES_ACCEPTED, MAX_FRAMES

MAX_SEED = 2 ** 63 - 1          # as `compare --seeds`: one seed names one job in both commands
INIT_FORMATS = "png, jpg, bmp, webp, tiff; of a gif its first frame"


def int_in(low: int, high: int | None, accepted: str) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high`` (no upper bound: None), else one line naming
    what is ``accepted``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"invalid value {text[:40]!r}: accepted: {accepted}")
        return value
    return parse


positive_int = int_in(1, None, "an integer >= 1")
frame_count = int_in(1, MAX_FRAMES, FRAMES_ACCEPTED)
seed_int = int_in(0, MAX_SEED, "an integer from 0 to 2^63-1")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("generate", help="stream one rollout of a model to a video file",
                              description="Stream one rollout to a video file (mp4 or gif, by suffix).")
    p.add_argument("--model", required=True, help="registered model, e.g. adastate or ff-anchor:sink=3,window=9")
    p.add_argument("--prompt", required=True, help="e.g. 'a fast pan left over a desert with red circles'")
    p.add_argument("--frames", type=frame_count, required=True, help="number of output frames (1 to 100000)")
    p.add_argument("--seed", type=seed_int, default=0, help="noise and world seed, 0 to 2^63-1 (default 0)")
    p.add_argument("--out", required=True, help="output video file (.mp4 or .gif)")
    p.add_argument("--raw", action="store_true", help="also write the exact frames to OUT with suffix .npz")
    p.add_argument("--json", action="store_true", help="print per-chunk timings and cache sizes as JSON on stdout")
    p.add_argument("--init", default="none",
                   help="start: 'none' (text-to-video), 'gt' (PanWorld ground-truth first frame) or an image file "
                        f"({INIT_FORMATS}), converted to RGB")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    return p


def load_init(init: str, prompt: str, seed: int, frame_size: int) -> torch.Tensor | None:
    """First frames [k, 3, H, W] in [0, 1] for image-to-video, or None for text-to-video."""
    if init == "none":
        return None
    if init == "gt":
        from adabench.world.panworld import render_clip
        from adabench.world.prompts import parse_prompt
        return render_clip(parse_prompt(prompt), seed, 1, size=frame_size)
    path = Path(init)
    try:
        regular = path.is_file()
    except OSError as exc:                           # a name too long for the file system, a loop of links
        raise UserError(f"--init {init[:80]!r}: {exc.strerror or exc}; accepted: 'none', 'gt' or an image file "
                        f"({INIT_FORMATS})") from None
    if not regular:
        raise UserError(f"--init {init!r} is neither 'none', 'gt' nor an existing image file ({INIT_FORMATS})")
    frame = read_image(path, frame_size)                                        # [1, 3, h, w]
    if frame.shape[-1] != frame_size or frame.shape[-2] != frame_size:
        frame = torch.nn.functional.interpolate(frame, size=(frame_size, frame_size), mode="area")
    return frame


def read_image(path: Path, frame_size: int) -> torch.Tensor:
    """Any still image Pillow reads as RGB [1, 3, h, w] in [0, 1]: grey (8 or 16 bit, scaled, not clipped),
    1-bit, palette, CMYK; alpha dropped; an animation's first frame. Images far larger than the
    frame are box-reduced first (memory stays bounded). Anything else is a UserError."""
    import warnings

    import numpy as np
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)      # a one-line error, not a warning
            with Image.open(path) as image:
                image.seek(0)                                                   # an animation: its first frame
                scale = 1.0 if image.mode == "F" else 65535.0 if image.mode.startswith("I") else 255.0
                image = image.convert("F" if scale != 255.0 else "RGB")        # 16/32-bit grey keeps its range
                factor = min(image.size) // (2 * frame_size)
                if factor >= 2:
                    image = image.reduce(factor)
                data = np.clip(np.asarray(image, dtype=np.float32) / scale, 0.0, 1.0)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the user's file
        raise UserError(f"--init {path}: cannot read it as an image ({type(exc).__name__}); accepted: 'none', 'gt' "
                        f"or an image file ({INIT_FORMATS})") from None
    if data.ndim == 2:
        data = np.repeat(data[..., None], 3, axis=2)                            # grey -> RGB
    return torch.from_numpy(np.ascontiguousarray(data)).permute(2, 0, 1)[None]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from adabench.models import resolve_device
    from adabench.registry import GENERATORS
    from adabench.video_io import VideoWriter

    resolve_device(args.device, "--device")
    generator = GENERATORS.build(args.model, device=args.device)
    if hasattr(generator, "check_prompt"):
        generator.check_prompt(args.prompt)
    init = load_init(args.init, args.prompt, args.seed, generator.frame_size)
    info = generator.describe()
    chunks = []
    with VideoWriter(args.out, fps=generator.fps, raw=args.raw) as writer:     # fails here on an unwritable path
        print(f"adabench: {args.model} -> {args.out} ({args.frames} frames, seed {args.seed}, weights: "
              f"{info.get('weights', 'n/a')})", file=sys.stderr)
        with tqdm(total=args.frames, unit="frame", file=sys.stderr, disable=None) as bar:
            for chunk in generator.stream(args.prompt, args.seed, args.frames, init=init):
                writer.write(chunk.frames)
                bar.update(chunk.num_frames)
                chunks.append({"index": chunk.index, "start_frame": chunk.start_frame, "frames": chunk.num_frames,
                               "timings_s": chunk.timings, "cache_frames": chunk.cache_frames,
                               "cache_bytes": chunk.cache_bytes})
    if args.json:
        json.dump({"model": info, "prompt": args.prompt, "seed": args.seed, "frames": args.frames,
                   "init": args.init, "out": args.out, "chunks": chunks}, sys.stdout, indent=1)
        print()
    return 0
