"""Invariants 1 and 2: accumulation and replicas change memory and speed, not the math."""
import functools
import tempfile

import numpy as np
import pytest

from conftest import tiny_config
from tfscale.training import Run

STEPS = 8
# Largest max |dw| measured (float32, 2-core CPU): 6.0e-8 for accumulation and for 4 replicas
# (SGD; AdamW 1.5e-8 and 3.0e-8), 3.0e-8 for steps_per_execution and XLA. The tests assert about
# 4x that: rounding passes, a wrong scale or a lost micro-batch does not.
TOLERANCE = 2.5e-7


@functools.lru_cache(maxsize=None)
def trained_weights(optimizer, accum_steps=1, strategy="one_device", cpu_devices=0,
                    steps_per_execution=1, jit_compile="false"):
    overrides = dict(optimizer__name=optimizer, train__accum_steps=accum_steps,
                     train__num_steps=STEPS, train__batch_size=64, distribute__strategy=strategy,
                     distribute__cpu_devices=cpu_devices, export__saved_model=False,
                     train__steps_per_execution=steps_per_execution, train__jit_compile=jit_compile,
                     schedule__warmup_steps=0)
    if optimizer == "adamw":  # decay and the step counter must advance once per update
        overrides.update(optimizer__learning_rate=1e-3, optimizer__weight_decay=0.1)
    else:
        overrides.update(optimizer__learning_rate=0.1)
    run = Run(tiny_config(**overrides), tempfile.mkdtemp())
    run.fit()
    assert run.step == STEPS
    return [v.numpy() for v in run.network.trainable_variables]


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("accum_steps", [2, 4, 8])
def test_accumulation_gives_same_weights_as_one_big_batch(optimizer, accum_steps):
    reference = trained_weights(optimizer)
    weights = trained_weights(optimizer, accum_steps)
    print(f"accumulation k={accum_steps} {optimizer}: max |dw| = {max_diff(reference, weights):.2e}")
    assert max_diff(reference, weights) < TOLERANCE


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("accum_steps", [1, 2])
def test_four_mirrored_replicas_give_same_weights_as_one_device(optimizer, accum_steps):
    reference = trained_weights(optimizer)
    weights = trained_weights(optimizer, accum_steps, "mirrored", 4)
    print(f"mirrored x4, k={accum_steps} {optimizer}: max |dw| = {max_diff(reference, weights):.2e}")
    assert max_diff(reference, weights) < TOLERANCE


@pytest.mark.parametrize("steps_per_execution,jit_compile", [(4, "false"), (3, "true")])
def test_steps_per_execution_and_xla_give_same_weights(steps_per_execution, jit_compile):
    reference = trained_weights("adamw")
    weights = trained_weights("adamw", 2, steps_per_execution=steps_per_execution, jit_compile=jit_compile)
    print(f"steps_per_execution={steps_per_execution} jit={jit_compile}: max |dw| = {max_diff(reference, weights):.2e}")
    assert max_diff(reference, weights) < TOLERANCE


def test_training_moves_the_weights(tmp_path):
    """Guards the tests above: equal weights must not come from runs that do nothing."""
    run = Run(tiny_config(train__num_steps=STEPS, export__saved_model=False), str(tmp_path))
    initial = [v.numpy() for v in run.network.trainable_variables]
    run.fit()
    assert max_diff(initial, [v.numpy() for v in run.network.trainable_variables]) > 1e-3
