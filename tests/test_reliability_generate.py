"""``adabench generate`` under hostile use: interruptions never cost the files at --out, every
mistake is one line with exit code 2, odd images are used, bounds are refused before anything
is allocated, half precision runs and stays close to float32.

Each test compares with known truth (bytes before the run, the image's own pixels, the
float32 frames, the frames a chunk needs), never with the code's own output.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from adabench.checkpoints import read_metadata
from adabench.cli import main
from adabench.commands.generate import load_init
from adabench.errors import UserError
from adabench.registry import GENERATORS, METRICS, POLICIES, parse_spec

PROMPT = "a fast pan left over a desert with red circles"
WEIGHTS = Path(__file__).resolve().parents[1] / "adabench" / "weights"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def generate(*args: str) -> int:
    """``adabench generate ARGS`` in this process, with --model, --prompt and --frames filled in where not given."""
    defaults = {"--model": "adastate", "--prompt": PROMPT, "--frames": "4"}
    filled = [x for key, value in defaults.items() if key not in args for x in (key, value)]
    return main(["generate", *filled, *args])


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("adabench: error: ")
    return lines[0]


# --- every user mistake: exit 2, one line naming what was wrong and what is accepted ------------

@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Copies of the shipped adastate checkpoint, each damaged in one way."""
    folder = tmp_path_factory.mktemp("checkpoints")
    source = WEIGHTS / "adastate.safetensors"
    tensors, meta = load_file(str(source)), read_metadata(source)
    config = json.loads(meta["config"])
    made = {}
    wrong_type = {**meta, "config": json.dumps({**config, "width": "128"})}
    save_file(tensors, str(folder / "types.safetensors"), metadata=wrong_type)
    made["types"] = folder / "types.safetensors"
    reshaped = {**tensors, "model.head.weight": torch.zeros(3, 5)}
    save_file(reshaped, str(folder / "shape.safetensors"), metadata=meta)
    made["shape"] = folder / "shape.safetensors"
    return made


@pytest.mark.parametrize("args, expected", [
    (["--seed", str(2 ** 64)], "--seed"),
    (["--seed", "-1"], "0 to 2^63-1"),
    (["--device", "mps"], "--device 'mps' is not supported; accepted: cpu, cuda, cuda:N"),
    (["--device", "meta"], "--device 'meta' is not supported"),
    (["--model", "adastate:checkpoint="], "checkpoint has no value"),
    (["--model", "adastate:window=3,window=4"], "sets window more than once"),
    (["--model", "adastate:shift=nan"], "'nan' is not a finite number"),
    (["--model", "adastate:shift=-inf"], "not a finite number"),
    (["--model", "adastate:shift=1e999"], "not a finite number"),
    (["--model", "adastate:checkpoint=/nonexistent/mine.safetensors"], "mine.safetensors not found; accepted"),
    (["--model", "adastate:checkpoint=123"], "write ./123"),
])
def test_mistakes_exit_2_with_one_clear_line(tmp_path, capsys, args, expected):
    out = tmp_path / "v.mp4"
    assert generate("--out", str(out), *args) == 2
    line = one_error_line(capsys)
    assert expected in line, line
    assert "rebuild" not in line                             # no shipped model to rebuild in any of these
    assert list(tmp_path.iterdir()) == []                    # nothing written, no temporaries


