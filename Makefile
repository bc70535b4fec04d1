# The virtual environment lives outside the clone, keyed by the dependency list, so repeat runs
# (and fresh clones on the same machine) reuse it.
PYTHON ?= python3
VENV ?= $(HOME)/.cache/tfscale/venv
STAMP := $(VENV)/.tfscale-$(shell cat setup.cfg | cksum | cut -d' ' -f1)
PY := $(VENV)/bin/python

.PHONY: setup postgres test quick demo digits clean-venv

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.tfscale-* && touch $@

setup: $(STAMP)
	@$(PY) -m pip install --quiet --no-deps -e . >/dev/null

# The main job: a scaling sweep of transformer LMs on the embedded pycode corpus, the fitted law,
# and the compute-optimal model trained, compressed and exported (README, "Scaling laws").
demo: setup
	$(PY) -m experiments.scaling --config=experiments/configs/scaling_lm.py --workdir=runs/scaling_lm

# A one-minute training run on the embedded digits data set.
digits: setup
	$(PY) -m experiments.train --config=experiments/configs/digits_mlp.py --workdir=runs/digits_mlp

# Test files are shared out over TEST_WORKERS processes (pytest-xdist), each file whole on one of
# them (its module fixtures are built once); most tests are start-up and graph building, which
# one process leaves a second core idle for.
TEST_WORKERS ?= 2
test: setup postgres
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

# The inner loop of a change: the tests not marked slow (seconds each).
quick: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" tests

# tests/test_tune_postgres.py starts a PostgreSQL server of its own from the Debian package;
# installed here when missing (as root, e.g. in CI), else the command to run is printed.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "tests/test_tune_postgres.py needs PostgreSQL: sudo apt-get install postgresql"; fi; }

clean-venv:
	rm -rf $(VENV)
