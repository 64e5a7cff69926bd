# Make targets for the MIO reproduction. `make help` lists them.
# Every target that runs Python sets up the virtual environment on first use (torch pinned in the same
# pip step: an unpinned torch pulls a multi-GB CUDA build on a CPU machine).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
ASSETS := .cache/assets/.downloaded
SCALE  ?= tiny
export HF_HUB_DISABLE_TELEMETRY := 1
export DS_ACCELERATOR ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)

.DEFAULT_GOAL := help
.PHONY: help install test test-real train sweep eval reproduce-table1 report toy lint format data miniature lock clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/constraints.txt requirements/assets.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/constraints.txt "$(TORCH)" -e '.[dev]'
	$(PY) -m pip install -q --no-deps -r requirements/assets.txt
	touch $@

$(ASSETS): requirements/assets-download.txt
	$(PY) -m pip download -q --no-deps -d $(dir $@) -r requirements/assets-download.txt
	touch $@

install: $(STAMP)  ## create .venv and install the repo with its pinned dependencies

test: $(STAMP) $(ASSETS)  ## run the test suite (CPU, offline, a few minutes; one pytest-xdist worker per core, one thread each)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadfile

test-real: $(STAMP) $(ASSETS)  ## the tests on real pretrained weights (SmolLM2-135M from its shipped GGUF; CPU, minutes)
	$(PY) -m pytest -q -m real

train: $(STAMP)  ## the main job: MIO from the miniature SFT model on its on-policy pairs, benchmark before/after (CPU, minutes)
	$(PY) -m miniature.train $(ARGS)

sweep: $(STAMP)  ## a three-method sweep (MIO, DPO, NCA-Pair) on the default model and data, one folder per job
	$(PY) align/run.py -m method=mio,dpo,nca_pair $(ARGS)

eval: $(STAMP)  ## evaluate a checkpoint: make eval ARGS="checkpoint=<dir> benchmarks=mio8 unsafe_code=true"
	$(PY) eval/run.py $(ARGS)

reproduce-table1: $(STAMP)  ## Table 1 end to end: train methods x models, evaluate, tables and figures (SCALE=tiny|paper)
	$(PY) -m analysis.reproduce --scale $(SCALE) $(ARGS)

report: $(STAMP)  ## rebuild the tables, figures and report from existing result files (SCALE=tiny|paper)
	$(PY) -m analysis.report --scale $(SCALE) $(ARGS)

toy: $(STAMP)  ## regenerate every toy figure (PNG, PDF) and its data under toy/results/
	$(PY) toy/run.py $(ARGS)

data: $(STAMP)  ## regenerate the bundled off-policy pairs (data/tiny_prefs/) and build the on-policy ones (miniature)
	$(PY) -m align.tinydata
	$(PY) -m miniature build $(ARGS)

miniature: $(STAMP)  ## build the miniature SFT model and its on-policy pairs (cached; ARGS: model.build.* overrides)
	$(PY) -m miniature build $(ARGS)

lint: $(STAMP)  ## ruff lint and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)  ## ruff autofix and format
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

.PHONY: mutation
mutation: $(STAMP)  ## mutation testing (mutmut, in a copy under .cache/mutation/) of the losses, steps, log-probs, reference cache, checkpoints, data loading; report: docs/mutation.md
	$(PY) -m pip install -q -c requirements/constraints.txt "$(TORCH)" mutmut
	$(PY) tests/mutation.py $(ARGS)

lock: $(STAMP)  ## rewrite requirements/constraints.txt from the current environment
	{ echo "# Exact versions the test suite runs against. Used as pip constraints by the Makefile."; \
	  echo "# Regenerate: make lock"; $(PY) -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > requirements/constraints.txt

clean:  ## remove caches and run outputs (keeps .venv)
	rm -rf .cache outputs multirun .pytest_cache .ruff_cache
