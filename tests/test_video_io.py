"""Streaming video readers and writers: round trips, chunking, and clear errors on bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from adabench.errors import UserError
from adabench.video_io import VideoReader, VideoReadError, VideoWriter, iter_video


def smooth_video(frames: int = 20, size: tuple[int, int] = (32, 32)) -> torch.Tensor:
    """A smooth texture panning 1 px/frame: [T, 3, H, W] in [0, 1]."""
    g = torch.Generator().manual_seed(3)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(size[0], size[1] + frames),
                                           mode="bicubic", align_corners=False).clamp(0, 1)[0]
    return torch.stack([base[:, :, t:t + size[1]] for t in range(frames)])


def read_all(path, **kw) -> tuple[VideoReader, torch.Tensor]:
    reader = VideoReader(path, **kw)
    return reader, torch.cat(list(reader))


def test_raw_npz_is_exact_and_streams_in_chunks(tmp_path):
    frames = smooth_video(21)
    with VideoWriter(tmp_path / "v.mp4", fps=12, raw=True) as w:
        for start in range(0, 21, 4):
            w.write(frames[start:start + 4])
    expected = (frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()      # [T, H, W, 3]
    with np.load(tmp_path / "v.npz") as data:                                           # the plain numpy loader
        assert data["frames"].dtype == np.uint8 and np.array_equal(data["frames"], expected)
        assert float(data["fps"]) == 12
    reader = VideoReader(tmp_path / "v.npz", chunk_frames=8)
    chunks = list(reader)
    assert [c.shape[0] for c in chunks] == [8, 8, 5] and reader.fps == 12 and reader.num_frames == 21
    assert torch.equal((torch.cat(chunks) * 255).round().to(torch.uint8), torch.from_numpy(expected).permute(0, 3, 1, 2))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]                  # temporary files removed


def test_mp4_round_trip_keeps_size_count_and_content(tmp_path):
    frames = smooth_video(20)
    with VideoWriter(tmp_path / "v.mp4", fps=16) as w:
        w.write(frames[:7])
        w.write(frames[7:])
    reader, back = read_all(tmp_path / "v.mp4", chunk_frames=6)
    assert back.shape == frames.shape and reader.fps == 16
    luma = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]
    assert ((back - frames) * luma).sum(1).abs().mean() < 0.01                        # luma nearly exact
    assert (back - frames).abs().mean() < 0.06                                         # yuv420p halves chroma
    fps, chunks = iter_video(tmp_path / "v.mp4", chunk_frames=16)
    assert fps == 16 and [c.shape[0] for c in chunks] == [16, 4]


def test_odd_sized_mp4_is_padded_by_one(tmp_path):
    frames = smooth_video(4, size=(33, 31))
    with VideoWriter(tmp_path / "odd.mp4", fps=8) as w:
        w.write(frames)
    _, back = read_all(tmp_path / "odd.mp4")
    assert back.shape == (4, 3, 34, 32)
    assert (back[..., :33, :31] - frames).abs().mean() < 0.05


def test_gif_and_frame_folder(tmp_path):
    import imageio.v3 as iio

    frames = smooth_video(10)
    with VideoWriter(tmp_path / "v.gif", fps=10) as w:
        w.write(frames)
    reader, back = read_all(tmp_path / "v.gif")
    assert back.shape == frames.shape and reader.fps == pytest.approx(10) and (back - frames).abs().mean() < 0.05
    folder = tmp_path / "frames"
    folder.mkdir()
    data = (frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for t in reversed(range(10)):                                                       # written out of order
        iio.imwrite(folder / f"f{t:03d}.png", data[t])
    (folder / "notes.txt").write_text("ignored")
    reader, back = read_all(folder, chunk_frames=4)
    assert reader.fps == 16 and reader.num_frames == 10
    assert torch.equal((back * 255).round().to(torch.uint8), torch.from_numpy(data).permute(0, 3, 1, 2))
    assert VideoReader(folder, fps=24).fps == 24


def test_unwritable_outputs_fail_at_open(tmp_path):
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path, tmp_path / "file" / "v.mp4", tmp_path / "v.avi"):
        with pytest.raises(UserError) as err:
            VideoWriter(bad, fps=16)
        assert "\n" not in str(err.value)
    VideoWriter(tmp_path / "new" / "deeper" / "v.mp4", fps=16).close()                 # missing folders are created
    assert not (tmp_path / "new" / "deeper" / "v.mp4").exists()                         # and no stray file is left


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(UserError):
            VideoWriter(folder / "v.mp4", fps=16)
    finally:
        folder.chmod(0o700)


def test_bad_inputs_raise_clear_errors(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(os.urandom(2000))
    (tmp_path / "garbage.gif").write_bytes(b"GIF89a not really")
    np.savez(tmp_path / "one.npz", frames=np.zeros((1, 8, 8, 3), np.uint8))
    np.savez(tmp_path / "none.npz", frames=np.zeros((0, 8, 8, 3), np.uint8))
    np.savez(tmp_path / "float.npz", frames=np.zeros((4, 8, 8, 3), np.float32))
    np.savez(tmp_path / "objects.npz", frames=np.array([{"a": 1}, None], dtype=object))
    np.savez(tmp_path / "other.npz", video=np.zeros((4, 8, 8, 3), np.uint8))
    with VideoWriter(tmp_path / "one.mp4", fps=16) as w:
        w.write(torch.zeros(1, 3, 16, 16))
    (tmp_path / "emptydir").mkdir()
    names = ["empty.mp4", "garbage.mp4", "garbage.gif", "one.npz", "none.npz", "float.npz", "objects.npz",
             "other.npz", "one.mp4", "emptydir", "missing.mp4", "video.xyz"]
    (tmp_path / "video.xyz").write_bytes(b"x")
    for name in names:
        with pytest.raises(VideoReadError) as err:
            VideoReader(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(VideoReadError, match="single frame"):
        VideoReader(tmp_path / "one.mp4")
