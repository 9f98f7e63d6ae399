# The two commands of the README. Each creates .venv and installs what it needs on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test browser consumers bench bench-formats bench-gpu bench-augment bench-report clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: a looser spec pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/actionreel demo --out demo-output

# Headless Chromium for tests/test_browser.py: installed when missing; where it cannot be, those tests skip.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "no apt-get: browser tests will skip"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	($$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver) \
	  || echo "could not install chromium: browser tests will skip"

# LeRobot's own readers for tests/test_real_consumers.py, in a venv of their own (they pin other torch
# releases than the project's; see tests/consumers/requirements.txt). torchcodec needs FFmpeg's shared
# libraries. Where they cannot be installed, those tests skip.
CONSUMERS := .venv-consumers
consumers: $(CONSUMERS)/.installed

$(CONSUMERS)/.installed: tests/consumers/requirements.txt
	@if ! ldconfig -p 2>/dev/null | grep -q libavcodec && command -v apt-get >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  ($$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q ffmpeg) >/dev/null \
	    || echo "could not install ffmpeg: real-consumer tests will skip"; fi
	@rm -rf $(CONSUMERS)
	@($(PY) -m venv $(CONSUMERS) \
	  && $(CONSUMERS)/bin/pip install -q -r tests/consumers/requirements.txt \
	  && $(CONSUMERS)/bin/pip install -q --no-deps lerobot==0.4.4 \
	  && $(CONSUMERS)/bin/pip install -q --no-deps cosmos-predict2==1.0.9 \
	  && $(CONSUMERS)/bin/pip install -q --no-deps --target $(CONSUMERS)/lerobot-v2.1 lerobot==0.3.3 datasets==3.6.0 \
	  && $(CONSUMERS)/bin/python -c "import torchcodec.decoders, lerobot.datasets.lerobot_dataset" \
	  && $(CONSUMERS)/bin/python -c "import cosmos_predict2.data.action_conditioned.action_conditioned_dataset" \
	  && touch $@) || (rm -rf $(CONSUMERS); echo "could not build $(CONSUMERS): real-consumer tests will skip")

test: $(STAMP) browser consumers
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.vla_loader
	$(BIN)/python -m bench.wam_loader

bench-gpu: $(STAMP)
	$(BIN)/python -m bench.gpu_decode

bench-augment: $(STAMP)
	$(BIN)/python -m bench.augment

bench-report: $(STAMP)
	$(BIN)/python -m bench.report

bench-formats: $(STAMP)
	$(BIN)/python -m bench.ingest_formats

clean:
	rm -rf $(VENV) demo-output .bench .pytest_cache
