"""Cloud TPU VMs, as far as a CPU can test them.

What only a TPU can run (TPUClusterResolver finding chips, initialize_tpu_system, TPUStrategy
training with mixed_bfloat16 and XLA) is not exercised here: these tests check the decisions
tfscale makes before and around those calls, and the one-line error where no TPU exists.
"""
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from tfscale import data, distribute, precision, training
from tfscale.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_tpu(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.setattr(distribute.glob, "glob", lambda pattern: [])


def test_tpu_resolution_without_a_tpu_is_a_one_line_config_error(no_tpu):
    with pytest.raises(ConfigError, match="no TPU is reachable") as error:
        distribute.tpu_address("local")
    assert "\n" not in str(error.value)


def test_tpu_resolution_without_a_tpu_exits_2_with_one_line_from_the_cli(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TPU_NAME"}
    result = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--config=experiments/configs/digits_mlp.py:tiny",
         f"--workdir={tmp_path / 'run'}", "--config.distribute.strategy=tpu"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: distribute.strategy=tpu but no TPU is reachable: TPU_NAME is not set "
                      "and there are no /dev/accel* devices (run on a Cloud TPU VM, or set "
                      "distribute.tpu=NAME)"]
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_tpu_address_local_vm_pod_slice_and_explicit_name(monkeypatch, no_tpu):
    monkeypatch.setattr(distribute.glob, "glob", lambda pattern: ["/dev/accel0"])
    assert distribute.tpu_address("local") == "local"  # a single-host TPU VM
    monkeypatch.setenv("TPU_NAME", "my-v5e-32")
    assert distribute.tpu_address("local") == "my-v5e-32"  # a pod slice: all hosts via the API
    assert distribute.tpu_address("grpc://10.0.0.2:8470") == "grpc://10.0.0.2:8470"


def test_tpu_defaults_are_bfloat16_and_several_updates_per_execution():
    # TPU-only at run time: here the choices themselves are checked.
    assert precision.resolve("auto", "TPU") == "mixed_bfloat16"
    assert training._steps_per_execution(0, "TPU") == training.TPU_STEPS_PER_EXECUTION > 1
    assert training._steps_per_execution(0, "CPU") == training._steps_per_execution(0, "GPU") == 1
    assert training._steps_per_execution(4, "TPU") == 4


def test_training_batches_have_static_shapes():
    # XLA on TPU compiles one program per input shape: every batch must have the same, known one.
    x = tf.random.stateless_uniform([100, 8], seed=[0, 1]).numpy()
    y = tf.range(100).numpy() % 10
    fn = data.train_dataset_fn((x, y), global_batch_size=32, seed=0, start_step=0, num_steps=10)
    ds = fn(tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                       num_replicas_in_sync=4))
    for spec in tf.nest.flatten(ds.element_spec):
        assert spec.shape.is_fully_defined() and spec.shape[0] == 8, spec
    assert all(batch[0].shape == (8, 8) for batch in ds)  # 100 is not a multiple of 32: no remainder
