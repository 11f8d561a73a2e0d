"""Streaming video readers and writers: frames in and out chunk by chunk, never a whole video.

Frames on our side are RGB float32 in [0, 1], shape [F, 3, H, W] (as :class:`Chunk`).

Reading (:class:`VideoReader`, :func:`iter_video`) by source:

- mp4 / mov / avi / mkv / webm / m4v: ffmpeg through imageio-ffmpeg, one frame at a time;
- gif: Pillow, one frame at a time (fps from the frame duration);
- a folder of png / jpg / jpeg / bmp images, sorted by name (fps from the argument, default 16);
- npz with ``frames`` [T, H, W, 3] uint8 (optional ``fps``), read from the zip member in
  frame-sized pieces; only plain uint8 arrays are accepted, nothing is unpickled.

A ``fps`` argument, when given, overrides the file's own rate; either must lie in
:data:`MIN_FPS`..:data:`MAX_FPS` (0.1..1000 fps). Unreadable, empty and one-frame videos,
anything but a regular file or a folder (a FIFO, a device: never opened, so never waited
on), frames without pixels or above :data:`MAX_FRAME_PIXELS`, raise :class:`VideoReadError`
(a one-line message naming the file) at open (the first two frames are read eagerly), so
callers can report the file and go on. A chunk holds at most ``chunk_frames`` frames and at
most :data:`CHUNK_PIXELS` pixels (8.4 M: 16 frames of 960x540, 4 of 1080p, 1 of 4K), so its
memory is bounded at any resolution (``reader.chunk_frames`` says how many frames a chunk
holds). A video that ends before the frame count its file declares (a truncated download;
ffmpeg files declare duration x frame rate, so 1 % slack) is read to its end and flagged in
``reader.warnings``; one that ends before its second frame is an error saying so.

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
The output path is checked at construction, before anything is generated (names that fit the
file system, no file where a folder must be, no FIFO or device as the target). The video and
its npz are completed under temporary names and renamed onto their targets one right after
the other, only on a clean close: an error, Ctrl-C or kill -9 leaves the old pair as it was,
and the next writer of the same targets removes what a killed one left behind.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from adabench.atomic import PART, atomic_path, part_path, remove_stale_parts
from adabench.errors import UserError

FFMPEG_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_SUFFIXES = FFMPEG_SUFFIXES + (".gif", ".npz")
DEFAULT_FPS = 16.0
MIN_FPS, MAX_FPS = 0.1, 1000.0            # accepted frame rates, a file's own or given
CHUNK_PIXELS = 1 << 23                    # pixels per chunk at most (8.4 M: 16 frames of 960x540, 4 of 1080p, 1 of 4K)
MAX_FRAME_PIXELS = 8192 * 8192            # pixels per frame at most (8K UHD is 7680x4320)


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

    # imageio-ffmpeg logs "We had to kill ffmpeg to stop it." when ffmpeg is slow to quit after the
    # last frame (a loaded machine): nothing a user can act on, and no one-line message of ours
    logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    check_frame_size(path, h, w)
    fps, duration = meta.get("fps") or 0.0, meta.get("duration") or 0.0
    count = round(duration * fps) if np.isfinite(duration * fps) and duration * fps >= 1 else None   # declared

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
        raise ValueError(f"'frames' must be uint8 [T, H, W, 3] in C order, got {dtype} {shape}"
                         + (" in Fortran order" if fortran else ""))
    t, h, w, c = shape
    try:
        check_frame_size(path, h, w)
    except VideoReadError:
        archive.close()
        raise

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


def check_frame_size(path: Path, height: int, width: int) -> None:
    """VideoReadError for frames without pixels or above :data:`MAX_FRAME_PIXELS`."""
    if height < 1 or width < 1:
        raise VideoReadError(f"{path}: frames are {width}x{height} px, they hold no pixels")
    if height * width > MAX_FRAME_PIXELS:
        raise VideoReadError(f"{path}: frames of {width}x{height} px are too large; accepted: at most "
                             f"{MAX_FRAME_PIXELS / 1e6:.0f} M pixels a frame (8192x8192)")


def file_kind(path: Path) -> str | None:
    """None for a regular file or folder (symlinks followed), else what it is ("a FIFO", ...).

    Raises VideoReadError when ``path`` cannot even be looked at (missing, name too long, ...).
    """
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            name = next((p for p in path.parts if len(os.fsencode(p)) > 255), None)
            what = f"the name {short(name, 40)!r} is {len(os.fsencode(name))} bytes long; accepted: at most 255 " \
                   f"bytes a name" if name else f"the path is {len(os.fsencode(str(path)))} bytes long, too long"
            raise VideoReadError(f"{short(path, 100)}: {what}") from None
        reason = "no such file or folder" if isinstance(exc, FileNotFoundError) else (exc.strerror or str(exc))
        raise VideoReadError(f"{path}: {reason}") from None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "a special file")


def open_source(path: Path) -> tuple[float | None, int | None, Iterator[np.ndarray]]:
    kind = file_kind(path)
    if kind is not None:                     # never opened: reading a FIFO or /dev/zero would wait or never end
        raise VideoReadError(f"{path}: is {kind}, not a video; accepted: a regular video file "
                             f"({', '.join(VIDEO_SUFFIXES)}) or a folder of images")
    if path.is_dir():
        if not image_files(path):
            raise VideoReadError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return folder_source(path)
    suffix = path.suffix.lower()
    opener = {".gif": gif_source, ".npz": npz_source}.get(suffix)
    if opener is None and suffix in FFMPEG_SUFFIXES:
        opener = ffmpeg_source
    if opener is None:
        raise VideoReadError(f"{path}: unsupported file type {suffix or '(none)'!r}; accepted: "
                             f"{', '.join(VIDEO_SUFFIXES)} or a folder of images")
    return opener(path)


class VideoReader:
    """Chunks of a video as [F, 3, H, W] float tensors.

    ``fps``, ``height``, ``width``; ``num_frames``: the count the file declares (None when it
    declares none); ``frames_read``: frames yielded so far; ``chunk_frames``: frames per
    chunk (the request, fewer for large frames); ``warnings``: one-line notes (a truncated file).
    """

    def __init__(self, path: str | os.PathLike, chunk_frames: int = 16, fps: float | None = None) -> None:
        self.path = Path(path)
        self._frames: Iterator[np.ndarray] = iter(())
        self.frames_read = 0
        self.warnings: list[str] = []
        try:
            own_fps, self.num_frames, self._frames = open_source(self.path)
            self._head = [next(self._frames, None), next(self._frames, None)]   # fail early on bad files
            if self._head[0] is not None:
                check_frame_size(self.path, *self._head[0].shape[:2])
            if self._head[1] is None:
                raise VideoReadError(self._too_short(0 if self._head[0] is None else 1))
            self.fps = float(fps) if fps else (own_fps or DEFAULT_FPS)
            if not MIN_FPS <= self.fps <= MAX_FPS:                               # also refuses NaN
                raise VideoReadError(f"{self.path}: frame rate {self.fps:g} fps {'given' if fps else 'in the file'} "
                                     f"is outside the accepted {MIN_FPS:g}..{MAX_FPS:g}; pass --fps to set one")
        except VideoReadError:
            self.close()
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure means an unreadable file
            self.close()
            raise VideoReadError(f"{self.path}: cannot read video ({type(exc).__name__}: "
                                 f"{first_line(exc)})") from None
        self.height, self.width = self._head[0].shape[:2]
        self.chunk_frames = max(1, min(int(chunk_frames), CHUNK_PIXELS // (self.height * self.width)))

    def _too_short(self, decoded: int) -> str:
        """The message for a video with fewer than 2 frames: empty, single, or truncated."""
        if self.num_frames and self.num_frames > max(1, decoded):
            return (f"{self.path}: only {decoded} frame(s) could be decoded, though the file declares "
                    f"{self.num_frames}: it is truncated or damaged; at least 2 frames are needed")
        return f"{self.path}: video has no frames" if decoded == 0 else \
            f"{self.path}: video has a single frame; at least 2 are needed"

    def _check_complete(self) -> None:
        """Warn when fewer frames came out than the file declares (ffmpeg's count is duration x fps: 1 % slack)."""
        if self.num_frames and self.frames_read < self.num_frames - 1 - self.num_frames // 100:
            self.warnings.append(f"{self.path}: truncated: the file declares {self.num_frames} frames but only "
                                 f"{self.frames_read} could be decoded; scored on those {self.frames_read}")

    def __iter__(self) -> Iterator[torch.Tensor]:
        batch: list[np.ndarray] = []
        try:
            for frame in self._all_frames():
                if frame.shape[:2] != (self.height, self.width):
                    raise VideoReadError(f"{self.path}: frame size changes from {self.width}x{self.height} "
                                         f"to {frame.shape[1]}x{frame.shape[0]}")
                batch.append(frame)
                self.frames_read += 1
                if len(batch) == self.chunk_frames:
                    yield to_float(np.stack(batch))                                  # [F, 3, H, W]
                    batch = []
        except VideoReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - a decode failure mid-file
            raise VideoReadError(f"{self.path}: cannot read video after {self.frames_read} frames "
                                 f"({type(exc).__name__}: {first_line(exc)})") from None
        if batch:
            yield to_float(np.stack(batch))
        self._check_complete()

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

NAME_MAX = 255          # bytes in one file or folder name on the usual file systems (ext4, APFS, NTFS)


def short(text: object, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters for a one-line message."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def check_writable(path: Path) -> None:
    """Raise UserError now if ``path`` cannot be written (creating missing parent folders).

    Checked before anything is generated, and without touching whatever is at ``path``: every
    name fits the file system (the file's own with room for the temporary name it is written
    under first), no parent is a file, the target is no folder or special file (FIFO, device),
    the folder takes new files and an existing target is writable.
    """
    for part in path.parent.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise UserError(f"cannot write {short(path)}: the folder name {short(part, 40)!r} is "
                            f"{len(os.fsencode(part))} bytes long; accepted: at most {NAME_MAX}")
    size = len(os.fsencode(path.name))
    room = NAME_MAX - (len(os.fsencode(part_path(path).name)) - size)     # the temporary's name is longer
    if size > room:
        raise UserError(f"cannot write {short(path)}: the file name is {size} bytes long; accepted: at most {room} "
                        f"(the file system's {NAME_MAX}, less room for the temporary name it is written under first)")
    try:
        if path.is_dir():
            raise UserError(f"cannot write {path}: it is a directory; accepted: a file name")
        if path.exists() and not path.is_file():
            raise UserError(f"cannot write {path}: it is not a regular file (a FIFO, device or socket); "
                            f"accepted: a new file name or an existing regular file")
        for parent in path.parents:                  # the nearest existing ancestor must be a folder
            if parent.exists():
                if not parent.is_dir():
                    raise UserError(f"cannot write {path}: {parent} is a file, not a folder")
                break
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = part_path(path)                      # the folder takes new files: the temporary's own name
        with open(probe, "wb"):
            pass
        probe.unlink()
        if path.exists():
            with open(path, "ab"):                   # an existing target is not read-only (nothing is written)
                pass
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
        # temporaries of our targets left by a killed writer (never those of a live one, nor other names)
        remove_stale_parts(self.path.parent, names=[p.name for p in (self.path, self.raw_path) if p is not None])
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
            self._raw = tempfile.NamedTemporaryFile(dir=self.raw_path.parent, delete=False,
                                                    prefix=f".{self.raw_path.name}{PART}{os.getpid()}-frames-")

    def close(self) -> None:
        """Finish both files under their temporary names, then rename them onto their targets one
        right after the other, so that an interruption leaves the old pair or the new pair."""
        try:
            if self._ffmpeg is not None:
                self._ffmpeg.close()
                self._ffmpeg = None
            if self._raw is not None:
                self._raw.close()
                with atomic_path(self.raw_path) as npz_part:
                    write_raw_npz(npz_part, Path(self._raw.name), (self.num_frames, *self.size, 3), self.fps)
                    if self.size is not None:
                        os.replace(self._part, self.path)
            elif self.size is not None:
                os.replace(self._part, self.path)
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
    """Write ``path`` (npz: ``frames`` uint8 ``shape``, ``fps``) from raw bytes, copying in pieces
    (in place: the caller gives a temporary name)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        with archive.open("frames.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False, "shape": shape})
            with open(frames_file, "rb") as src:
                while block := src.read(1 << 22):
                    member.write(block)
        buffer = io.BytesIO()
        np.save(buffer, np.float64(fps))
        archive.writestr("fps.npy", buffer.getvalue())
