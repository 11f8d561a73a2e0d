"""``adabench generate``: stream one rollout of a model to a video file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from adabench.errors import UserError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: accepted: an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: accepted: an integer >= 1")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("generate", help="stream one rollout of a model to a video file",
                              description="Stream one rollout to a video file (mp4 or gif, by suffix).")
    p.add_argument("--model", required=True, help="registered model, e.g. adastate or ff-anchor:sink=3,window=9")
    p.add_argument("--prompt", required=True, help="e.g. 'a fast pan left over a desert with red circles'")
    p.add_argument("--frames", type=positive_int, required=True, help="number of output frames (>= 1)")
    p.add_argument("--seed", type=int, default=0, help="noise and world seed (default 0)")
    p.add_argument("--out", required=True, help="output video file (.mp4 or .gif)")
    p.add_argument("--raw", action="store_true", help="also write the exact frames to OUT with suffix .npz")
    p.add_argument("--json", action="store_true", help="print per-chunk timings and cache sizes as JSON on stdout")
    p.add_argument("--init", default="none",
                   help="start: 'none' (text-to-video), 'gt' (PanWorld ground-truth first frame) or an image file")
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
    if not path.is_file():
        raise UserError(f"--init {init!r} is neither 'none', 'gt' nor an existing image file")
    import imageio.v3 as iio
    try:
        image = iio.imread(path)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the user's file
        raise UserError(f"--init {init}: cannot read image ({type(exc).__name__}); accepted: png, jpg, bmp") from None
    frame = torch.from_numpy(image[..., :3].copy()).permute(2, 0, 1).float()[None] / 255.0   # [1, 3, h, w]
    if image.ndim != 3:
        frame = torch.from_numpy(image.copy()).float()[None, None].expand(1, 3, -1, -1) / 255.0
    if frame.shape[-1] != frame_size or frame.shape[-2] != frame_size:
        frame = torch.nn.functional.interpolate(frame, size=(frame_size, frame_size), mode="area")
    return frame


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from adabench.registry import GENERATORS
    from adabench.video_io import VideoWriter

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
