# Two entry points: `make demo` (the main job end to end) and `make test` (the suite).
# Both create .venv on first use and are safe to run again.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is installed first and pinned so pip never swaps in a different build; override
# on machines that need another wheel, e.g. `make demo TORCH="torch==2.13.0 --index-url ..."`.
TORCH  ?= torch==2.13.0
PRESET ?= shakespeare-bpe

.PHONY: demo test lint clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/lmforge pretrain $(PRESET) --run.name=demo --run.overwrite=true

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs
