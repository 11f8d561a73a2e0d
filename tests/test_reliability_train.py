"""`adabench train` as a hostile user tries it: nothing a finished or interrupted run wrote is
lost or clobbered, no output leaves --out, every mistake is one line and exit 2, and damaged
resume state is named with the way to recover (no progress thrown away)."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from safetensors.torch import load_file

from adabench.checkpoints import read_metadata
from adabench.cli import main
from adabench.training import ship
from adabench.training.objectives import OBJECTIVES

TINY = """[recipe]
name = "{name}"
kind = "codec"
steps = {steps}
batch = 2
warmup = 1
checkpoint_every = {every}
log_every = 1
frame_size = 16
model = {{latent_size = 8, width = 32, depth = 1, heads = 2, rope_time_dims = 4}}
"""


def recipe_file(folder: Path, name: str = "tiny", steps: int = 5, every: int = 2, extra: str = "") -> str:
    path = folder / f"{name}.toml"
    path.write_text(TINY.format(name=name, steps=steps, every=every) + extra)
    return str(path)


def cli(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and stderr of an in-process run (progress bars left out)."""
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, "\n".join(l for l in err.splitlines() if l.strip() and "it/s" not in l and "%|" not in l)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adabench: error: ") and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A folder holding a finished tiny run (recipe file ``tiny.toml`` beside it)."""
    root = tmp_path_factory.mktemp("finished")
    recipe = recipe_file(root)
    assert main(["train", recipe, "--out", str(root / "run")]) == 0
    return root


@pytest.fixture
def run_copy(finished, tmp_path) -> tuple[str, Path]:
    shutil.copytree(finished / "run", tmp_path / "run")
    return recipe_file(tmp_path), tmp_path / "run"


def interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make the codec objective raise KeyboardInterrupt (Ctrl-C) when it reaches ``step``."""
    real = OBJECTIVES["codec"].loss

    def loss(self, s, device):
        if s == step:
            raise KeyboardInterrupt
        return real(self, s, device)

    monkeypatch.setattr(OBJECTIVES["codec"], "loss", loss)


# --- data loss -------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", ["0", "-3"])
def test_zero_or_negative_steps_are_refused_and_the_trained_weights_kept(capsys, run_copy, steps):
    recipe, out = run_copy
    before = snapshot(out)
    code, err = cli(capsys, "train", recipe, "--out", str(out), "--steps", steps)
    assert code == 2 and "--steps" in one_error_line(err) and "accepted: an integer >= 1" in err
    assert snapshot(out) == before


def test_a_finished_run_is_left_as_it_is_until_a_retrain_completes(capsys, run_copy, monkeypatch):
    recipe, out = run_copy
    before = snapshot(out)
    code, err = cli(capsys, "train", recipe, "--out", str(out))             # the same recipe: nothing to do
    assert code == 0 and "already trained" in err and snapshot(out) == before
    code, err = cli(capsys, "train", recipe, "--out", str(out), "--steps", "3")     # another version: refused
    assert code == 2 and "another version of recipe 'tiny'" in one_error_line(err) and "--retrain" in err
    assert snapshot(out) == before
    with monkeypatch.context() as patch:                          # a retrain interrupted: the finished files stay
        interrupt_at(patch, 2)
        assert cli(capsys, "train", recipe, "--out", str(out), "--steps", "3", "--retrain")[0] == 130
    assert all(snapshot(out)[name] == data for name, data in before.items())
    assert cli(capsys, "train", recipe, "--out", str(out), "--steps", "3", "--retrain")[0] == 0
    steps = [json.loads(l)["step"] for l in (out / "tiny.log.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]
    assert json.loads((out / "manifest.json").read_text())["tiny"]["steps"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "tiny.log.jsonl", "tiny.loss.png",
                                                     "tiny.safetensors"]


@pytest.mark.parametrize("key, value", [("name", "../../escape"), ("name", "a/b"), ("name", ".hidden"),
                                        ("name", "x.last"), ("name", ""), ("init", "../../weights/base")])
def test_names_that_would_leave_out_are_refused(capsys, tmp_path, key, value):
    path = tmp_path / "deep" / "er"
    path.mkdir(parents=True)
    recipe = tmp_path / "r.toml"
    body = f'[recipe]\nname = "{value if key == "name" else "ok"}"\nkind = "codec"\nsteps = 1\n'
    recipe.write_text(body + (f'init = "{value}"\n' if key == "init" else ""))
    code, err = cli(capsys, "train", str(recipe), "--out", str(path / "out"))
    assert code == 2 and f"{key} {value!r} is invalid" in one_error_line(err) and "letters, digits" in err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["deep", "deep/er", "r.toml"]


REAL_WRITE_TEXT = pathlib.Path.write_text


def manifest_write_interrupted(self: pathlib.Path, text: str, *args, **kwargs) -> int:
    """Path.write_text, except that writing a manifest (or its temporary) is interrupted half way
    through, with the first half of the text on disk."""
    if "manifest.json" not in self.name:
        return REAL_WRITE_TEXT(self, text, *args, **kwargs)
    with self.open("w") as f:
        f.write(text[: len(text) // 2])
    raise KeyboardInterrupt


def test_an_interrupted_manifest_write_keeps_the_old_manifest(capsys, run_copy, monkeypatch):
    _, out = run_copy
    old = (out / "manifest.json").read_bytes()
    other = recipe_file(out.parent, name="other", steps=2)          # a second recipe into the same folder
    with monkeypatch.context() as patch:
        patch.setattr(pathlib.Path, "write_text", manifest_write_interrupted)
        assert cli(capsys, "train", other, "--out", str(out))[0] == 130
    assert (out / "manifest.json").read_bytes() == old
    assert not [p for p in out.iterdir() if ".part-" in p.name]


def test_an_interrupted_ship_keeps_the_package_manifest(run_copy, tmp_path, monkeypatch):
    _, out = run_copy
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "manifest.json").write_text('{"base": {"file": "base.safetensors"}}\n')
    monkeypatch.setattr(ship, "PACKAGE_WEIGHTS", weights)
    monkeypatch.setattr(ship, "LOGS", tmp_path / "logs")
    with monkeypatch.context() as patch:
        patch.setattr(pathlib.Path, "write_text", manifest_write_interrupted)
        with pytest.raises(KeyboardInterrupt):
            ship.main(["--runs", str(out), "tiny"])
    assert json.loads((weights / "manifest.json").read_text()) == {"base": {"file": "base.safetensors"}}
    assert ship.main(["--runs", str(out), "tiny"]) == 0
    assert set(json.loads((weights / "manifest.json").read_text())) == {"base", "tiny"}


# --- every mistake: one line, exit 2 ----------------------------------------------------------

NO_GPU = not torch.cuda.is_available()
BAD_RECIPES = [
    ("[recipe\nname = 'x'\n", "TOML syntax error: Expected ']' at the end of a table declaration (at line 1"),
    ("name = 'x'\nkind = 'codec'\n", "has no [recipe] table (keys found outside it: kind, name)"),
    ("[recipe]\nkind = 'codec'\n", "missing key 'name'"),
    ("[recipe]\nname = 'x'\n", "missing key 'kind'"),
    ("[recipe]\nname = 'x'\nkind = 'codec'\nsteps = 'ten'\n", "steps = 'ten' has the wrong type; accepted: an integer"),
    ("[recipe]\nname = 'x'\nkind = 'codec'\nlr = true\n", "lr = True has the wrong type; accepted: a number"),
    ("[recipe]\nname = 3\nkind = 'codec'\n", "name = 3 has the wrong type; accepted: a string"),
    ("[recipe]\nname = 'x'\nkind = 'codec'\nmodel = 3\n", "model = 3 has the wrong type; accepted: a table"),
    ("[recipe]\nname = 'x'\nkind = 'codec'\nlr = nan\n", "lr = nan is invalid; accepted: a finite number"),
    ("[recipe]\nname = 'x'\nkind = 'codec'\ncheckpoint_every = 0\n", "checkpoint_every 0 is invalid; accepted: an integer >= 1"),
    ("[recipe]\nname = 'x'\nkind = 'codec'\nbatch = 0\n", "batch 0 is invalid; accepted: an integer >= 1"),
    ("[recipe]\nname = 'x'\nkind = 'codec'\nbatch = 4096\nframe_size = 256\n", "GiB; accepted: at most 2 GiB"),
    ("[recipe]\nname = 'x'\nkind = 'codec'\nmodel = {width = 30, heads = 4}\n", "width 30 is not a multiple of heads 4"),
    ("[recipe]\nname = 'x'\nkind = 'codec'\nmodel = {patch = 3}\n", "latent_size 8 is not a multiple of patch 3"),
    ("[recipe]\nname = 'x'\nkind = 'codec'\nmodel = {heads = 0}\n", "heads = 0 is invalid; accepted: an integer from 1"),
    ("[recipe]\nname = 'x'\nkind = 'codec'\nmodel = {width = -4}\n", "width = -4 is invalid"),
    ("[recipe]\nname = 'x'\nkind = 'codec'\nmodel = {width = 4096, depth = 64}\n", "accepted: at most 100,000,000"),
    ("[recipe]\nname = 'x'\nkind = 'codec'\nmodel = {wdth = 64}\n", "model has unknown keys wdth"),
    ("[recipe]\nname = 'x'\nkind = 'codec'\nmodel = {codec = 'identity', latent_channels = 3, latent_size = 32, "
     "patch = 8}\n", "no parameters to train"),
    ("[recipe]\nname = 'x'\nkind = 'evaluator'\nmodel = {widths = [6, 8, 8]}\n", "model sizes are impossible"),
]


@pytest.mark.parametrize("body, message", BAD_RECIPES)
def test_bad_recipes_are_one_line_and_exit_2(capsys, tmp_path, body, message):
    (tmp_path / "bad.toml").write_text(body)
    code, err = cli(capsys, "train", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "out"))
    assert code == 2 and message in one_error_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["nope.toml"], "recipe file nope.toml does not exist"),
    (["codecc"], "unknown recipe 'codecc' (did you mean 'codec'?)"),
    (["RECIPE", "--out", "RECIPE"], "is a file, not a folder"),
    (["RECIPE", "--out", "RECIPE/sub"], "is a file, not a folder"),
    (["RECIPE", "--device", "mps"], "--device 'mps' is not supported; accepted: cpu, cuda, cuda:N"),
    (["RECIPE", "--device", "meta"], "--device 'meta' is not supported"),
    (["RECIPE", "--device", "nonsense"], "--device 'nonsense' is invalid"),
    pytest.param(["RECIPE", "--device", "cuda"], "no CUDA GPU is available",
                 marks=pytest.mark.skipif(not NO_GPU, reason="a GPU is here")),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    recipe = recipe_file(tmp_path)
    argv = [recipe if a == "RECIPE" else a.replace("RECIPE", recipe) for a in args]
    argv += [] if "--out" in argv else ["--out", str(tmp_path / "out")]
    code, err = cli(capsys, "train", *argv)
    assert code == 2 and message in one_error_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_out_is_one_line_and_exit_2(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, err = cli(capsys, "train", recipe_file(tmp_path), "--out", str(locked))
    assert code == 2 and "is not writable" in one_error_line(err)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where nobody creates folders")
def test_an_out_that_cannot_be_created_is_named_before_missing_init_weights(capsys):
    """base needs the codec's weights from --out: the folder it cannot create is the error, not the weights."""
    code, err = cli(capsys, "train", "base", "--out", "/proc/adabench-none/run")
    assert code == 2 and "--out /proc/adabench-none/run is not writable" in one_error_line(err)


