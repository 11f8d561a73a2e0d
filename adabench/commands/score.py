"""``adabench score``: stream video files made anywhere through the streaming metrics.

Each PATH is a video file (mp4, gif, npz, ...), a folder of frames (one video) or a folder
of video files (each scored). Videos are read in chunks and fed to one accumulator per
metric, so memory is bounded by a chunk, not the video, and by the frame size only up to a
bound: a chunk holds at most 8.4 M pixels (16 frames of 960x540, 1 of 4K), and flow and SSIM run
on a copy scaled down to 512 px on the short side when frames are larger (area
interpolation; :mod:`adabench.metrics.resolution`). Each record says at what resolution each
measure ran (``info[name]["resolution"]``, [H, W]).

One file never costs the others: whatever goes wrong with a file (unreadable, a FIFO or
device, too small for a metric, a frame rate outside 0.1..1000 fps, an unexpected failure
inside a metric) becomes a one-line error for that file, the others are scored and the JSON
is written (atomically) with every record and error. A file that holds fewer frames than it
declares (a truncated mp4) is scored on the frames it has, and its record and stderr say so
(``warnings``). Exit code 1 when some file failed, 2 for usage errors (unknown metric or flow
backend, bad option value, missing weights), 0 otherwise.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from adabench.atomic import write_json
from adabench.errors import UserError

DEFAULT_METRICS = ("flow", "dynamic-degree", "retention", "drift", "lockin")
BOOL_SCALARS = ("dynamic",)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("score", help="score video files or folders with the streaming metrics",
                              description="Score video files (mp4, gif, npz, ...), folders of frames, or folders "
                                          "of videos with the streaming metrics.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="video file, folder of frames, or folder of videos")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help="comma list of registered metrics, each optionally name:key=value "
                        f"(default: {','.join(DEFAULT_METRICS)}); see 'adabench list'")
    p.add_argument("--flow", default="dis",
                   help="optical-flow backend: dis (default), farneback, raft (= raft-large), raft-small; "
                        "RAFT weights from the torch cache or raft:weights=/path.pth")
    p.add_argument("--fps", type=frame_rate, default=None,
                   help="frame rate for frame folders and files without one (default 16); overrides the file's; "
                        "accepted: 0.1 to 1000")
    p.add_argument("--json", metavar="FILE", help="write per-video scalars, series and errors as JSON")
    p.add_argument("--chunk-frames", type=int, default=16,
                   help="frames read per chunk (default 16; fewer for frames above 960x540, so that a chunk "
                        "holds at most 8.4 M pixels)")
    p.add_argument("--device", default="cpu", help="device for learned flow (RAFT): cpu, cuda, cuda:N")
    return p


def frame_rate(text: str) -> float:
    """``--fps``: a number within the frame rates a video can have (0.1..1000 fps)."""
    from adabench.video_io import MAX_FPS, MIN_FPS

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not MIN_FPS <= value <= MAX_FPS:                       # also refuses NaN
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: accepted: a frame rate from {MIN_FPS:g} "
                                         f"to {MAX_FPS:g} fps")
    return value


def split_metric_list(text: str) -> list[str]:
    """``"flow:backend=dis,window=2,retention"`` -> ``["flow:backend=dis,window=2", "retention"]``.

    Commas separate metrics and also a spec's arguments: a piece ``key=value`` without a
    ``:`` continues the previous spec.
    """
    specs: list[str] = []
    for piece in (p.strip() for p in text.replace(";", ",").split(",")):
        if not piece:
            continue
        if "=" in piece and ":" not in piece.split("=", 1)[0] and specs:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    if not specs:
        raise UserError("--metrics is empty; accepted: a comma list of names from 'adabench list'")
    return specs


def check_metrics(specs: list[str], defaults: dict[str, Any], explicit: bool) -> list[str]:
    """Build each metric once so bad names / options fail before any video is read.

    Without ``--metrics``, a default metric whose module is not installed is skipped with a note.
    """
    from adabench.registry import METRICS, parse_spec

    usable = []
    for spec in specs:
        name = parse_spec(spec)[0]
        try:
            METRICS.build(spec, **defaults)
        except ModuleNotFoundError as exc:
            module = str(METRICS.entry(name).target).partition(":")[0]
            if explicit or exc.name is None or not module.startswith(exc.name):
                raise UserError(f"metric {name!r} is not available: module {exc.name!r} is missing") from None
            print(f"adabench: note: skipping metric {name!r} ({module} is not installed)", file=sys.stderr)
            continue
        usable.append(spec)
    return usable


def expand_paths(paths: list[str]) -> tuple[list[Path], list[dict[str, str]]]:
    """PATH arguments -> videos to score (files and frame folders) plus per-path errors."""
    from adabench.video_io import VIDEO_SUFFIXES, VideoReadError, file_kind, is_frame_folder

    videos: list[Path] = []
    errors: list[dict[str, str]] = []
    for text in paths:
        path = Path(text)
        try:
            kind = file_kind(path)                        # stat only: a FIFO or device is never opened
            if kind is not None:
                raise VideoReadError(f"{path}: is {kind}, not a video; accepted: a video file "
                                     f"({', '.join(VIDEO_SUFFIXES)}), a folder of images or a folder of videos")
            if path.is_file() or is_frame_folder(path):
                videos.append(path)
                continue
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            inside += sorted(p for p in path.iterdir() if is_frame_folder(p))
        except VideoReadError as exc:
            errors.append({"path": text, "error": str(exc)})
            continue
        except OSError as exc:                            # an unreadable folder
            errors.append({"path": text, "error": f"{path}: {exc.strerror or exc}"})
            continue
        if not inside:
            errors.append({"path": text, "error": f"{path}: folder holds no images and no videos "
                                                  f"({', '.join(VIDEO_SUFFIXES)})"})
        videos.extend(inside)
    return videos, errors


def score_video(path: Path, specs: list[str], defaults: dict[str, Any], fps: float | None,
                chunk_frames: int) -> dict[str, Any]:
    """Stream one video through fresh accumulators -> its JSON record.

    Raises UserError with a one-line message naming the file (and the metric) on any failure.
    """
    from adabench.chunk import Chunk
    from adabench.metrics.base import MetricResult
    from adabench.metrics.shared import SharedWork
    from adabench.registry import METRICS
    from adabench.video_io import VideoReader

    work = SharedWork()                      # the flow of a frame pair, computed once for every metric
    with VideoReader(path, chunk_frames=chunk_frames, fps=fps) as reader:
        metrics = [in_metric(path, spec, METRICS.build, spec, **{**defaults, "fps": reader.fps}) for spec in specs]
        for metric in metrics:
            metric.share(work)
        start = 0
        for index, frames in enumerate(reader):                                   # frames [F, 3, H, W]
            chunk = Chunk(index=index, start_frame=start, frames=frames, fps=reader.fps)
            for spec, metric in zip(specs, metrics):
                in_metric(path, spec, metric.update, chunk)
            work.end_chunk()
            start += chunk.num_frames
    result, resolution = MetricResult(), {}
    for spec, metric in zip(specs, metrics):
        part = in_metric(path, spec, metric.compute)
        result.update(part)
        size = list(metric.work_size(reader.height, reader.width))             # [H, W] its measures ran at
        resolution.update({name: size for name in [*part.scalars, *part.series]})
    native = [reader.height, reader.width]
    return {"path": str(path), "frames": start, "fps": reader.fps, "size": native,
            "chunk_frames": reader.chunk_frames, "warnings": reader.warnings,
            "metrics": {k: json_value(k, v) for k, v in result.scalars.items()},
            "series": {k: [json_value(k, v) for v in s] for k, s in result.series.items()},
            "info": {k: {"unit": i.unit, "direction": i.direction, "backend": i.backend,
                         "resolution": resolution.get(k, native)}
                     for k, i in result.info.items() if k in result.scalars}}


def in_metric(path: Path, spec: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` for metric ``spec`` on ``path``; any failure -> UserError naming both."""
    from adabench.video_io import first_line

    try:
        return fn(*args, **kwargs)
    except UserError as exc:
        raise UserError(f"{path}: metric {spec!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a metric's bug or limit costs this file, not the run
        raise UserError(f"{path}: metric {spec!r} failed ({type(exc).__name__}: {first_line(exc)})") from None


def json_value(name: str, value: float) -> Any:
    """Scalars as JSON: booleans for decisions, null for NaN / inf (JSON has no NaN)."""
    if name in BOOL_SCALARS and not math.isnan(value):
        return bool(value)
    return float(value) if math.isfinite(value) else None


def print_table(record: dict[str, Any]) -> None:
    h, w = record["size"]
    print(f"{record['path']}  ({record['frames']} frames, {record['fps']:g} fps, {w}x{h})")
    for name, value in record["metrics"].items():
        info = record["info"].get(name, {})
        shown = "n/a" if value is None else (str(value).lower() if isinstance(value, bool) else f"{value:.4g}")
        rh, rw = info.get("resolution", [h, w])
        at = f" at {rw}x{rh}" if [rh, rw] != [h, w] else ""
        print(f"  {name:<30} {shown:>10}  {info.get('unit', ''):<9} {info.get('backend') or ''}{at}")
    print()


def run(args: argparse.Namespace) -> int:
    from adabench.metrics.flow import get_flow_backend
    from adabench.models import resolve_device
    from adabench.video_io import check_writable, first_line

    if args.chunk_frames < 1:
        raise UserError(f"--chunk-frames must be >= 1, got {args.chunk_frames}")
    if args.json:
        check_writable(Path(args.json))
    resolve_device(args.device, "--device")                        # cpu, or a CUDA GPU that exists here
    backend = get_flow_backend(args.flow, device=args.device)      # one network shared by every metric
    defaults = {"backend": backend, "device": args.device, "fps": args.fps or 16.0}
    explicit = args.metrics != ",".join(DEFAULT_METRICS)
    specs = check_metrics(split_metric_list(args.metrics), defaults, explicit)
    videos, errors = expand_paths(args.paths)
    for error in errors:
        print(f"adabench: error: {error['error']}", file=sys.stderr)
    records = []
    for path in videos:
        try:
            record = score_video(path, specs, defaults, args.fps, args.chunk_frames)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, it costs this file only
            message = str(exc) if isinstance(exc, UserError) else f"{path}: {type(exc).__name__}: {first_line(exc)}"
            errors.append({"path": str(path), "error": message})
            print(f"adabench: error: {message}", file=sys.stderr)
            continue
        records.append(record)
        print_table(record)
        for warning in record["warnings"]:
            print(f"adabench: warning: {warning}", file=sys.stderr)
    if args.json:
        write_json(Path(args.json), {"videos": records, "errors": errors})   # atomic: no half-written file
    warned = sum(1 for r in records if r["warnings"])
    print(f"adabench: scored {len(records)} video(s), {len(errors)} failed"
          + (f", {warned} with warnings" if warned else ""), file=sys.stderr)
    return 1 if errors else 0
