# `make demo` and `make test` work on a fresh clone: they build .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARCH := $(shell uname -m)
# torch wheels this machine serves from disk (other versions would be downloaded)
ifeq ($(ARCH),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif
STAMP := $(VENV)/.installed

.PHONY: venv test lint format demo bench mutants clean browser

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev]' $(TORCH_PINS)
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check fgvc tests benchmarks
	$(BIN)/ruff format --check fgvc tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format fgvc tests benchmarks
	$(BIN)/ruff check --fix fgvc tests benchmarks

# fgvc serve's page test drives the system's Chromium headless (it fails, with a hint, without
# it); installed from the distribution's packages when make runs as root
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test: lint browser
	$(BIN)/python -m pytest

# Offline fine-tune of a small iSQRT-COV ResNet on the synthetic dataset (CPU, a few minutes).
demo: $(STAMP)
	$(BIN)/fgvc fit --config configs/demo.yaml

bench: $(STAMP)
	$(BIN)/python benchmarks/meta_layer.py
	$(BIN)/python benchmarks/data_pipeline.py

# Mutation testing (mutmut) of the core modules against their own tests; not part of CI or
# `make test`. About 20 minutes on 2 cores; `make mutants TARGETS="sampler reports"` for some.
MUTMUT := mutmut==3.8.1
TARGETS ?=
mutants: $(STAMP)
	$(BIN)/python -m pip install -q $(MUTMUT)
	$(BIN)/python benchmarks/mutants.py $(TARGETS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
