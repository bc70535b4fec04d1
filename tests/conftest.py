"""Test set-up: Keras 2, and the CPU split into 4 logical devices once per test process."""
import contextlib
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


def assert_refused(fragment, workdir, data_overrides, through_command=False):
    """The tiny digits run with `data_overrides` ({"name": ..., "path": ...}) is refused with
    `fragment`, through `experiments.train` (one `error:` line, exit 2) or in-process (the same
    one-line ConfigError), and its workdir is never created."""
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    if through_command:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.run([sys.executable, "-m", "experiments.train", "--config=experiments/configs/digits_mlp.py:tiny",
                               f"--workdir={workdir}", *(f"--config.data.{k}={v}" for k, v in data_overrides.items())],
                              cwd=root, capture_output=True, text=True, timeout=300)
        assert fragment in one_error_line(proc)
    else:
        with pytest.raises(tfscale.ConfigError) as error:
            tfscale.train(tiny_config(**{f"data__{k}": v for k, v in data_overrides.items()}), str(workdir))
        assert fragment in str(error.value) and "\n" not in str(error.value)
    assert not os.path.exists(workdir)


@contextlib.contextmanager
def absl_messages():
    """The messages logged through absl at INFO and up inside the block, as the commands log."""
    import logging as std_logging  # pylint: disable=import-outside-toplevel
    from absl import logging  # pylint: disable=import-outside-toplevel
    records = []
    handler = std_logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.INFO)
    logging.get_absl_logger().addHandler(handler)
    try:
        yield records
    finally:
        logging.get_absl_logger().removeHandler(handler)
        logging.set_verbosity(verbosity)


@pytest.fixture
def make_config():
    return tiny_config
