# The virtual environment lives outside the clone, keyed by the dependency list, so repeat runs
# (and fresh clones on the same machine) reuse it.
PYTHON ?= python3
VENV ?= $(HOME)/.cache/tfscale/venv
STAMP := $(VENV)/.tfscale-$(shell cat setup.cfg | cksum | cut -d' ' -f1)
PY := $(VENV)/bin/python

.PHONY: setup test demo bench clean-venv

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.tfscale-* && touch $@

setup: $(STAMP)
	@$(PY) -m pip install --quiet --no-deps -e . >/dev/null

# Runs the main job on the embedded digits data set.
demo: setup
	$(PY) -m experiments.train --config=experiments/configs/digits_mlp.py --workdir=runs/digits_mlp

test: setup
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
