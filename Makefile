# Two entry points: `make demo` (whole pipeline) and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

# torch is installed FIRST and exactly: a looser spec (or a dependency resolving it) pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,bench,dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests

demo: $(STAMP)
	$(BIN)/metarec demo

clean:
	rm -rf $(VENV) artifacts
