# adabench: every target sets up .venv itself, so each works on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-all bench perf clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,learned]'
	touch $(STAMP)

install: $(STAMP)

## Unit, metric and integration tests (the CI gate; about a few minutes on 2 cores).
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

## Everything, the slow checks included.
test-all: $(STAMP)
	$(PY) -m pytest -q

## The main job on the embedded default: the three policies and the ground truth on
## panworld-default, 2 seeds, image- and text-to-video, horizons 21/51/126, one process per
## core (torchrun; results folder reports/latest/, resumed if interrupted).
BENCH_PROCS ?= 2
BENCH_ARGS  ?= --models adastate,ff-anchor,sliding-window --prompts panworld-default \
               --frames 21,51,126 --seeds 2 --init gt,none --save-videos
bench: $(STAMP)
	$(VENV)/bin/torchrun --standalone --nproc_per_node $(BENCH_PROCS) -m adabench compare $(BENCH_ARGS) \
		--out reports/latest

## Speed benchmarks (pytest-benchmark): medians and ratios, measured in one run.
perf: $(STAMP)
	$(PY) -m pytest -q tests/bench_engine.py tests/bench_metrics.py --benchmark-enable \
		--benchmark-columns=median,iqr,rounds --benchmark-sort=name

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .benchmarks reports/latest
