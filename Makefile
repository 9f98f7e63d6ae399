# The two commands of the README. Each creates .venv and installs what it needs on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-formats bench-gpu bench-augment clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: a looser spec pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/actionreel demo --out demo-output

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.vla_loader
	$(BIN)/python -m bench.wam_loader

bench-gpu: $(STAMP)
	$(BIN)/python -m bench.gpu_decode

bench-augment: $(STAMP)
	$(BIN)/python -m bench.augment

bench-formats: $(STAMP)
	$(BIN)/python -m bench.ingest_formats

clean:
	rm -rf $(VENV) demo-output .bench .pytest_cache