def test_output_path_mistakes(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert generate("--out", str(tmp_path / "afile" / "x.mp4")) == 2
    assert "afile is a file, not a folder" in one_error_line(capsys)
    assert generate("--out", str(tmp_path / ("n" * 300 + ".mp4"))) == 2
    assert "file name is 304 bytes long; accepted: at most" in one_error_line(capsys)
    assert generate("--out", str(tmp_path / ("d" * 256) / "x.mp4")) == 2
    assert "folder name" in one_error_line(capsys)
    assert generate("--init", "i" * 300 + ".png", "--out", str(tmp_path / "v.mp4")) == 2
    assert "File name too long" in one_error_line(capsys)
    assert (tmp_path / "afile").read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_checkpoint_damage_names_what_is_wrong(tmp_path, capsys, bad_checkpoints):
    assert generate("--model", f"adastate:checkpoint={bad_checkpoints['types']}", "--out", str(tmp_path / "a.mp4")) == 2
    assert "stored config width='128' has type str, expected int" in one_error_line(capsys)
    assert generate("--model", f"adastate:checkpoint={bad_checkpoints['shape']}", "--out", str(tmp_path / "a.mp4")) == 2
    assert "tensor model.head.weight is [3, 5] in the file, [16, 128] for its stored config" in one_error_line(capsys)


def test_only_a_missing_shipped_checkpoint_gets_the_rebuild_hint(tmp_path, monkeypatch):
    monkeypatch.setattr("adabench.models.WEIGHTS_DIR", tmp_path)
    with pytest.raises(UserError, match="adastate.safetensors not found; rebuild it with `adabench train adastate-distillg "
                                        "--out runs/train`"):
        GENERATORS.build("adastate")


def test_spec_rules_hold_in_every_registry():
    for registry, spec in ((POLICIES, "sliding-window:window=3,window=4"), (METRICS, "flow:backend=dis,backend=dis")):
        with pytest.raises(UserError, match="more than once"):
            registry.build(spec)
    with pytest.raises(UserError, match="not a finite number"):
        METRICS.build("drift:x=NaN")
    assert parse_spec("adastate:shift=2.5,pos=relative") == ("adastate", {"shift": 2.5, "pos": "relative"})


# --- bounds: refused before allocation; a long chunk denoises only what is asked ------------------

@pytest.mark.parametrize("spec, expected", [
    ("adastate:window=1000000", "each chunk would attend to 1000005 frames over 1000018 time positions; accepted: "
                                "at most 64"),
    ("dit:policy=adastate,window=1000000", "at most 64"),
    ("adastate:state=5000", "attend to 10006 frames"),
    ("ff-anchor:sink=100", "attend to 106 frames"),
    ("adastate:chunk=1000", "attend to 1005 frames"),
    ("adastate:gap=1000", "over 1007 time positions"),
    ("adastate:steps=100000", "steps=100000 is invalid; accepted: an integer >= 1 and <= 100"),
    ("adastate:stagger=50", "stagger=50 is invalid; accepted: an integer >= 0 and <= steps (4)"),
])
def test_beyond_what_the_model_supports_is_refused_when_built(spec, expected):
    """Refused at build time, before a cache is allocated or a step is run (the harness builds every
    model before its first job); in a real process under a memory limit: the table at the end."""
    with pytest.raises(UserError) as err:
        GENERATORS.build(spec)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_the_shipped_layouts_are_within_the_bounds():
    for spec in ("adastate", "ff-anchor", "sliding-window", "base", "adastate:gap=20", "base:steps=32,stagger=0"):
        GENERATORS.build(spec)


def test_a_chunk_longer_than_the_video_denoises_only_the_frames_asked_for():
    gen = GENERATORS.build("adastate:checkpoint=random,chunk=30")
    seen: list[int] = []
    gen.model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape[1]))
    frames = torch.cat([c.frames for c in gen.stream(PROMPT, 0, 9)])
    assert frames.shape[0] == 9
    assert max(seen) == 1 + 9                                # the state frame and the 9 frames, not 1 + 30


# --- --init: any still image as RGB, an animation's first frame; videos and arrays refused ------

@pytest.mark.parametrize("name, image, expected_rgb", [
    ("grey.png", Image.new("L", (40, 40), 128), (128 / 255,) * 3),
    ("onebit.png", Image.new("1", (40, 40), 1), (1.0, 1.0, 1.0)),
    ("sixteen.png", Image.fromarray(np.full((40, 40), 16384, np.uint16)), (16384 / 65535,) * 3),
    ("greyalpha.png", Image.new("LA", (40, 40), (100, 7)), (100 / 255,) * 3),
    ("palette.png", Image.new("RGB", (40, 40), (255, 0, 0)).convert("P"), (1.0, 0.0, 0.0)),
])
def test_odd_images_become_rgb_frames(tmp_path, name, image, expected_rgb):
    image.save(tmp_path / name)
    frame = load_init(str(tmp_path / name), PROMPT, 0, 32)
    assert frame.shape == (1, 3, 32, 32) and frame.dtype == torch.float32
    torch.testing.assert_close(frame[0, :, 0, 0], torch.tensor(expected_rgb), atol=1e-6, rtol=0)
    assert torch.equal(frame, frame[:, :, :1, :1].expand_as(frame))          # a flat image stays flat


