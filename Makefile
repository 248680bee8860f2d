# jitlab: every target creates the project virtual environment (.venv) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install test test-fast bench table2 fig2 clean-venv

help:
	@echo "make test     install (first time) and run the test suite"
	@echo "make table2   install (first time) and regenerate Table 2 at the mini scale"
	@echo "make fig2     install (first time) and run the Figure 2 toy (spiral in D dims) -> reports/fig2.*"
	@echo "make install  create .venv and install jitlab with its dependencies"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

table2: $(STAMP)
	@echo "make table2: the grid runner (issue 'grid orchestrator') is not built yet."
	@echo "Until it lands, train one cell with: $(BIN)/jitlab fit"
	@exit 2

fig2: $(STAMP)
	$(BIN)/python -m jitlab.toy.fig2 --out reports

clean-venv:
	rm -rf $(VENV)
