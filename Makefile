# The README's two commands live here: `make quickstart` and `make test`.
# Both create/update a virtual environment first; on a machine without an NVIDIA GPU torch comes from
# PyTorch's CPU index (a few hundred MB) instead of PyPI's CUDA build (several GB).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install quickstart test thesis bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if ! $(BIN)/python -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1; then \
	    echo "installing torch (CUDA build: an NVIDIA GPU is present)"; \
	    $(BIN)/python -m pip install --quiet "torch>=2.5"; \
	  elif $(BIN)/python -c "import urllib.request; urllib.request.urlopen('$(TORCH_CPU_INDEX)/', timeout=5)" 2>/dev/null; then \
	    echo "installing torch $(TORCH_VERSION) (CPU build, from $(TORCH_CPU_INDEX))"; \
	    $(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)" --extra-index-url $(TORCH_CPU_INDEX); \
	  else \
	    echo "installing torch $(TORCH_VERSION) (CPU build expected from the configured package sources)"; \
	    $(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"; \
	  fi; \
	fi
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/llamafoundry quickstart

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# docs/thesis.md and docs/thesis/: the paper's thesis on this machine (about an hour on 2 CPU cores).
thesis: $(STAMP)
	$(BIN)/llamafoundry scaling thesis -o runs/thesis --doc docs/thesis.md --overwrite

bench: $(STAMP)
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist src/*.egg-info
