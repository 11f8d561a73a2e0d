"""``adabench regress`` on hand-made results: the verdict of each case is known in advance."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from adabench.cli import main


def entry(mean, low, high, unit="fraction", direction="higher", source="adherence", backend="evaluator=abc"):
    return {"metric": "x", "frames": 21, "init": "gt", "mean": mean, "ci_low": low, "ci_high": high, "n": 32,
            "unit": unit, "direction": direction, "backend": backend, "source": source, "applicable": True}


BASE = {
    "schema_version": 1,
    "run": {"calibration_ms": 20.0},
    "models": {"adastate": {"spec_hash": "h1", "metrics": {
        "adherence_all@21/gt": entry(0.60, 0.55, 0.65),
        "drift_sharpness_vde@21/gt": entry(1.0, 0.9, 1.1, unit="1", direction="lower", source="drift", backend=None),
        "motion_ratio@21/gt": entry(0.68, 0.62, 0.73, unit="ratio", direction="none", source="motion-fidelity",
                                    backend="flow=dis"),
        "fps@21/gt": entry(60.0, 58.0, 62.0, unit="frames/s", source="throughput", backend=None),
        "chunk_latency_p50_ms@21/gt": entry(45.0, 44.0, 46.0, unit="ms", direction="lower", source="throughput",
                                            backend=None),
        "kv_cache_mb@21/gt": entry(0.5, 0.5, 0.5, unit="MB", direction="lower", source="throughput", backend=None),
    }}},
    "comparisons": [],
}


def write(tmp_path: Path, name: str, results: dict) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def regress(tmp_path, current: dict, *extra: str) -> int:
    base = write(tmp_path, "base", BASE)
    cur = write(tmp_path, "cur", current)
    return main(["regress", "--baseline", str(base), "--current", str(cur / "results.json"), *extra])


def test_identical_results_pass(tmp_path, capsys):
    assert regress(tmp_path, copy.deepcopy(BASE)) == 0
    assert "6 pass, 0 better, 0 worse, 0 incomparable" in capsys.readouterr().out


def test_doctored_worse_quality_fails(tmp_path, capsys):
    worse = copy.deepcopy(BASE)
    worse["models"]["adastate"]["metrics"]["adherence_all@21/gt"] = entry(0.40, 0.35, 0.45)
    assert regress(tmp_path, worse) == 1
    out = capsys.readouterr().out
    assert "adherence_all@21/gt" in out and "worse" in out and "-33.3%" in out


def test_worse_mean_with_overlapping_intervals_passes(tmp_path):
    close = copy.deepcopy(BASE)
    close["models"]["adastate"]["metrics"]["adherence_all@21/gt"] = entry(0.55, 0.50, 0.60)   # -8 %, overlaps
    assert regress(tmp_path, close) == 0


def test_lower_is_better_and_direction_none(tmp_path, capsys):
    doc = copy.deepcopy(BASE)
    metrics = doc["models"]["adastate"]["metrics"]
    metrics["drift_sharpness_vde@21/gt"] = entry(0.5, 0.45, 0.55, unit="1", direction="lower", source="drift",
                                                 backend=None)                                  # better
    metrics["motion_ratio@21/gt"] = entry(0.30, 0.25, 0.35, unit="ratio", direction="none",
                                          source="motion-fidelity", backend="flow=dis")         # never ranked
    assert regress(tmp_path, doc) == 0
    assert "1 better, 0 worse" in capsys.readouterr().out


def test_other_backend_or_spec_is_incomparable(tmp_path, capsys):
    doc = copy.deepcopy(BASE)
    doc["models"]["adastate"]["metrics"]["motion_ratio@21/gt"]["backend"] = "flow=raft-large"
    assert regress(tmp_path, doc) == 0
    assert "backend flow=dis -> flow=raft-large" in capsys.readouterr().out
    doc = copy.deepcopy(BASE)
    doc["models"]["adastate"]["spec_hash"] = "h2"
    assert main(["regress", "--baseline", str(tmp_path / "base"), "--current",
                 str(write(tmp_path, "cur2", doc))]) == 0
    assert "spec_hash h1 -> h2" in capsys.readouterr().out


def test_slower_machine_is_no_regression_but_slower_code_is(tmp_path, capsys):
    slower_machine = copy.deepcopy(BASE)
    slower_machine["run"]["calibration_ms"] = 40.0                      # the machine runs at half speed
    metrics = slower_machine["models"]["adastate"]["metrics"]
    metrics["fps@21/gt"] = entry(30.0, 29.0, 31.0, unit="frames/s", source="throughput", backend=None)
    metrics["chunk_latency_p50_ms@21/gt"] = entry(90.0, 88.0, 92.0, unit="ms", direction="lower",
                                                  source="throughput", backend=None)
    assert regress(tmp_path, slower_machine) == 0
    slower_code = copy.deepcopy(slower_machine)
    slower_code["run"]["calibration_ms"] = 20.0                         # same machine, timings doubled
    assert main(["regress", "--baseline", str(tmp_path / "base"), "--current",
                 str(write(tmp_path, "cur2", slower_code))]) == 1
    out = capsys.readouterr().out
    assert "fps@21/gt" in out and "-50.0%" in out and "chunk_latency_p50_ms@21/gt" in out


def test_tolerance_option(tmp_path):
    slower = copy.deepcopy(BASE)
    slower["models"]["adastate"]["metrics"]["fps@21/gt"] = entry(45.0, 44.0, 46.0, unit="frames/s",
                                                                  source="throughput", backend=None)   # -25 %
    assert regress(tmp_path, slower) == 1
    assert main(["regress", "--baseline", str(tmp_path / "base"), "--current", str(tmp_path / "cur"),
                 "--tolerance", "fps=0.3"]) == 0


def slope_results(slope: tuple[float, float, float], p50: float = 45.0) -> dict:
    results = copy.deepcopy(BASE)
    metrics = results["models"]["adastate"]["metrics"]
    metrics["chunk_latency_slope_ms_per_chunk@21/gt"] = entry(*slope, unit="ms/chunk", direction="lower",
                                                              source="throughput", backend=None)
    metrics["chunk_latency_p50_ms@21/gt"] = entry(p50, p50 - 1, p50 + 1, unit="ms", direction="lower",
                                                  source="throughput", backend=None)
    return results


def test_latency_slope_is_compared_as_growth_per_chunk(tmp_path, capsys):
    """A slope near zero doubling is no regression (it was a relative change of noise); a cost that
    grows by 10 % of a chunk per chunk, with intervals apart, is; a wide interval is not evidence."""
    base = write(tmp_path, "base", slope_results((0.05, -0.2, 0.3)))
    noise = write(tmp_path, "noise", slope_results((-0.3, -0.6, 0.1)))          # sign flip of a near-zero slope
    grows = write(tmp_path, "grows", slope_results((4.5, 4.0, 5.0)))            # +4.5 ms/chunk on 45 ms: 10 %
    wide = write(tmp_path, "wide", slope_results((4.5, -1.0, 10.0)))
    slower_machine = slope_results((0.1, -0.4, 0.6), p50=90.0)                  # everything twice as slow
    slower_machine["run"]["calibration_ms"] = 40.0
    slower_machine["models"]["adastate"]["metrics"]["fps@21/gt"] = entry(30.0, 29.0, 31.0, unit="frames/s",
                                                                          source="throughput", backend=None)
    slower = write(tmp_path, "slower", slower_machine)

    def verdict(current: Path) -> int:
        return main(["regress", "--baseline", str(base), "--current", str(current)])

    assert verdict(noise) == 0
    assert verdict(slower) == 0
    assert verdict(wide) == 0
    capsys.readouterr()
    assert verdict(grows) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "chunk_latency_slope" in line)
    assert "worse" in row and "+9.9%" in row                                    # 0.1 - 0.0011 of a chunk per chunk
    assert main(["regress", "--baseline", str(base), "--current", str(grows), "--tolerance", "growth=0.2"]) == 0


def test_kind_tolerance_applies_to_every_metric_of_that_kind(tmp_path):
    slower = copy.deepcopy(BASE)
    metrics = slower["models"]["adastate"]["metrics"]
    metrics["fps@21/gt"] = entry(40.0, 39.0, 41.0, unit="frames/s", source="throughput", backend=None)  # -33 %
    metrics["chunk_latency_p50_ms@21/gt"] = entry(60.0, 59.0, 61.0, unit="ms", direction="lower",
                                                  source="throughput", backend=None)                   # +33 %
    assert regress(tmp_path, slower) == 1
    cur = str(tmp_path / "cur")
    assert main(["regress", "--baseline", str(tmp_path / "base"), "--current", cur, "--tolerance", "speed=0.4"]) == 0
    assert main(["regress", "--baseline", str(tmp_path / "base"), "--current", cur, "--tolerance", "speed=0.4",
                 "--tolerance", "fps=0.1"]) == 1                                # the scalar wins over the kind


@pytest.mark.parametrize("case, expected", [
    ("missing", "no results.json"),
    ("broken", "not readable JSON"),
    ("nan", "not readable JSON"),
    ("tolerance", "--tolerance"),
])
def test_bad_input_exits_2(tmp_path, capsys, case, expected):
    base = write(tmp_path, "base", BASE)
    current = tmp_path / "nothing"
    extra = []
    if case == "broken":
        current = write(tmp_path, "broken", {})
        (current / "results.json").write_text("{not json")
    elif case == "nan":
        current = write(tmp_path, "nan", {})
        (current / "results.json").write_text('{"schema_version": 1, "run": {}, "models": {}, "x": NaN}')
    elif case == "tolerance":
        current, extra = base, ["--tolerance", "fps"]
    assert main(["regress", "--baseline", str(base), "--current", str(current), *extra]) == 2
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(lines) == 1 and expected in lines[0], lines


def test_reference_row_speed_is_not_checked_but_its_quality_is(tmp_path, capsys):
    base = copy.deepcopy(BASE)
    base["models"]["panworld-gt"] = copy.deepcopy(base["models"]["adastate"]) | {"role": "reference"}
    slower = copy.deepcopy(base)
    gt = slower["models"]["panworld-gt"]["metrics"]
    gt["fps@21/gt"] = entry(6.0, 5.8, 6.2, unit="frames/s", source="throughput", backend=None)    # 10x slower
    base_folder, cur_folder = write(tmp_path, "b", base), write(tmp_path, "c", slower)
    assert main(["regress", "--baseline", str(base_folder), "--current", str(cur_folder)]) == 0
    assert "9 pass, 0 better, 0 worse, 3 incomparable" in capsys.readouterr().out     # the reference's 3 timings
    assert main(["regress", "--baseline", str(base_folder), "--current", str(cur_folder), "--all"]) == 0
    assert "reference row's timings" in capsys.readouterr().out
    gt["adherence_all@21/gt"] = entry(0.40, 0.35, 0.45)                                           # quality: checked
    cur_folder = write(tmp_path, "c2", slower)
    assert main(["regress", "--baseline", str(base_folder), "--current", str(cur_folder)]) == 1


def test_timings_are_compared_by_their_median_over_jobs(tmp_path, capsys):
    from adabench.harness.aggregate import _entry

    def run(first_chunk_ms: list[float], with_median: bool = True) -> dict:
        results = copy.deepcopy(BASE)
        metric = _entry(first_chunk_ms, {"unit": "ms", "direction": "lower", "metric": "throughput"},
                        "first_chunk_latency_ms", "21", "gt")
        if not with_median:
            metric.pop("median")                                            # results written before medians
        results["models"]["adastate"]["metrics"] = {"first_chunk_latency_ms@21/gt": metric}
        return results

    steady = [35.0, 36.0, 34.0, 35.5, 35.0, 34.5]
    one_stalled = steady[:-1] + [370.0]                                     # mean 91 ms, median 35.25 ms
    all_slower = [1.5 * x for x in steady]
    base = write(tmp_path, "base", run(steady))

    def verdict(name: str, results: dict) -> int:
        return main(["regress", "--baseline", str(base), "--current", str(write(tmp_path, name, results))])

    assert run(one_stalled)["models"]["adastate"]["metrics"]["first_chunk_latency_ms@21/gt"]["median"] == 35.25
    assert verdict("stalled", run(one_stalled)) == 0
    assert verdict("slower", run(all_slower)) == 1
    assert "+50.0%" in capsys.readouterr().out
    assert verdict("stalled-mean-only", run(one_stalled, with_median=False)) == 1      # the mean, as before
