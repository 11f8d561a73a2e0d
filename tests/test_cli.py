"""``adabench generate`` / ``list``: outputs as promised, user mistakes as one line with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from adabench.cli import main
from adabench.world.panworld import render_clip
from adabench.world.prompts import parse_prompt

PROMPT = "a fast pan left over a desert with red circles"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adabench.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args, expected", [
    (["--model", "adastat"], "did you mean 'adastate'"),
    (["--prompt", "a fast pan left over a jungle with red circles"], "unknown scene 'jungle'"),
    (["--frames", "0"], "an integer from 1 to 100000"),
    (["--frames", "abc"], "an integer from 1 to 100000"),
    (["--frames", "2.5"], "an integer from 1 to 100000"),
    (["--frames", "100001"], "an integer from 1 to 100000"),
    (["--out", "/proc/adabench/x.mp4"], "/proc/adabench/x.mp4"),
    (["--model", "ff-anchor:sink=0"], "sink"),
    (["--init", "nonexistent.png"], "nonexistent.png"),
    (["--model", "adastate:checkpoint=/nonexistent/adastate.safetensors"], "adastate.safetensors not found; accepted"),
])
def test_user_mistakes_exit_2_with_one_line(tmp_path, args, expected):
    base = {"--model": "adastate", "--prompt": PROMPT, "--frames": "6", "--out": str(tmp_path / "v.mp4")}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    result = run_cli("generate", *[x for kv in base.items() for x in kv])
    assert result.returncode == 2, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_generate_raw_json_exact_frame_count(tmp_path, capsys):
    out = tmp_path / "a.mp4"
    code = main(["generate", "--model", "adastate", "--prompt", PROMPT, "--frames", "8", "--seed", "3",
                 "--out", str(out), "--raw", "--json", "--init", "gt"])
    assert code == 0 and out.stat().st_size > 0
    frames = np.load(tmp_path / "a.npz")["frames"]
    assert frames.dtype == np.uint8 and frames.shape == (8, 32, 32, 3)
    gt = render_clip(parse_prompt(PROMPT), 3, 1)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(frames[0], np.round(gt * 255).astype(np.uint8))    # --init gt: frame 0 is the truth
    report = json.loads(capsys.readouterr().out)
    assert [c["frames"] for c in report["chunks"]] == [1, 3, 3, 1]             # prefill, then trimmed last chunk
    assert report["model"]["budget_frames"] == 4 and report["model"]["state"] == 1
    assert all(c["cache_bytes"] > 0 for c in report["chunks"][1:])


def test_ground_truth_generator_streams_the_world(tmp_path):
    code = main(["generate", "--model", "panworld-gt", "--prompt", PROMPT, "--frames", "7", "--seed", "1",
                 "--out", str(tmp_path / "gt.mp4"), "--raw"])
    frames = np.load(tmp_path / "gt.npz")["frames"]
    expected = np.round(render_clip(parse_prompt(PROMPT), 1, 7).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    assert code == 0 and np.array_equal(frames, expected)


def test_list_shows_everything(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for word in ("adastate", "ff-anchor", "sliding-window", "panworld-gt", "panworld-default", "dynamic-degree",
                 "desert", "triangles"):
        assert word in text


def test_a_reader_that_goes_away_is_no_traceback(tmp_path, monkeypatch):
    """`adabench list | head -1`: the closed pipe ends the command quietly with 128 + SIGPIPE."""
    import io

    class ClosedPipe(io.TextIOBase):
        def __init__(self, fd: int) -> None:
            self.fd = fd

        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self) -> int:
            return self.fd

    with open(tmp_path / "sink", "w") as sink:
        monkeypatch.setattr(sys, "stdout", ClosedPipe(sink.fileno()))
        assert main(["list"]) == 141
