"""``adabench score``: JSON structure, per-file errors with the others scored, exit codes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adabench.cli import main
from adabench.commands.score import split_metric_list
from adabench.video_io import VideoWriter

REQUIRED = ["flow_magnitude_mean", "flow_magnitude_top5", "dynamic", "dynamic_degree_clips", "dynamics_retention"]
DRIFT_KEYS = ["drift_sharpness_start_end", "lockin_end"]
HAS_DRIFT = importlib.util.find_spec("adabench.metrics.drift") is not None


def panning(frames: int, speed: int, size: int = 32) -> torch.Tensor:
    """Smooth texture moving ``speed`` px/frame to the right: [T, 3, size, size]."""
    g = torch.Generator().manual_seed(5)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 10, 40, generator=g), size=(size, size + frames * speed),
                                           mode="bicubic", align_corners=False).clamp(0, 1)[0]
    width = base.shape[-1]
    return torch.stack([base[:, :, width - size - t * speed: width - t * speed] for t in range(frames)])


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    with VideoWriter(root / "moving.mp4", fps=16, raw=True) as w:                     # also moving.npz
        w.write(panning(40, 3))
    with VideoWriter(root / "still.gif", fps=16) as w:
        w.write(panning(1, 0).expand(24, -1, -1, -1))
    (root / "garbage.mp4").write_bytes(b"\x00not a video" * 50)
    np.savez(root / "one.npz", frames=np.zeros((1, 32, 32, 3), np.uint8))
    return root


def run_score(*args: str) -> int:
    return main(["score", *map(str, args)])


def test_json_structure_and_per_file_errors(videos, tmp_path, capsys):
    out = tmp_path / "scores.json"
    code = run_score(videos / "moving.npz", videos / "still.gif", videos / "garbage.mp4", videos / "one.npz",
                     tmp_path / "missing.mp4", "--json", out)
    assert code == 1
    data = json.loads(out.read_text())
    assert [Path(v["path"]).name for v in data["videos"]] == ["moving.npz", "still.gif"]
    assert sorted(Path(e["path"]).name for e in data["errors"]) == ["garbage.mp4", "missing.mp4", "one.npz"]
    assert all(e["error"] for e in data["errors"])
    moving, still = data["videos"]
    assert moving["frames"] == 40 and moving["fps"] == 16 and still["frames"] == 24
    for record in (moving, still):
        keys = REQUIRED + (DRIFT_KEYS if HAS_DRIFT else [])
        assert set(keys) <= set(record["metrics"]), set(keys) - set(record["metrics"])
        assert isinstance(record["series"], dict) and record["series"]
    assert moving["metrics"]["dynamic"] is True and still["metrics"]["dynamic"] is False
    assert moving["metrics"]["flow_magnitude_mean"] == pytest.approx(3.0, rel=0.1)
    assert still["metrics"]["flow_magnitude_mean"] < 0.05
    assert still["metrics"]["dynamics_retention"] is None                               # 0 / 0: undefined, not NaN
    assert moving["info"]["flow_magnitude_mean"]["backend"] == "flow=dis"
    printed = capsys.readouterr()
    assert "moving.npz" in printed.out and "garbage.mp4" in printed.err


def test_folders_metric_specs_and_flow_option(videos, tmp_path):
    import imageio.v3 as iio

    frames = (panning(12, 2) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(frames):
        iio.imwrite(folder / f"{t:04d}.png", frame)
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "a.npz").write_bytes((videos / "moving.npz").read_bytes())
    (clean / "b.gif").write_bytes((videos / "still.gif").read_bytes())
    out = tmp_path / "s.json"
    code = run_score(folder, clean, "--metrics", "flow:backend=farneback,retention:window=50%",
                     "--flow", "dis", "--fps", "8", "--json", out)
    assert code == 0
    data = json.loads(out.read_text())
    assert [Path(v["path"]).name for v in data["videos"]] == ["frames", "a.npz", "b.gif"] and data["errors"] == []
    first = data["videos"][0]
    assert first["fps"] == 8 and first["frames"] == 12
    assert first["info"]["flow_magnitude_mean"]["backend"] == "flow=farneback"   # the spec wins over --flow
    assert first["info"]["dynamics_retention"]["backend"] == "flow=dis"
    assert "dynamic" not in first["metrics"]


def test_usage_errors_exit_2(videos, capsys):
    assert run_score(videos / "moving.npz", "--metrics", "flow,dynamc-degree") == 2
    assert "did you mean 'dynamic-degree'" in capsys.readouterr().err
    assert run_score(videos / "moving.npz", "--flow", "horn-schunck") == 2
    assert "dis, farneback" in capsys.readouterr().err
    assert run_score(videos / "moving.npz", "--metrics", "flow:speed=2") == 2
    assert main(["score"]) == 2


def test_split_metric_list():
    assert split_metric_list("flow:backend=dis,window=2,retention;drift") == [
        "flow:backend=dis,window=2", "retention", "drift"]


def test_subprocess_exit_codes_without_traceback(videos, tmp_path):
    exe = Path(sys.executable).with_name("adabench")
    common = dict(capture_output=True, text=True, timeout=120)
    bad = subprocess.run([str(exe), "score", str(videos / "moving.mp4"), str(videos / "garbage.mp4"),
                          "--metrics", "flow,dynamic-degree"], **common)
    assert bad.returncode == 1, bad.stderr
    assert "Traceback" not in bad.stderr + bad.stdout and "garbage.mp4" in bad.stderr
    assert "flow_magnitude_mean" in bad.stdout
    usage = subprocess.run([str(exe), "score", str(videos / "moving.mp4"), "--metrics", "nope"], **common)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr and usage.stderr.count("\n") == 1
