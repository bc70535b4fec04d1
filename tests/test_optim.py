"""Optimizers and schedules from configs: counted in updates, decay skips biases and norms."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from conftest import tiny_config
from tfscale import optim
from tfscale.run import Run


def lr_at(name, steps, warmup=10, total=100, end_factor=0.0):
    config = tiny_config(schedule__name=name, schedule__warmup_steps=warmup, train__num_steps=total,
                         schedule__end_factor=end_factor, optimizer__learning_rate=1.0)
    schedule = optim.build_schedule(config.optimizer, config.schedule, total)
    return [float(schedule(s)) for s in steps]


def test_schedules_warm_up_linearly_then_decay_to_their_end():
    assert lr_at("warmup_cosine", [0, 4, 9]) == pytest.approx([0.1, 0.5, 1.0])
    assert lr_at("warmup_cosine", [10, 55, 100]) == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)
    assert lr_at("warmup_cosine", [100], end_factor=0.1) == pytest.approx([0.1])
    assert lr_at("warmup_linear", [10, 55, 100]) == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)
    assert lr_at("inverse_sqrt", [10, 40, 90]) == pytest.approx([1.0, 0.5, 1 / 3], rel=1e-5)
    assert lr_at("constant", [0, 50, 99], warmup=0) == pytest.approx([1.0, 1.0, 1.0])


@pytest.mark.parametrize("accum_steps", [1, 4])
def test_schedule_advances_once_per_update_not_per_micro_batch(tmp_path, accum_steps):
    run = Run(tiny_config(train__accum_steps=accum_steps, train__num_steps=6, schedule__warmup_steps=6,
                          export__saved_model=False), str(tmp_path))
    run.fit()
    assert run.step == 6
    assert float(run.optimizer.learning_rate) == pytest.approx(run.config.optimizer.learning_rate)


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_every_optimizer_trains_digits_from_its_config(tmp_path, name):
    lr = {"sgd": 0.1, "adafactor": 3e-2, "lion": 1e-2, "lamb": 3e-2, "muon": 0.02}.get(name, 1e-2)
    run = Run(tiny_config(optimizer__name=name, optimizer__learning_rate=lr, train__num_steps=40,
                          optimizer__weight_decay=0.0 if name == "adam" else 1e-4,
                          export__saved_model=False), str(tmp_path))
    before = run.evaluate()["loss"]
    run.fit()
    assert run.evaluate()["loss"] < 0.7 * before


def test_weight_decay_skips_biases(tmp_path):
    """With zero learning signal (lr applies only through decay), kernels shrink, biases do not."""
    config = tiny_config(optimizer__name="adamw", optimizer__weight_decay=0.5, export__saved_model=False)
    run = Run(config, str(tmp_path))
    network, optimizer = run.network, run.optimizer
    for layer in network.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(tf.ones_like(layer.bias))
    before = {v.name: v.numpy() for v in network.trainable_variables}
    zeros = [tf.zeros_like(v) for v in network.trainable_variables]
    optimizer.apply_gradients(zip(zeros, network.trainable_variables))
    for v in network.trainable_variables:
        if v.shape.rank == 1:
            np.testing.assert_array_equal(v.numpy(), before[v.name])
        else:
            assert np.all(np.abs(v.numpy()) <= np.abs(before[v.name]))
            assert not np.array_equal(v.numpy(), before[v.name])


def test_global_clipnorm_clips_the_whole_update(tmp_path):
    run = Run(tiny_config(optimizer__name="sgd", optimizer__momentum=0.0, optimizer__global_clipnorm=1.0,
                          optimizer__learning_rate=1.0, schedule__name="constant", schedule__warmup_steps=0,
                          export__saved_model=False), str(tmp_path))
    variables = run.network.trainable_variables
    before = [v.numpy() for v in variables]
    grads = [tf.fill(v.shape, 10.0) for v in variables]
    run.optimizer.apply_gradients(zip(grads, variables))
    step = np.sqrt(sum(float(np.sum((v.numpy() - b) ** 2)) for v, b in zip(variables, before)))
    assert step == pytest.approx(1.0, rel=1e-4)
