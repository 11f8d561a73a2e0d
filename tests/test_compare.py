"""``adabench compare``: the results folder's schema, sharing of flow, resume after SIGKILL, shards,
torchrun ranks and user mistakes, each checked against a known truth."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from adabench.cli import main
from adabench.harness.plan import JobSpec, build_plan, canonical_spec, parse_seeds
from adabench.harness.runner import initial_frames, run_job
from adabench.harness.store import Store
from adabench.registry import GENERATORS

SMOKE = ["--prompts", "panworld-smoke", "--frames", "6,9", "--seeds", "2", "--quiet"]
TIMING = ("fps", "realtime_factor", "first_chunk_latency_ms", "chunk_latency_p50_ms", "chunk_latency_p95_ms",
          "chunk_latency_slope_ms_per_chunk", "peak_memory_mb")


def strict_json(path: Path) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def run_cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "adabench", *args], capture_output=True, text=True, env=full,
                          **kwargs)


def quality(folder: Path) -> dict[tuple, dict[str, float]]:
    """Per job (model, prompt, seed, init): every scalar that is not a timing, from the store."""
    frame = pd.read_parquet(folder / "samples.parquet")
    out = {}
    for _, row in frame.iterrows():
        scalars = {k: row[k] for k in frame.columns if "@" in k and k.split("@")[0] not in TIMING}
        out[(row["model"], row["prompt"], row["seed"], row["init"])] = scalars
    return out


def same_quality(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for job in a:
        for key, value in a[job].items():
            other = b[job][key]
            assert (value == other) or (isinstance(value, float) and math.isnan(value) and math.isnan(other)), \
                (job, key, value, other)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke")
    code = main(["compare", "--models", "adastate,ff-anchor,sliding-window", *SMOKE, "--out", str(out)])
    assert code == 0
    return out


def test_results_schema_and_every_metric_for_every_model(smoke_run):
    results = strict_json(smoke_run / "results.json")                 # strict: no NaN anywhere
    assert results["schema_version"] == 1 and set(results) >= {"run", "models", "comparisons"}
    run = results["run"]
    for key in ("command", "adabench", "git_commit", "torch", "device", "device_name", "host_cpu", "init",
                "timing_mode"):
        assert key in run, key
    per_job = [row.result["timing"]["calibration_ms"] for row in Store(smoke_run / "store").rows().values()]
    assert len(per_job) == run["jobs_ok"] and min(per_job) > 0
    assert run["calibration_ms"] == statistics.median(per_job) and run["calibration_ms_before_jobs"] > 0
    assert run["init"] == ["gt"] and run["jobs_planned"] == run["jobs_ok"] == 4 * 3 * 2
    models = results["models"]
    assert list(models) == ["panworld-gt", "adastate", "ff-anchor", "sliding-window"]    # the reference row joined
    keys = set(models["adastate"]["metrics"])
    for name in ("motion_ratio", "flow_magnitude_mean", "dynamic", "dynamics_retention", "drift_sharpness_vde",
                 "lockin_end", "adherence_all", "anchor_attention_mass", "anchor_attention_ratio", "fps",
                 "first_chunk_latency_ms", "chunk_latency_p50_ms", "chunk_latency_p95_ms", "peak_memory_mb",
                 "kv_cache_mb"):
        assert f"{name}@9/gt" in keys and f"{name}@6/gt" in keys, name
    for name, model in models.items():
        assert set(model["metrics"]) == keys, name                    # every metric present for every model
        assert model["failed"] == 0 and model["spec"] and len(model["spec_hash"]) == 16
        for key, entry in model["metrics"].items():
            assert {"mean", "ci_low", "ci_high", "n", "unit", "direction", "backend"} <= set(entry), key
            if not entry["applicable"]:
                assert entry["mean"] is None and entry["reason"], key
                continue
            if entry["n"] >= 2 and entry["mean"] is not None:
                assert entry["ci_low"] <= entry["mean"] <= entry["ci_high"], (name, key, entry)
    gt = models["panworld-gt"]["metrics"]["anchor_attention_mass@9/gt"]
    assert gt["applicable"] is False and "probe" in gt["reason"]      # not an error: not applicable
    assert models["adastate"]["metrics"]["frechet_mean@9/gt"]["n"] == 6
    assert models["panworld-gt"]["metrics"]["motion_ratio@9/gt"]["mean"] == pytest.approx(1.0, abs=0.05)


def test_comparisons_are_paired_against_the_first_model(smoke_run):
    results = strict_json(smoke_run / "results.json")
    comparisons = results["comparisons"]
    assert {c["model"] for c in comparisons} == {"ff-anchor", "sliding-window"}
    assert {c["baseline"] for c in comparisons} == {"adastate"}
    frame = pd.read_parquet(smoke_run / "samples.parquet")
    c = next(c for c in comparisons if c["model"] == "ff-anchor" and c["metric"] == "motion_ratio@9/gt")
    a = frame[frame.model == "adastate"].set_index(["prompt", "seed"])["motion_ratio@9"]
    b = frame[frame.model == "ff-anchor"].set_index(["prompt", "seed"])["motion_ratio@9"]
    diff = (b - a).dropna()
    assert c["n"] == len(diff) == 4 and c["mean_diff"] == pytest.approx(diff.mean(), rel=1e-12)
    nones = [c for c in comparisons if c["direction"] == "none"]
    assert nones and all(c["verdict"] == "not ranked" for c in nones)
    ps = [c["p_value"] for c in comparisons if c["p_value"] is not None]
    assert all(c["p_holm"] is None or c["p_holm"] >= c["p_value"] for c in comparisons) and ps


def test_samples_parquet_one_row_per_job(smoke_run):
    frame = pd.read_parquet(smoke_run / "samples.parquet")
    plan = json.loads((smoke_run / "plan.json").read_text())
    assert len(frame) == len(plan["jobs"]) == 24 and frame["hash"].is_unique
    assert set(frame["status"]) == {"ok"}
    assert {"model", "prompt", "seed", "init", "motion_ratio@9", "fps@6"} <= set(frame.columns)


def test_aggregate_rebuilds_the_same_results(smoke_run, tmp_path):
    before = strict_json(smoke_run / "results.json")
    (smoke_run / "results.json").unlink()
    (smoke_run / "samples.parquet").unlink()
    assert main(["aggregate", str(smoke_run)]) == 0
    assert strict_json(smoke_run / "results.json") == before


def counting_backend():
    from adabench.metrics.flow import get_flow_backend

    backend = get_flow_backend("dis")
    calls = {"pairs": 0}
    original = type(backend).__call__

    class Counting(type(backend)):
        def __call__(self, prev, nxt):
            calls["pairs"] += prev.shape[0]
            return original(self, prev, nxt)

    backend.__class__ = Counting
    return backend, calls


def test_flow_is_computed_once_per_pair_for_every_metric_and_horizon():
    from adabench.metrics.dynamic_degree import dynamic_degree
    from adabench.metrics.flow_magnitude import flow_magnitude
    from adabench.metrics.retention import dynamics_retention

    plan = build_plan("sliding-window", "panworld-smoke", "9,21", "1", "gt", "flow,retention,motion-fidelity,"
                      "dynamic-degree")
    job = next(j for j in plan.jobs if j.model == "sliding-window" and "fast" in j.prompt)
    backend, calls = counting_backend()
    outcome = run_job(job, plan.model("sliding-window"), backend)
    assert outcome.status == "ok", outcome.error
    # 21 frames: 20 consecutive pairs + 10 pairs of every second frame (dynamic degree at 16 fps), each once,
    # although 4 metrics x 2 horizons ask for 2 x (3 x 20 + 10) - (shared prefix) pairs
    assert calls["pairs"] == 20 + 10 == outcome.result["timing"]["flow_pairs"]
    generator = plan.model("sliding-window").generator
    frames = torch.cat([c.frames for c in generator.stream(job.prompt, job.seed, 21, init=initial_frames(job, 32))])
    scalars = outcome.result["horizons"]["21"]["scalars"]
    assert scalars["flow_magnitude_mean"] == pytest.approx(flow_magnitude(frames)["flow_magnitude_mean"], rel=1e-9)
    assert scalars["dynamics_retention"] == pytest.approx(dynamics_retention(frames, 16.0), rel=1e-9)
    assert scalars["dynamic_degree_clips"] == dynamic_degree(frames, 16.0)["dynamic_degree_clips"]
    short = outcome.result["horizons"]["9"]["scalars"]
    assert short["flow_magnitude_mean"] == pytest.approx(flow_magnitude(frames[:9])["flow_magnitude_mean"], rel=1e-9)


def test_canonical_spec_makes_defaults_one_job():
    assert canonical_spec(GENERATORS, "adastate") == canonical_spec(GENERATORS, "adastate:state=1,window=3")
    assert canonical_spec(GENERATORS, "adastate") != canonical_spec(GENERATORS, "adastate:window=4")
    plan = build_plan("adastate", "panworld-smoke", "9", "2", "gt", "flow")
    same = build_plan("adastate:window=3,gap=14", "panworld-smoke", "9", "2", "gt", "flow")
    other = build_plan("adastate", "panworld-smoke", "9", "2", "gt", "flow,drift")
    assert [j.hash for j in plan.jobs] == [j.hash for j in same.jobs]
    assert not {j.hash for j in plan.jobs} & {j.hash for j in other.jobs}      # metrics are part of the identity
    # model-interleaved: prompt by prompt, seed by seed, every model in turn
    assert [(j.prompt, j.seed, j.model) for j in plan.jobs[:4]] == [
        (plan.prompts[0], 0, "panworld-gt"), (plan.prompts[0], 0, "adastate"),
        (plan.prompts[0], 1, "panworld-gt"), (plan.prompts[0], 1, "adastate")]
    assert isinstance(plan.jobs[0], JobSpec) and len(plan.jobs[0].hash) == 16


def test_seeds_count_or_list():
    assert parse_seeds("2") == [0, 1] and parse_seeds("0,3,7") == [0, 3, 7] and parse_seeds("7,") == [7]


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_rows(tmp_path):
    args = ["compare", "--models", "sliding-window", "--prompts", "panworld-smoke", "--frames", "9", "--seeds", "2",
            "--metrics", "flow,motion-fidelity,drift,throughput", "--quiet"]
    whole = tmp_path / "whole"
    assert main([*args, "--out", str(whole)]) == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "adabench", *args, "--save-videos", "--out", str(killed)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.DEVNULL)
    store = killed / "store" / "main.sqlite"
    deadline = time.monotonic() + 120
    stored = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
                stored = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
        except sqlite3.Error:
            stored = 0
        if stored >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= stored < 12, "the run must be killed mid-way"
    result = run_cli(*args, "--save-videos", "--out", str(killed))           # same --out: resumes
    assert result.returncode == 0, result.stderr
    assert "already stored" in result.stderr
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT hash, count(*) FROM jobs GROUP BY hash").fetchall()
    assert len(rows) == 12 and all(n == 1 for _, n in rows)                   # no duplicate, none missing
    same_quality(quality(whole), quality(killed))
    assert not list((killed / "videos").glob(".*"))                           # no temporaries left behind
    assert len(list((killed / "videos").glob("*.mp4"))) == 12


def test_shards_and_merge_equal_one_process(tmp_path, smoke_run):
    args = ["compare", "--models", "adastate,ff-anchor,sliding-window", *SMOKE]
    for k in (1, 2):
        assert main([*args, "--shard", f"{k}/2", "--out", str(tmp_path / f"shard{k}")]) == 0
    assert main(["merge", str(tmp_path / "shard1"), str(tmp_path / "shard2"), "--out", str(tmp_path / "all")]) == 0
    same_quality(quality(smoke_run), quality(tmp_path / "all"))


@pytest.mark.skipif(not __import__("torch").distributed.is_available(), reason="torch.distributed missing")
def test_two_torchrun_ranks_over_gloo_equal_one_process(tmp_path, smoke_run):
    out = tmp_path / "ranks"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "adabench", "compare", "--models", "adastate,ff-anchor,sliding-window", *SMOKE,
                             "--out", str(out)], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (out / "store").iterdir()] == ["main.sqlite"]       # rank files merged by rank 0
    same_quality(quality(smoke_run), quality(out))
    with sqlite3.connect(out / "store" / "main.sqlite") as db:
        writers = {w for (w,) in db.execute("SELECT writer FROM jobs")}
    assert writers == {"rank-0-of-2", "rank-1-of-2"}


def test_failed_job_is_stored_the_run_goes_on_and_exits_1(tmp_path, capsys):
    from adabench.world.generator import GroundTruthGenerator

    class Exploding(GroundTruthGenerator):
        name = "nan-after-chunk-1"

        def stream(self, prompt, seed, num_frames, init=None, probe=None):
            for chunk in super().stream(prompt, seed, num_frames, init, probe):
                if chunk.index == 1 and "fast" in prompt:
                    chunk.frames[:] = float("nan")
                yield chunk

    if "nan-after-chunk-1" not in GENERATORS:
        GENERATORS.register("nan-after-chunk-1", Exploding)
    out = tmp_path / "failing"
    code = main(["compare", "--models", "nan-after-chunk-1", *SMOKE, "--metrics", "flow", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "non-finite frames" in err and "2 failed" in err
    results = strict_json(out / "results.json")
    model = results["models"]["nan-after-chunk-1"]
    assert model["failed"] == 2 and all("non-finite" in f["error"] for f in model["failures"])
    assert model["metrics"]["flow_magnitude_mean@9/gt"]["n"] == 4               # the other jobs were scored


@pytest.mark.parametrize("args, expected", [
    (["--models", "adastat"], "did you mean 'adastate'"),
    (["--models", "adastate:window"], "expected key=value"),
    (["--models", "adastate:window=3,window=4"], "more than once"),
    (["--models", "adastate,adastate:state=1"], "same model"),
    (["--frames", "0"], "--frames"),
    (["--frames", "abc"], "--frames"),
    (["--frames", "21,99999999999999999999"], "integers from 1 to 100000"),   # ran until memory ran out
    (["--seeds", "x"], "--seeds"),
    (["--init", "video"], "--init"),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--device", "mps"], "--device"),
    (["--shard", "3/2"], "--shard"),
    (["--metrics", "flw"], "did you mean 'flow'"),
    (["--prompts", "no-such-suite"], "neither a prompt suite"),
])
def test_user_mistakes_exit_2_with_one_line(tmp_path, capsys, args, expected):
    base = {"--models": "adastate", "--prompts": "panworld-smoke", "--frames": "6", "--seeds": "1",
            "--out": str(tmp_path / "out")}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    assert main(["compare", *[x for kv in base.items() for x in kv]]) == 2
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "out").exists()                                       # nothing written


def test_prompt_file_mistakes_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    typo = tmp_path / "typo.txt"
    typo.write_text("a fast pan left over a jungle with red circles\n")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    for path, expected in ((empty, "holds no prompts"), (typo, "jungle"), (binary, "cannot read prompt file"),
                           (tmp_path, "neither a prompt suite")):
        assert main(["compare", "--models", "adastate", "--prompts", str(path), "--out", str(tmp_path / "o")]) == 2
        lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
        assert len(lines) == 1 and expected in lines[0], lines


def test_other_plan_in_out_is_refused_and_left_untouched(smoke_run, capsys):
    before = {p: p.read_bytes() for p in smoke_run.rglob("*") if p.is_file()}
    code = main(["compare", "--models", "adastate", "--prompts", "panworld-smoke", "--frames", "7", "--seeds", "1",
                 "--out", str(smoke_run)])
    assert code == 2 and "different plan" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in smoke_run.rglob("*") if p.is_file()} == before


def test_cli_mistake_is_one_line_without_traceback(tmp_path):
    result = run_cli("compare", "--models", "adastate", "--seeds", "-1", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--seeds" in result.stderr


def test_shared_work_changes_no_number():
    """Every scalar of a job equals the same metrics fed alone, horizon by horizon, with nothing shared."""
    from adabench.registry import METRICS
    from adabench.harness.runner import job_context, prefix

    plan = build_plan("adastate", "panworld-smoke", "9,21", "1", "none", "flow,motion-fidelity,dynamic-degree,"
                      "retention,drift,lockin,adherence,frechet")
    entry = plan.model("adastate")
    job = next(j for j in plan.jobs if j.model == "adastate" and "fast" in j.prompt)
    backend, _ = counting_backend()
    outcome = run_job(job, entry, backend)
    assert outcome.status == "ok", outcome.error
    chunks = list(entry.generator.stream(job.prompt, job.seed, 21))
    context, _ = job_context(job, entry, backend)
    for horizon in (9, 21):
        expected = {}
        for spec in job.metrics:
            metric = METRICS.build(spec, **context)                  # fresh, nothing shared
            for chunk in chunks:
                part = prefix(chunk, horizon)
                if part is not None:
                    metric.update(part)
            expected.update(metric.compute().scalars)
        got = outcome.result["horizons"][str(horizon)]["scalars"]
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-12, nan_ok=True), (horizon, name)


def test_timing_chunks_hold_no_pixels():
    """The timed rollout keeps one timing chunk per chunk to the end of the job: a slice of the frames
    kept their storage alive (memory grew ~12 KB a frame, without bound for long rollouts)."""
    from adabench.chunk import Chunk
    from adabench.harness.runner import timing_chunk

    chunk = Chunk(index=0, start_frame=0, frames=torch.rand(3, 3, 64, 64), fps=16.0)
    kept = timing_chunk(chunk)
    assert kept.num_frames == 3 and kept.frames.untyped_storage().nbytes() == 0
