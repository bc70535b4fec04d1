"""Test set-up: Keras 2, and the CPU split into 4 logical devices once per test process."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfscale  # noqa: E402,F401  (selects Keras 2 before TensorFlow loads)
from tfscale import distribute  # noqa: E402

NUM_TEST_DEVICES = 4
distribute.split_cpu(NUM_TEST_DEVICES)

import pytest  # noqa: E402

from experiments.configs import digits_mlp  # noqa: E402


def with_overrides(config, **overrides):
    """`config` with `section.key=value` overrides (dotted names as kwargs use `__` for the dot:
    train__accum_steps=4). A locked config refuses a key it does not have."""
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split("__")
        for part in path:
            node = node[part]
        node[leaf] = value
    return config


def tiny_config(**overrides):
    """The tiny digits MLP config with overrides (`with_overrides`)."""
    return with_overrides(digits_mlp.get_config("tiny"), **overrides)


def one_error_line(proc):
    """The one `error: ...` line of a command refused as a user mistake (exit 2, no traceback)."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


@pytest.fixture
def make_config():
    return tiny_config
