"""Plug-ins from outside adabench: the example distribution in tests/plugin_example, installed
into a temporary folder (never the project's environment), found through its entry points and
run by ``adabench compare`` in a subprocess; results checked against what is known to be true.
Also the ``dit`` generator, which runs the base weights under any registered cache policy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from adabench.cache import CachePolicy
from adabench.errors import UserError
from adabench.models import WEIGHTS_DIR
from adabench.registry import GENERATORS, POLICIES, Entry, Registry
from adabench.world.suites import panworld_smoke

EXAMPLE = Path(__file__).resolve().parent / "plugin_example"
PROMPTS = ("a drifting marble texture", "slow clouds of colour")
SPEEDS = {"drifting-texture": 1.0, "drifting-texture:speed=2": 2.0}   # model spec -> true px/frame
HORIZONS = (7, 12)                     # 7 ends inside a chunk of 3: metrics see a chunk's prefix
# DIS flow on the texture reads 0.5-3 px/frame within 2.5 % per video (measured: 6 prompts x 3 seeds,
# 32 and 64 px; within 1.6 % at 1 and 2 px/frame and 32 px)
FLOW_TOLERANCE = 0.03


def run(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m adabench ARGS`` with the plug-in's folder on the path (entry points found there)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "adabench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example installed with pip into a folder of its own, offline, from a copy of its source
    (building in place would leave build/ and *.egg-info in the repository)."""
    tmp = tmp_path_factory.mktemp("plugin")
    source = tmp / "source"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return target


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "texture.txt"
    path.write_text("# plain text, not PanWorld\n" + "\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def comparison(site, prompt_file, tmp_path_factory) -> dict:
    """One comparison of two parameterisations of the plug-in generator (4 jobs)."""
    out = tmp_path_factory.mktemp("compare") / "out"
    done = run(site, "compare", "--models", ",".join(SPEEDS), "--prompts", str(prompt_file), "--init", "none",
               "--frames", ",".join(map(str, HORIZONS)), "--seeds", "1",
               "--metrics", "mean-luminance,flow,attention,throughput", "--out", str(out), "--quiet",
               cwd=out.parent)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def truth(site, tmp_path_factory) -> dict:
    """Mean luma per video, horizon and chunk, computed here from the generator's own frames."""
    code = f"""
import json, numpy as np
from adabench_example_plugin.generator import DriftingTexture
out = {{}}
for spec, speed in {SPEEDS!r}.items():
    gen = DriftingTexture(speed=speed)
    videos = []
    for prompt in {PROMPTS!r}:
        chunks = [c.frames.numpy().astype(np.float64) for c in gen.stream(prompt, 0, {max(HORIZONS)})]
        luma = [0.299 * c[:, 0] + 0.587 * c[:, 1] + 0.114 * c[:, 2] for c in chunks]
        frames = np.concatenate(luma)
        videos.append({{"horizons": {{str(h): float(frames[:h].mean()) for h in {HORIZONS!r}}},
                        "chunks": [float(y.mean()) for y in luma]}})
    out[spec] = videos
print(json.dumps(out))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path_factory.mktemp("truth"))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_list_shows_the_plugins(site, tmp_path):
    done = run(site, "list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for name, target in (("drifting-texture", "adabench_example_plugin.generator:DriftingTexture"),
                         ("mean-luminance", "adabench_example_plugin.metric:MeanLuminance"),
                         ("texture-smoke", "adabench_example_plugin.suites:texture_smoke")):
        assert any(line.split()[:1] == [name] and target in line for line in lines), done.stdout
    assert any(line.split()[:1] == ["dit"] for line in lines)


def test_plugin_metric_matches_the_frames(comparison, truth):
    for spec, videos in truth.items():
        model = comparison["models"][spec]
        assert model["failed"] == 0 and model["describe"]["name"] == "drifting-texture"
        for h in HORIZONS:
            entry = model["metrics"][f"mean_luminance@{h}/none"]
            expected = sum(v["horizons"][str(h)] for v in videos) / len(videos)
            assert entry["n"] == len(PROMPTS) and entry["applicable"] is True
            assert (entry["unit"], entry["direction"], entry["backend"]) == ("1", "none", "luma=bt601")
            assert entry["mean"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        series = model["series"][f"mean_luminance_per_chunk@{max(HORIZONS)}/none"]["mean"]
        expected = [sum(v["chunks"][i] for v in videos) / len(videos) for i in range(len(videos[0]["chunks"]))]
        assert series == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_flow_reads_the_known_speed(comparison):
    for spec, speed in SPEEDS.items():
        for h in HORIZONS:
            entry = comparison["models"][spec]["metrics"][f"flow_magnitude_mean@{h}/none"]
            assert entry["backend"] == "flow=dis" and entry["unit"] == "px/frame"
            # the interval of two videos spans both: each video reads the speed
            for value in (entry["mean"], entry["ci_low"], entry["ci_high"]):
                assert abs(value / speed - 1) < FLOW_TOLERANCE, (spec, h, entry)


def test_what_a_plugin_cannot_feed_is_not_applicable(comparison):
    for spec in SPEEDS:
        model = comparison["models"][spec]
        assert model["capabilities"] == []
        assert "offers no attention probe" in model["not_applicable"]["attention"]
        assert not any(k.startswith("anchor_attention") for k in model["metrics"])
        fps = model["metrics"][f"fps@{max(HORIZONS)}/none"]          # timings came from the generator itself
        assert fps["applicable"] is True and fps["mean"] > 0


def test_builtin_models_refuse_plain_text_in_one_line(site, prompt_file, tmp_path):
    out = tmp_path / "out"
    done = run(site, "compare", "--models", "drifting-texture,sliding-window", "--prompts", str(prompt_file),
               "--init", "none", "--frames", "6", "--seeds", "1", "--metrics", "flow", "--out", str(out), "--quiet",
               cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("adabench: error: model 'sliding-window' cannot read the prompt"), done.stderr
    assert not out.exists()


def test_a_builtin_name_wins_over_a_plugin(monkeypatch):
    group = "adabench.generators"
    found = [metadata.EntryPoint("sliding-window", "elsewhere:Impostor", group),
             metadata.EntryPoint("drifting-texture", "adabench_example_plugin.generator:DriftingTexture", group)]
    monkeypatch.setattr(metadata, "entry_points", lambda group=None: [e for e in found if e.group == group])
    registry = Registry("model", group)
    registry.register("sliding-window", "adabench.models:sliding_window", "built in")
    assert registry.entry("sliding-window").target == "adabench.models:sliding_window"
    assert registry.entry("drifting-texture").target == "adabench_example_plugin.generator:DriftingTexture"
    assert registry.names() == ["drifting-texture", "sliding-window"]


# --- dit: the base weights under any registered cache policy ------------------------------------------------

class SinkAndState(CachePolicy):
    """The cache policy of docs/extending.md: a first-frame sink plus an adaptive state and a window."""

    name = "sink-state"

    def __init__(self, sink: int = 1, state: int = 1, window: int = 2, pos: str = "relative", gap: int = 0) -> None:
        super().__init__(sink=sink, state=state, window=window, pos=pos, gap=gap)
        if self.sink < 1 or self.state < 1:
            raise UserError(f"sink-state needs sink >= 1 and state >= 1 (got {sink}, {state})")


def frames_of(spec: str, prompt: str, num_frames: int = 9) -> list[torch.Tensor]:
    return [chunk.frames for chunk in GENERATORS.build(spec).stream(prompt, 0, num_frames)]


def test_dit_is_the_base_weights_under_the_named_policy():
    prompt = panworld_smoke()[1]
    base_weights = WEIGHTS_DIR / "base.safetensors"
    ours = GENERATORS.build("dit:policy=sliding-window,window=4")
    theirs = GENERATORS.build(f"sliding-window:checkpoint={base_weights}")
    assert ours.describe()["weights_sha256"] == theirs.describe()["weights_sha256"]
    assert ours.name == "dit[sliding-window:sink=0,state=0,window=4,pos=absolute]"
    assert ours.describe()["name"] == ours.name and ours.describe()["policy"] == "sliding-window"
    a = [c.frames for c in ours.stream(prompt, 0, 9)]
    b = [c.frames for c in theirs.stream(prompt, 0, 9)]
    assert len(a) == len(b) == 3 and all(torch.equal(x, y) for x, y in zip(a, b))


def test_dit_takes_a_policy_registered_from_outside(monkeypatch):
    monkeypatch.setitem(POLICIES._entries, "sink-state", Entry("sink-state", SinkAndState, "test"))
    generator = GENERATORS.build("dit:policy=sink-state,window=3,steps=2")
    assert isinstance(generator.policy, SinkAndState) and generator.policy.window == 3
    chunks = list(generator.stream(panworld_smoke()[2], 0, 9))
    assert sum(c.num_frames for c in chunks) == 9 and all(torch.isfinite(c.frames).all() for c in chunks)
    assert chunks[-1].cache_frames == 1 + 1 + 3          # sink, state and a full window are visible
    with pytest.raises(UserError, match="did you mean 'window'"):
        GENERATORS.build("dit:policy=sink-state,windw=3")