# --- damaged resume state ---------------------------------------------------------------------

@pytest.fixture
def interrupted(capsys, tmp_path, monkeypatch) -> tuple[str, Path]:
    """A run of 6 steps interrupted at step 4: checkpoints at steps 4 (last) and 3 (previous)."""
    recipe, out = recipe_file(tmp_path, steps=6, every=1), tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 4)
        assert cli(capsys, "train", recipe, "--out", str(out))[0] == 130
    assert {"tiny.last.safetensors", "tiny.previous.safetensors", "tiny.running.log.jsonl"} <= set(snapshot(out))
    return recipe, out


def logged_steps(out: Path) -> list[int]:
    return [json.loads(l)["step"] for l in (out / "tiny.log.jsonl").read_text().splitlines()]


def test_a_damaged_log_is_named_and_deleting_it_resumes_from_the_checkpoint(capsys, interrupted):
    recipe, out = interrupted
    log = out / "tiny.running.log.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "{garbage", *lines[2:]]) + "\n")
    code, err = cli(capsys, "train", recipe, "--out", str(out))
    line = one_error_line(err)
    assert code == 2 and f"loss log {log} is damaged at line 2" in line
    assert "rename or delete it to resume from tiny.last.safetensors at step 4" in line
    log.unlink()
    code, err = cli(capsys, "train", recipe, "--out", str(out))
    assert code == 0 and "resuming tiny at step 4" in err and logged_steps(out) == [4, 5]


def test_a_half_written_last_log_row_is_an_ordinary_interruption(capsys, interrupted):
    recipe, out = interrupted
    log = out / "tiny.running.log.jsonl"
    log.write_text(log.read_text() + '{"step": 4, "lo')
    assert cli(capsys, "train", recipe, "--out", str(out))[0] == 0
    assert logged_steps(out) == list(range(6))


def test_a_damaged_checkpoint_is_named_and_deleting_it_resumes_from_the_one_before(capsys, interrupted):
    recipe, out = interrupted
    last = out / "tiny.last.safetensors"
    last.write_bytes(last.read_bytes()[:1000])                       # truncated
    code, err = cli(capsys, "train", recipe, "--out", str(out))
    line = one_error_line(err)
    assert code == 2 and f"checkpoint {last} is damaged" in line
    assert "delete it and training resumes from the checkpoint before it (tiny.previous.safetensors)" in line
    last.unlink()
    code, err = cli(capsys, "train", recipe, "--out", str(out))
    assert code == 0 and "resuming tiny at step 3" in err and logged_steps(out) == list(range(6))


def test_a_damaged_manifest_is_named_before_any_training(capsys, interrupted):
    recipe, out = interrupted
    (out / "manifest.json").write_text('{"codec": ')
    before = snapshot(out)
    code, err = cli(capsys, "train", recipe, "--out", str(out))
    line = one_error_line(err)
    assert code == 2 and f"manifest {out / 'manifest.json'} is damaged" in line and "rename it" in line
    assert snapshot(out) == before


# --- as a user runs it: subprocesses ----------------------------------------------------------

def adabench(*argv: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "adabench", *argv], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_hostile_inputs_as_a_user_runs_them(tmp_path):
    """No traceback, exit 2, one line: run concurrently, as separate processes."""
    recipe = recipe_file(tmp_path)
    (tmp_path / "escape.toml").write_text('[recipe]\nname = "../../escape"\nkind = "codec"\n')
    (tmp_path / "syntax.toml").write_text('[recipe]\nname = "x"\nsteps = \n')
    cases = {("train", recipe, "--out", "out", "--steps", "0"): "--steps",
             ("train", "escape.toml", "--out", "out"): "name '../../escape' is invalid",
             ("train", "syntax.toml", "--out", "out"): "TOML syntax error: Invalid value (at line 3, column 9)"}
    procs = {args: adabench(*args, cwd=tmp_path) for args in cases}
    for args, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and cases[args] in one_error_line(err), (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["escape.toml", "syntax.toml", "tiny.toml"]


def test_sigkill_mid_training_then_resume_gives_the_straight_run(capsys, tmp_path):
    """kill -9 at a random moment after the first checkpoint: the rerun resumes, and its weights,
    log and manifest are those of a run never interrupted."""
    recipe = recipe_file(tmp_path, steps=80, every=4)
    out = tmp_path / "killed"
    proc = adabench("train", recipe, "--out", str(out), cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (out / "tiny.last.safetensors").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "tiny.safetensors").exists() and not (out / "tiny.log.jsonl").exists()
    (out / f".tiny.last.safetensors.part-{proc.pid}.safetensors").write_bytes(b"half")   # as if killed mid-write

    # the resume and the straight run in processes like the killed one (1 thread each): bit-exactness
    # holds between runs with the same thread count, and pytest's own process may use more
    resumed_run = adabench("train", recipe, "--out", str(out), cwd=tmp_path)
    _, err = resumed_run.communicate(timeout=600)
    assert resumed_run.returncode == 0 and "resuming tiny at step" in err, err
    straight_run = adabench("train", recipe, "--out", str(tmp_path / "straight"), cwd=tmp_path)
    assert straight_run.communicate(timeout=600) and straight_run.returncode == 0
    resumed, straight = (load_file(str(d / "tiny.safetensors")) for d in (out, tmp_path / "straight"))
    assert [k for k in straight if not torch.equal(resumed[k], straight[k])] == []
    metadata = [read_metadata(d / "tiny.safetensors") for d in (out, tmp_path / "straight")]
    assert metadata[0] == metadata[1]
    rows = [[json.loads(l) for l in (d / "tiny.log.jsonl").read_text().splitlines()] for d in (out, tmp_path / "straight")]
    assert [r["step"] for r in rows[0]] == list(range(80))
    assert [r["loss"] for r in rows[0]] == [r["loss"] for r in rows[1]]
    manifests = [json.loads((d / "manifest.json").read_text())["tiny"] for d in (out, tmp_path / "straight")]
    assert manifests[0]["sha256"] == hashlib.sha256((out / "tiny.safetensors").read_bytes()).hexdigest()
    varying = ("sha256", "train_seconds_this_run")       # safetensors orders its header's metadata freely
    assert {k: v for k, v in manifests[0].items() if k not in varying} == \
        {k: v for k, v in manifests[1].items() if k not in varying}
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "tiny.log.jsonl", "tiny.loss.png",
                                                     "tiny.safetensors"]