def test_an_animated_gif_gives_its_first_frame_and_generates(tmp_path, capsys):
    red, green = Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 255, 0))
    red.save(tmp_path / "anim.gif", save_all=True, append_images=[green], duration=100)
    out = tmp_path / "v.mp4"
    assert generate("--init", str(tmp_path / "anim.gif"), "--raw", "--out", str(out)) == 0
    first = np.load(tmp_path / "v.npz")["frames"][0]                     # the given frame, emitted as given
    assert (first == np.array([255, 0, 0], np.uint8)).all()


def test_videos_and_arrays_are_no_init_image(tmp_path, capsys):
    np.savez(tmp_path / "frames.npz", frames=np.zeros((2, 8, 8, 3), np.uint8))
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    for name in ("frames.npz", "clip.mp4"):
        assert generate("--init", str(tmp_path / name), "--out", str(tmp_path / "v.mp4")) == 2
        line = one_error_line(capsys)
        assert name in line and "accepted: 'none', 'gt' or an image file (png" in line


# --- half precision -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def float32_frames() -> tuple[torch.Tensor, torch.Tensor]:
    """The shipped adastate model's frames in float32 for seed 0, and for seed 1 (what another video differs by)."""
    init = load_init("gt", PROMPT, 0, 32)
    gen = GENERATORS.build("adastate")
    return tuple(torch.cat([c.frames for c in gen.stream(PROMPT, seed, 12, init=init)]) for seed in (0, 1))


@pytest.mark.parametrize("dtype, tolerance", [("bfloat16", 0.015), ("float16", 0.003)])
def test_half_precision_frames_are_close_to_float32(float32_frames, dtype, tolerance):
    """Measured mean |half - float32| over 12 frames of [0, 1] pixels: bfloat16 0.0058 (0.0014 on the first
    generated frame, growing along the rollout as every chunk attends to rounded context), float16 0.0006
    (3 more significand bits: about 8x less). The tolerances leave 2.5-5x of headroom for other CPUs and
    GPUs; for scale, another seed differs by 0.034 and the tolerance must stay far below it."""
    reference, other_seed = float32_frames
    gen = GENERATORS.build(f"adastate:dtype={dtype}")
    assert gen.describe()["dtype"] == dtype
    frames = torch.cat([c.frames for c in gen.stream(PROMPT, 0, 12, init=load_init("gt", PROMPT, 0, 32))])
    assert frames.dtype == torch.float32 and torch.isfinite(frames).all()
    assert torch.equal(frames[0], reference[0])                          # the given first frame, exactly
    difference = (frames - reference).abs().mean().item()
    assert difference < tolerance < (other_seed - reference).abs().mean().item() / 2, difference


# --- interruptions: the files at --out stay byte-identical; temporaries go ----------------------

