"""What the sweep tests share: the tiny main-job sweep config, its cheaper in-process variant,
copies of a finished sweep, and the planned sizes' costs measured once per module."""
import os
import shutil

import pytest

from experiments.configs import scaling_lm
from conftest import with_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# In-process trainings of the tests: a checkpoint every 8 updates instead of 4 and one log line at
# the end. What the tests check of the runs depends on neither; a test about resuming sets its own
# cadence. (8 also comes before every wsd trunk's first kept checkpoint in these tests, 13 at the
# earliest: a trunk that wrote a kept checkpoint before its first periodic one could not be
# branched from.)
QUIET = dict(checkpoint__every_steps=8, train__log_every_steps=10_000)


def tiny_sweep(**sweep_keys):
    """The tiny main-job sweep; cosine (one run per size and budget) unless a test asks for wsd."""
    sweep_keys.setdefault("schedule", "cosine")
    c = scaling_lm.get_config("tiny")
    c.unlock()
    for key, value in sweep_keys.items():
        c.sweep[key] = value
    return c.lock()


def quiet(config, **overrides):
    """`config` (locked) with `QUIET` and `overrides` (`with_overrides` keys)."""
    return with_overrides(config.unlock(), **{**QUIET, **overrides}).lock()


def copy_sweep(source, target):
    """A finished sweep folder copied for a test that changes it (the shared one stays as it was)."""
    shutil.copytree(source, target, symlinks=True)
    return str(target)


@pytest.fixture(scope="module", autouse=True)
def measured_size_costs():
    """`sweep.plan` builds every size to count its parameters and FLOPs: here once per module for
    each (data, model, sizes), the same numbers for the same inputs."""
    from tfscale.scaling import sweep_plan  # pylint: disable=import-outside-toplevel
    measure, cache = sweep_plan.size_costs, {}

    def size_costs(config, sizes):
        convention = config.scaling.get("params", "total") if "scaling" in config else "total"
        key = (config.data.to_json(sort_keys=True), config.model.to_json(sort_keys=True), convention,
               repr(list(sizes)))
        if key not in cache:
            cache[key] = measure(config, sizes)
        return dict(cache[key])

    sweep_plan.size_costs = size_costs
    try:
        yield
    finally:
        sweep_plan.size_costs = measure
