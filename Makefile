# adabench: every target sets up .venv itself, so each works on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-all smoke smoke-reference bench bench-reference model-quality model-sheets perf clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,learned,wan]'
	touch $(STAMP)

install: $(STAMP)

## Unit, metric and integration tests, then the smoke comparison checked against its
## committed reference (the CI gate).
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"
	$(MAKE) --no-print-directory smoke

## A short comparison on panworld-smoke, then `adabench regress` against reports/reference/smoke:
## exit 1 when a model got worse (beyond tolerance, intervals apart) or slower (calibrated).
## Rollouts of 3-7 chunks of a few ms time noisily: two back-to-back runs on one 2-core machine
## differed by up to 37 % in calibrated frames/s, so speed fails only beyond 50 % (a 2x slowdown
## is caught) and the latency slope beyond 10 % of a chunk per chunk.
SMOKE_ARGS ?= --models adastate,ff-anchor,sliding-window --prompts panworld-smoke --frames 9,21 --seeds 2 \
              --init gt,none --quiet
SMOKE_TOLERANCE ?= --tolerance speed=0.5 --tolerance growth=0.1
SMOKE_OUT  := build/smoke
smoke: $(STAMP)
	rm -rf $(SMOKE_OUT)
	$(PY) -m adabench compare $(SMOKE_ARGS) --out $(SMOKE_OUT)
	$(PY) -m adabench regress --baseline reports/reference/smoke --current $(SMOKE_OUT) $(SMOKE_TOLERANCE)

## Rewrite the smoke reference from this commit (commit it only from a known-good state).
smoke-reference: $(STAMP)
	rm -rf $(SMOKE_OUT)
	$(PY) -m adabench compare $(SMOKE_ARGS) --out $(SMOKE_OUT)
	mkdir -p reports/reference/smoke
	cp $(SMOKE_OUT)/results.json $(SMOKE_OUT)/summary.md reports/reference/smoke/

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

## Copy reports/latest (without its store and raw videos) to reports/reference/bench, the
## baseline for `adabench regress --baseline reports/reference/bench --current reports/latest`.
BENCH_REFERENCE_FILES := results.json samples.parquet plan.json summary.md report.html report_files
bench-reference:
	rm -rf reports/reference/bench.part && mkdir -p reports/reference/bench.part
	cd reports/latest && cp -r $(BENCH_REFERENCE_FILES) ../reference/bench.part/
	rm -rf reports/reference/bench && mv reports/reference/bench.part reports/reference/bench

## The embedded models' quality table (docs/models.md): the models beside other seeds' ground truth
## (panworld-gt:seed_offset=1000), the codec round trip of the same and of other seeds, on seeds
## used for no choice, both init modes, the training horizon; then the table. --resume reuses the
## folder's finished jobs (add a model to QUALITY_MODELS and only its jobs run).
QUALITY_MODELS ?= adastate,ff-anchor,sliding-window
QUALITY_ROWS   := panworld-gt:seed_offset=1000,panworld-codec:seed_offset=1000,panworld-codec
QUALITY_ARGS   ?= --prompts panworld-default --frames 24 --seeds 4,5,6,7 --init gt,none \
                  --metrics motion-fidelity,adherence,frechet,appearance
QUALITY_OUT    ?= runs/eval-quality
model-quality: $(STAMP)
	$(PY) -m adabench compare --models $(QUALITY_MODELS),$(QUALITY_ROWS) $(QUALITY_ARGS) --out $(QUALITY_OUT) --resume --quiet
	$(PY) -m adabench.training.quality $(QUALITY_OUT)

## Contact sheets of the shipped models (ground truth, image- and text-to-video at frames 0-126).
model-sheets: $(STAMP)
	$(PY) -m adabench.training.sheets --models $(QUALITY_MODELS) --out reports/reference/models

## Speed benchmarks (pytest-benchmark): medians and ratios, measured in one run, saved per
## machine under .benchmarks/HOST/, and compared with this machine's previous run when there
## is one (fails when a median got slower by more than PERF_FAIL: two back-to-back runs on one
## 2-core VM differed by up to 37 % on the shortest benchmarks, so a 2x slowdown is what fails).
PERF_STORE := .benchmarks/$(shell hostname)
PERF_FAIL  ?= median:50%
perf: $(STAMP)
	$(PY) -m pytest -q tests/bench_engine.py tests/bench_metrics.py --benchmark-enable \
		--benchmark-columns=median,iqr,rounds --benchmark-sort=name \
		--benchmark-storage=file://$(PERF_STORE) --benchmark-autosave \
		$$(ls $(PERF_STORE)/*/*.json >/dev/null 2>&1 && echo --benchmark-compare --benchmark-compare-fail=$(PERF_FAIL))

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .benchmarks reports/latest
