# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv and install.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SEED ?= 0
SEEDS ?= 0 1
# Keep CPU tests and the demo on the two cores the project's machines have, and TensorFlow quiet.
export TF_CPP_MIN_LOG_LEVEL ?= 2
export OMP_NUM_THREADS ?= 2

.PHONY: demo ablation test install kaggle-datasets clean-venv

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

demo: install
	$(PY) tools/demo.py --out data/demo --seed $(SEED)

# The ablation table of docs/ablation.md: one demo per seed under data/ablation, then one change at a time.
ablation: install
	$(PY) tools/ablation.py --seeds $(SEEDS) --root data/ablation

# The three datasets of docs/kaggle-inference.md (wheels, code, models) under KAGGLE_OUT, for the
# offline notebook notebooks/kaggle_inference.ipynb. KAGGLE_ARGS go to tools/kaggle_datasets.py,
# e.g. KAGGLE_ARGS="--python-version 3.11 --platform manylinux2014_x86_64" or "--packages keras==3.15.1".
KAGGLE_OUT ?= data/kaggle
KAGGLE_CONFIG ?= data/demo/inference.yaml
KAGGLE_ARGS ?=
kaggle-datasets: install
	$(PY) tools/kaggle_datasets.py --out $(KAGGLE_OUT) --config $(KAGGLE_CONFIG) $(KAGGLE_ARGS)

clean-venv:
	rm -rf $(VENV)
