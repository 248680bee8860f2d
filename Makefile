# jitlab: every target creates the project virtual environment (.venv) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

SCALE  ?= mini
# extra arguments for `jitlab grid run`, e.g. GRID_ARGS="--data_root /data/imagenet --launcher slurm"
GRID_ARGS ?=
# training seeds per cell (empty: the grid file's scales.SCALE.train_seeds), e.g. make table2 TRAIN_SEEDS=3
TRAIN_SEEDS ?=
# every grid file is a target; `make figures` runs the paper's tables and figures at the chosen scale
GRIDS  := $(basename $(notdir $(wildcard experiments/grids/*.yaml)))
FIGURES := table2 table3 fig4 table4 table5 table6
SEEDS_ARG := $(if $(TRAIN_SEEDS),--train_seeds $(TRAIN_SEEDS),)

.PHONY: help install test bench bench-data $(GRIDS) figures clean-venv

help:
	@echo "make test     install (first time) and run the test suite"
	@echo "make table2   install (first time) and regenerate Table 2 at the mini scale (SCALE=paper: ImageNet)"
	@echo "make figures  every grid: table2 table3 fig4 table4 table5 table6"
	@echo "make bench    training/sampling speed (mini, JiT-B/16) -> reports/bench.md, then bench-data"
	@echo "make bench-data  data-loading throughput -> reports/bench-data.md"
	@echo "make fig2     install (first time) and run the Figure 2 toy grid (spiral in D dims) -> reports/fig2.*"
	@echo "make install  create .venv and install jitlab with its dependencies"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# one grid: run every cell (finished cells are skipped), then write reports/NAME.{csv,md,tex,png} and keep the
# trainings' small files (not checkpoints) under reports/runs, from which `jitlab report NAME --runs reports/runs`
# regenerates the report (the report is written even when a cell failed: it shows which; make still exits non-zero)
$(GRIDS): $(STAMP)
	$(BIN)/jitlab grid run $@ --scale $(SCALE) $(SEEDS_ARG) $(GRID_ARGS); status=$$?; \
	$(BIN)/jitlab report $@ --scale $(SCALE) --keep reports/runs && exit $$status

figures: $(FIGURES)

# extra arguments for `jitlab bench`, e.g. BENCH_ARGS="--threads 1 --model mini"
BENCH_ARGS ?=

bench: $(STAMP)
	$(BIN)/jitlab bench --out reports/bench.md $(BENCH_ARGS)
	$(MAKE) bench-data

bench-data: $(STAMP)
	$(BIN)/jitlab bench-data --out reports/bench-data.md

clean-venv:
	rm -rf $(VENV)