def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def wait_gone(pids: list[int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


def start_long_run(out: Path) -> subprocess.Popen:
    """A long `generate --raw` over ``out``, returned once frames are being written."""
    # SIGINT as a terminal gives it: a test run started in the background (`make test &`) ignores
    # SIGINT, its children inherit that, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen([sys.executable, "-m", "adabench", "generate", "--model", "sliding-window", "--prompt",
                             PROMPT, "--frames", "100000", "--raw", "--out", str(out)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        frames = list(out.parent.glob(f".{out.stem}.npz.part-*frames-*"))
        video = list(out.parent.glob(f".{out.name}.part-{proc.pid}*"))
        if video and frames and frames[0].stat().st_size > 20 * 32 * 32 * 3:
            return proc
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the run never started writing: {proc.communicate()[1]}")


@pytest.fixture
def good_pair(tmp_path) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path / "a.mp4"
    assert generate("--raw", "--out", str(out)) == 0
    return out, {p.name: p.read_bytes() for p in tmp_path.iterdir()}


def test_sigkill_keeps_the_old_files_and_the_next_run_cleans_up(good_pair, capsys):
    out, before = good_pair
    assert sorted(before) == ["a.mp4", "a.npz"]
    proc = start_long_run(out)
    helpers = children(proc.pid)                             # ffmpeg: it finishes its own temporary on EOF
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    wait_gone(helpers)
    assert {p.name: p.read_bytes() for p in out.parent.iterdir() if not p.name.startswith(".")} == before
    stale = [p for p in out.parent.iterdir() if p.name.startswith(".")]
    assert stale                                             # a killed run cannot clean up: the next one does
    someone_else = out.parent / f".b.mp4.part-{proc.pid}.mp4"                # another target's: not ours to touch
    live = out.parent / f".a.mp4.part-{os.getppid()}.mp4"                     # a live writer's: kept
    someone_else.write_bytes(b"x")
    live.write_bytes(b"x")
    assert generate("--raw", "--frames", "5", "--seed", "1", "--out", str(out)) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["a.mp4", "a.npz", someone_else.name, live.name])
    assert np.load(out.with_suffix(".npz"))["frames"].shape[0] == 5   # the new pair, complete


def test_a_failure_while_finishing_keeps_the_old_pair(good_pair, monkeypatch):
    """The video and its npz are completed under temporary names before either is renamed: a failure
    while the npz is assembled (a full disk) leaves the old video beside the old npz, not a new one."""
    from adabench import video_io

    out, before = good_pair

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(video_io, "write_raw_npz", disk_full)
    writer = video_io.VideoWriter(out, fps=16, raw=True)
    writer.write(torch.rand(3, 3, 32, 32))
    with pytest.raises(OSError, match="No space"):
        writer.close()
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before


@pytest.mark.parametrize("sig, code, says", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
                         ids=["ctrl-c", "sigterm"])
def test_an_interruption_keeps_the_old_files_and_leaves_no_temporaries(good_pair, sig, code, says):
    """Ctrl-C, and SIGTERM (kill, timeout, a cancelled CI job) alike: before SIGTERM unwound like
    Ctrl-C, it left the temporaries behind."""
    out, before = good_pair
    proc = start_long_run(out)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=300)      # a loaded machine: the unwinding itself takes a moment
    finally:
        proc.kill()                                 # no-op once it ended; never an orphan writing 100000 frames
    assert proc.returncode == code and "Traceback" not in err and says in err, err
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before


# --- as a user runs it: a handful of the most telling cases in a real process -------------------

def limit_memory() -> None:
    """At most 8 GiB of address space: a cache sized by `window=1000000` (tens of GB) fails instead of swapping."""
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = 8 * 2 ** 30 if hard == resource.RLIM_INFINITY else min(8 * 2 ** 30, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize("args, expected", [
    (["--seed", "99999999999999999999999"], "--seed"),
    (["--model", "adastate:shift=nan"], "not a finite number"),
    (["--model", "adastate:window=1000000"], "at most 64"),
    (["--device", "mps"], "--device"),
    (["--out", "{tmp}/fifo.mp4"], "not a regular file"),
])
def test_hostile_inputs_as_a_user_runs_them(tmp_path, args, expected):
    os.mkfifo(tmp_path / "fifo.mp4")                         # opening it to write would block forever
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    base = {"--model": "adastate", "--prompt": PROMPT, "--frames": "4", "--out": str(tmp_path / "v.mp4")}
    base.update(zip(args[::2], args[1::2]))
    result = subprocess.run([sys.executable, "-m", "adabench", "generate", *[x for kv in base.items() for x in kv]],
                            env=ENV, capture_output=True, text=True, timeout=120, preexec_fn=limit_memory)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.mp4"]
