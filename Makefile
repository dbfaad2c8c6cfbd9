# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv and install.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SEED ?= 0
SEEDS ?= 0 1
# Keep CPU tests and the demo on the two cores the project's machines have, and TensorFlow quiet.
export TF_CPP_MIN_LOG_LEVEL ?= 2
export OMP_NUM_THREADS ?= 2

.PHONY: demo ablation test install clean-venv

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

demo: install
	$(PY) -m hpacam.demo --out data/demo --seed $(SEED)

# The ablation table of docs/ablation.md: one demo per seed under data/ablation, then one change at a time.
ablation: install
	$(PY) -m hpacam.ablation --seeds $(SEEDS) --root data/ablation

clean-venv:
	rm -rf $(VENV)
