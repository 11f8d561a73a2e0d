"""Side-by-side media for the report, from the exact frames a run stored (``videos/HASH.npz``).

Per prompt (first seed that has videos): an animated strip of the first init mode, one
column per model with ground truth first, as a GIF (Pillow, always) and an MP4 (ffmpeg
through imageio-ffmpeg, when it is there); and for every init mode a still contact sheet
of the frames at 1x, 2.4x and 6x the training horizon.

Sizes: rollout frames are noisy, so a GIF costs about a byte per pixel per frame whatever
its scale. The GIF therefore keeps the native pixels (64 colours, one palette) and the page
upscales it with nearest neighbour (``image-rendering: pixelated``) under a label band drawn
at display size; the MP4 is upscaled 2x (each pixel a 2x2 block, so yuv420p's halved chroma
loses nothing) at crf 25. The 16 prompts of ``make bench`` come to a few MB.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adabench.atomic import atomic_path
from adabench.harness.report_plots import HORIZON_MARKS
from adabench.video_io import npz_source

VIDEOS_DIR = "videos"
LABEL_HEIGHT = 14
GAP = 2                 # px between columns at native size (times the scale once upscaled)
BACKGROUND = 255
GIF_COLORS = 64
MP4_SCALE = 2
MP4_QUALITY = 5         # imageio-ffmpeg's 1-10 scale: 5 = crf 25


@dataclass
class Media:
    """The files shown for one prompt and init mode (paths relative to the report); ``gif`` only for
    the animated init mode."""

    prompt: str
    init: str
    seed: int
    models: list[str]
    contact: str
    contact_frames: list[int]
    gif: str | None = None
    labels: str | None = None
    width: int = 0                     # display width of the GIF and its label band, px
    mp4: str | None = None
    missing: list[str] = field(default_factory=list)


def read_frames(path: Path) -> np.ndarray:
    """``frames`` uint8 [T, H, W, 3] of a stored npz (adabench's reader: checked, nothing unpickled)."""
    _, _, frames = npz_source(path)
    return np.stack(list(frames))


def readable(path: Path) -> np.ndarray | None:
    """The stored frames, or None when the file is damaged (the page then lists the model as missing)."""
    try:
        return read_frames(path)
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def stored_videos(folder: Path) -> dict[tuple[str, int, str], dict[str, Path]]:
    """{(prompt, seed, init): {model: npz path}} for every planned job whose exact frames are stored."""
    plan = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
    out: dict[tuple[str, int, str], dict[str, Path]] = {}
    for job in plan["jobs"]:
        path = folder / VIDEOS_DIR / f"{job['hash']}.npz"
        if path.is_file():
            out.setdefault((job["prompt"], int(job["seed"]), job["init"]), {})[job["model"]] = path
    return out


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest neighbour: [T, H, W, 3] -> [T, H*scale, W*scale, 3]."""
    return frames.repeat(scale, axis=1).repeat(scale, axis=2)


def label_band(labels: list[str], tile_width: int, gap: int, height: int = LABEL_HEIGHT) -> np.ndarray:
    """A white band [height, width, 3] with each label drawn over its column, clipped to the column."""
    from PIL import Image, ImageDraw, ImageFont

    width = len(labels) * tile_width + (len(labels) - 1) * gap
    band = Image.new("RGB", (width, height), (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(band)
    font = ImageFont.load_default()
    for i, text in enumerate(labels):
        while text and draw.textlength(text, font=font) > tile_width - 2:
            text = text[:-1]
        draw.text((i * (tile_width + gap) + 1, 1), text, fill=(0, 0, 0), font=font)
    return np.asarray(band)


def side_by_side(videos: list[np.ndarray], scale: int) -> np.ndarray:
    """Columns of upscaled videos [T, H*s, n*W*s + gaps, 3]; shorter videos hold their last frame."""
    length = max(v.shape[0] for v in videos)
    tiles = []
    for v in videos:
        padded = np.concatenate([v, np.repeat(v[-1:], length - v.shape[0], axis=0)]) if v.shape[0] < length else v
        tiles.append(upscale(padded, scale))
    gap = np.full((length, tiles[0].shape[1], GAP * scale, 3), BACKGROUND, dtype=np.uint8)
    parts = [p for tile in tiles for p in (tile, gap)][:-1]
    return np.concatenate(parts, axis=2)


def labelled(videos: list[np.ndarray], labels: list[str], scale: int) -> np.ndarray:
    """A label band over the side-by-side columns ([T, H', W', 3])."""
    body = side_by_side(videos, scale)
    band = label_band(labels, videos[0].shape[2] * scale, GAP * scale)
    return np.concatenate([np.repeat(band[None], body.shape[0], axis=0), body], axis=1)


def contact_sheet(videos: list[np.ndarray], labels: list[str], frames: list[int], scale: int) -> np.ndarray:
    """Still frames: one row per frame index, one column per model, labelled ([H', W', 3])."""
    picked = [np.stack([v[min(i, v.shape[0] - 1)] for i in frames]) for v in videos]     # each [R, H, W, 3]
    parts = [label_band(labels, videos[0].shape[2] * scale, GAP * scale)]
    for r in range(len(frames)):
        parts.append(np.full((GAP * scale, parts[0].shape[1], 3), BACKGROUND, dtype=np.uint8))
        parts.append(side_by_side([p[r:r + 1] for p in picked], scale)[0])
    return np.concatenate(parts, axis=0)


def sheet_frames(length: int, horizons: list[int]) -> list[int]:
    """Frame indices of the contact sheet: the last frame of each horizon mark (1x, 2.4x, 6x) the videos
    reach, else (short runs) the last frame of each of the run's horizons."""
    marks = [f - 1 for f, _ in HORIZON_MARKS if f <= length]
    return marks or [f - 1 for f in sorted(horizons) if f <= length]


def write_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", optimize=True)


def write_gif(frames: np.ndarray, path: Path, fps: float) -> None:
    """Looping GIF (Pillow) with one palette for all frames, so colours hold still.

    The palette is an octree over up to 32 frames spread over the video: median cut leaves rare
    colours (a bright shape in a few frames) 150+ levels off as blotches; the octree keeps every
    pixel within about 50 levels.
    """
    from PIL import Image

    sample = np.concatenate(list(frames[::max(1, len(frames) // 32)]), axis=0)              # [k*H, W, 3]
    palette = Image.fromarray(sample).quantize(colors=GIF_COLORS, method=Image.Quantize.FASTOCTREE)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], loop=0,
                       duration=round(1000 / fps))


def write_mp4(frames: np.ndarray, path: Path, fps: float) -> bool:
    """H.264 MP4 of [T, H, W, 3] uint8 (even sides) via imageio-ffmpeg; False when ffmpeg is not there."""
    try:
        import imageio_ffmpeg
        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return False
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(str(tmp), (frames.shape[2], frames.shape[1]), fps=fps, codec="libx264",
                                             pix_fmt_out="yuv420p", quality=MP4_QUALITY, macro_block_size=1,
                                             ffmpeg_log_level="error")
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame).tobytes())
        writer.close()
    return True


def make_media(folder: Path, out_dir: Path, prefix: str, results: dict[str, Any], scale: int = 3) -> list[Media]:
    """Contact sheets for every prompt and init mode, animated strips for the first init mode; first seed with
    videos; models in results order. Files go to ``out_dir``, named ``prefix/...`` for the page."""
    videos = stored_videos(folder)
    order = list(results["models"])
    inits = list(results["run"].get("init", []))
    fps = float(next((m["describe"]["fps"] for m in results["models"].values()
                      if isinstance(m.get("describe"), dict) and m["describe"].get("fps")), 16.0))
    media = []
    for i, prompt in enumerate(results["run"].get("prompts", [])):
        for init in inits:
            seeds = sorted(s for (p, s, n) in videos if p == prompt and n == init)
            if not seeds:
                continue
            stored = {n: readable(path) for n, path in videos[(prompt, seeds[0], init)].items()}
            names = [n for n in order if stored.get(n) is not None]
            if not names:
                continue
            frames = [stored[n] for n in names]
            stem = f"p{i:02d}-{init}-s{seeds[0]}"
            marks = sheet_frames(max(v.shape[0] for v in frames), results["run"]["frames"])
            write_png(contact_sheet(frames, names, marks, scale), out_dir / f"{stem}-sheet.png")
            item = Media(prompt, init, seeds[0], names, f"{prefix}/{stem}-sheet.png", [m + 1 for m in marks],
                         missing=[n for n in order if n not in names])
            if init == inits[0]:
                native = side_by_side(frames, 1)                                       # [T, H, W', 3]
                write_gif(native, out_dir / f"{stem}.gif", fps)
                write_png(label_band(names, frames[0].shape[2] * scale, GAP * scale), out_dir / f"{stem}-labels.png")
                item.gif, item.labels = f"{prefix}/{stem}.gif", f"{prefix}/{stem}-labels.png"
                item.width = native.shape[2] * scale
                if write_mp4(labelled(frames, names, MP4_SCALE), out_dir / f"{stem}.mp4", fps):
                    item.mp4 = f"{prefix}/{stem}.mp4"
            media.append(item)
    return media
