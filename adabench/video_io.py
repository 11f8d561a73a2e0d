"""Streaming video readers and writers: frames in and out chunk by chunk, never a whole video.

Frames on our side are RGB float32 in [0, 1], shape [F, 3, H, W] (as :class:`Chunk`).

Reading (:class:`VideoReader`, :func:`iter_video`) by source:

- mp4 / mov / avi / mkv / webm / m4v: ffmpeg through imageio-ffmpeg, one frame at a time;
- gif: Pillow, one frame at a time (fps from the frame duration);
- a folder of png / jpg / jpeg / bmp images, sorted by name (fps from the argument, default 16);
- npz with ``frames`` [T, H, W, 3] uint8 (optional ``fps``), read from the zip member in
  frame-sized pieces; only plain uint8 arrays are accepted, nothing is unpickled.

A ``fps`` argument, when given, overrides the file's own rate. Unreadable, empty and
one-frame videos raise :class:`VideoReadError` at open (the first two frames are read
eagerly), so callers can report the file and go on.

Writing (:class:`VideoWriter`): mp4 (libx264, yuv420p, crf 10) or gif (ffmpeg, one 256-colour
palette for the whole video, frame delay in 1/100 s so 16 fps reads back as 16.7) by suffix, and with
``raw=True`` the exact frames as ``<path>.npz`` (``frames`` uint8 [T, H, W, 3] =
round(frames * 255), plus ``fps``), streamed through a temporary file. Tiny frames work:
the mp4 keeps the frame size (ffmpeg's macro-block resize is switched off, so 32x32 stays
32x32, and flow in px/frame means the same in the file as in the rollout); yuv420p needs
even sides, so an odd height or width is padded by repeating the last row / column. yuv420p
also halves chroma resolution: luma survives (~0.5 % error), colour detail at 1-pixel scale
does not; use ``raw=True`` when exact frames matter. For the gif, ffmpeg holds the frames
until the palette is known (the gif is written at close): use mp4 for long videos.
The output path is checked at construction, before anything is generated.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from adabench.atomic import PART, atomic_path, part_path
from adabench.errors import UserError

FFMPEG_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_SUFFIXES = FFMPEG_SUFFIXES + (".gif", ".npz")
DEFAULT_FPS = 16.0


class VideoReadError(UserError):
    """A video that cannot be scored: missing, unreadable, empty or a single frame."""


def to_float(frames_uint8: np.ndarray) -> torch.Tensor:
    """[F, H, W, 3] uint8 -> [F, 3, H, W] float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames_uint8)).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[F, 3, H, W] float in [0, 1] -> [F, H, W, 3] uint8 (round(x * 255))."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [F, 3, H, W], got {tuple(frames.shape)}")
    return (frames.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def rgb(frame: np.ndarray) -> np.ndarray:
    """Any decoded image -> [H, W, 3] uint8 (gray expanded, alpha dropped)."""
    if frame.dtype != np.uint8:
        raise ValueError(f"8-bit frames expected, got {frame.dtype}")
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    return frame[..., :3]


# --- sources: each yields [H, W, 3] uint8 frames and knows fps / count where it can ---------------

def ffmpeg_source(path: Path) -> tuple[float | None, int | None, Iterator[np.ndarray]]:
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    nframes = meta.get("nframes")
    count = int(nframes) if isinstance(nframes, (int, float)) and np.isfinite(nframes) and nframes > 0 else None

    def frames() -> Iterator[np.ndarray]:
        try:
            for raw in gen:
                yield np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
        finally:
            gen.close()   # stops ffmpeg when the reader is dropped early

    return (float(meta["fps"]) if meta.get("fps") else None), count, frames()


def gif_source(path: Path) -> tuple[float | None, int | None, Iterator[np.ndarray]]:
    from PIL import Image

    image = Image.open(path)
    duration = image.info.get("duration") or 0
    count = int(getattr(image, "n_frames", 1))

    def frames() -> Iterator[np.ndarray]:
        with image:
            for i in range(count):
                image.seek(i)
                yield np.asarray(image.convert("RGB"))

    return (1000.0 / duration if duration else None), count, frames()


def folder_source(path: Path) -> tuple[float | None, int | None, Iterator[np.ndarray]]:
    import imageio.v3 as iio

    files = image_files(path)
    return None, len(files), (rgb(iio.imread(f)) for f in files)


def npz_source(path: Path) -> tuple[float | None, int | None, Iterator[np.ndarray]]:
    archive = zipfile.ZipFile(path)
    names = archive.namelist()
    if "frames.npy" not in names:
        archive.close()
        raise ValueError(f"no 'frames' array (found: {', '.join(n[:-4] for n in names) or 'nothing'})")
    fps = None
    if "fps.npy" in names:
        fps = float(load_small_npy(archive.read("fps.npy")))
    member = archive.open("frames.npy")
    version = np.lib.format.read_magic(member)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(member)
    if dtype != np.uint8 or fortran or len(shape) != 4 or shape[3] not in (3, 4):
        archive.close()
        raise ValueError(f"'frames' must be uint8 [T, H, W, 3], got {dtype} {shape}")
    t, h, w, c = shape

    def frames() -> Iterator[np.ndarray]:
        try:
            for _ in range(t):
                data = member.read(h * w * c)
                if len(data) != h * w * c:
                    raise ValueError("truncated 'frames' array")
                yield np.frombuffer(data, dtype=np.uint8).reshape(h, w, c)[..., :3]
        finally:
            archive.close()

    return fps, t, frames()


def load_small_npy(blob: bytes) -> Any:
    """A small numeric array stored in an npz member, refusing pickled objects."""
    return np.load(io.BytesIO(blob), allow_pickle=False)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def is_frame_folder(path: Path) -> bool:
    return path.is_dir() and bool(image_files(path))


def open_source(path: Path) -> tuple[float | None, int | None, Iterator[np.ndarray]]:
    if path.is_dir():
        if not image_files(path):
            raise VideoReadError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return folder_source(path)
    if not path.exists():
        raise VideoReadError(f"{path}: no such file")
    suffix = path.suffix.lower()
    opener = {".gif": gif_source, ".npz": npz_source}.get(suffix)
    if opener is None and suffix in FFMPEG_SUFFIXES:
        opener = ffmpeg_source
    if opener is None:
        raise VideoReadError(f"{path}: unsupported file type {suffix or '(none)'!r}; accepted: "
                             f"{', '.join(VIDEO_SUFFIXES)} or a folder of images")
    return opener(path)


class VideoReader:
    """Chunks of a video as [F, 3, H, W] float tensors; ``fps``, ``height``, ``width``, ``num_frames`` (or None)."""

    def __init__(self, path: str | os.PathLike, chunk_frames: int = 16, fps: float | None = None) -> None:
        self.path = Path(path)
        self.chunk_frames = max(1, int(chunk_frames))
        try:
            own_fps, self.num_frames, self._frames = open_source(self.path)
            self._head = [next(self._frames, None), next(self._frames, None)]   # fail early on bad files
        except VideoReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure means an unreadable file
            raise VideoReadError(f"{self.path}: cannot read video ({type(exc).__name__}: "
                                 f"{first_line(exc)})") from None
        if self._head[0] is None:
            raise VideoReadError(f"{self.path}: video has no frames")
        if self._head[1] is None:
            raise VideoReadError(f"{self.path}: video has a single frame; at least 2 are needed")
        self.fps = float(fps) if fps else (own_fps or DEFAULT_FPS)
        self.height, self.width = self._head[0].shape[:2]

    def __iter__(self) -> Iterator[torch.Tensor]:
        batch: list[np.ndarray] = []
        try:
            for frame in self._all_frames():
                if frame.shape[:2] != (self.height, self.width):
                    raise VideoReadError(f"{self.path}: frame size changes from {self.width}x{self.height} "
                                         f"to {frame.shape[1]}x{frame.shape[0]}")
                batch.append(frame)
                if len(batch) == self.chunk_frames:
                    yield to_float(np.stack(batch))                                  # [F, 3, H, W]
                    batch = []
        except VideoReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - a decode failure mid-file
            raise VideoReadError(f"{self.path}: cannot read video ({type(exc).__name__}: {first_line(exc)})") from None
        if batch:
            yield to_float(np.stack(batch))

    def _all_frames(self) -> Iterator[np.ndarray]:
        head, self._head = self._head, []
        yield from (f for f in head if f is not None)
        yield from self._frames

    def close(self) -> None:
        close = getattr(self._frames, "close", None)
        if close:
            close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def iter_video(path: str | os.PathLike, chunk_frames: int = 16, fps: float | None = None
               ) -> tuple[float, Iterator[torch.Tensor]]:
    """``(fps, iterator of [F, 3, H, W] float chunks)``; see :class:`VideoReader`."""
    reader = VideoReader(path, chunk_frames, fps)
    return reader.fps, iter(reader)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no details"


# --- writing ----------------------------------------------------------------------------------

def check_writable(path: Path) -> None:
    """Raise UserError now if ``path`` cannot be written (creating missing parent folders)."""
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory; give a file name ending in .mp4 or .gif")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with open(path, "ab"):
            pass
        if not existed:
            path.unlink()
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


class VideoWriter:
    """Write frames chunk by chunk to an mp4 or gif (by suffix), optionally also the exact frames as npz."""

    def __init__(self, path: str | os.PathLike, fps: float, raw: bool = False) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        suffix = self.path.suffix.lower()
        if suffix not in (".mp4", ".gif"):
            raise UserError(f"cannot write {self.path}: unsupported video type {suffix or '(none)'!r}; accepted: .mp4, .gif")
        if not self.fps > 0:
            raise UserError(f"fps must be > 0, got {fps}")
        check_writable(self.path)
        self.raw_path = self.path.with_suffix(".npz") if raw else None
        if self.raw_path is not None:
            check_writable(self.raw_path)
        self._part = part_path(self.path)              # written here, renamed onto path at close
        self.num_frames = 0
        self.size: tuple[int, int] | None = None       # (H, W)
        self._ffmpeg: Any = None
        self._raw: Any = None                          # temporary file of raw uint8 frames

    def write(self, frames: torch.Tensor) -> None:
        """frames [F, 3, H, W] float in [0, 1]."""
        data = to_uint8(frames)                                                      # [F, H, W, 3]
        if self.size is None:
            self.size = (data.shape[1], data.shape[2])
            self._start()
        elif data.shape[1:3] != self.size:
            raise ValueError(f"frame size changed from {self.size} to {data.shape[1:3]}")
        if self._raw is not None:
            self._raw.write(data.tobytes())
        for frame in pad_even(data) if self.path.suffix.lower() == ".mp4" else data:
            self._ffmpeg.send(np.ascontiguousarray(frame).tobytes())
        self.num_frames += data.shape[0]

    def _start(self) -> None:
        import imageio_ffmpeg

        assert self.size is not None
        h, w = self.size
        if self.path.suffix.lower() == ".mp4":
            options: dict[str, Any] = dict(codec="libx264", pix_fmt_out="yuv420p", quality=8)
            size = (w + w % 2, h + h % 2)
        else:   # gif: one palette for the whole video, no dithering; duplicate frames are kept
            options = dict(codec="gif", pix_fmt_out="pal8", quality=None, output_params=[
                "-vf", "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=none"])
            size = (w, h)
        self._ffmpeg = imageio_ffmpeg.write_frames(str(self._part), size, fps=self.fps, macro_block_size=1,
                                                   ffmpeg_log_level="error", **options)
        self._ffmpeg.send(None)
        if self.raw_path is not None:
            self._raw = tempfile.NamedTemporaryFile(dir=self.raw_path.parent, prefix=f".{self.raw_path.name}{PART}frames-",
                                                    delete=False)

    def close(self) -> None:
        """Finish both files and rename them onto their targets (the video first, then the npz)."""
        try:
            if self._ffmpeg is not None:
                self._ffmpeg.close()
                self._ffmpeg = None
                os.replace(self._part, self.path)
            if self._raw is not None:
                self._raw.close()
                write_raw_npz(self.raw_path, Path(self._raw.name), (self.num_frames, *self.size, 3), self.fps)
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop writing and remove the temporaries; whatever was at the targets stays as it was."""
        if self._ffmpeg is not None:
            try:
                self._ffmpeg.close()
            except Exception:  # noqa: BLE001 - the partial file is thrown away anyway
                pass
            self._ffmpeg = None
        if self._raw is not None:
            self._raw.close()
            Path(self._raw.name).unlink(missing_ok=True)
            self._raw = None
        self._part.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:                           # an error or an interruption: keep what was there
            self.abort()


def pad_even(frames: np.ndarray) -> np.ndarray:
    """[F, H, W, 3] -> even H and W by repeating the last row / column (yuv420p needs even sides)."""
    h, w = frames.shape[1:3]
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_raw_npz(path: Path, frames_file: Path, shape: tuple[int, ...], fps: float) -> None:
    """Assemble ``path`` (npz: ``frames`` uint8 ``shape``, ``fps``) from raw bytes, copying in pieces."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        with archive.open("frames.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False, "shape": shape})
            with open(frames_file, "rb") as src:
                while block := src.read(1 << 22):
                    member.write(block)
        buffer = io.BytesIO()
        np.save(buffer, np.float64(fps))
        archive.writestr("fps.npy", buffer.getvalue())
