"""Optimizers and schedules from configs: counted in updates, decay skips biases and norms."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from conftest import tiny_config
from tfscale import optim
from tfscale.training import Run


def lr_at(name, steps, warmup=10, total=100, end_factor=0.0):
    config = tiny_config(schedule__name=name, schedule__warmup_steps=warmup, train__num_steps=total,
                         schedule__end_factor=end_factor, optimizer__learning_rate=1.0)
    schedule = optim.build_schedule(config.optimizer, config.schedule, total)
    return [float(schedule(s)) for s in steps]


# The optimizer calls its schedule with the updates done before the current one: the first
# update uses schedule(0), the last of a run of `total` updates schedule(total - 1).
# Peak 1, 100 updates, end 0.1; with 10 warmup updates: (first update, last of warmup, last
# update); without warmup: the last update (the first is the peak).
FIRST_AND_LAST = {
    "warmup_cosine": (0.1, 1.0, 0.1, 0.1),
    "warmup_linear": (0.1, 1.0, 0.1, 0.1),
    "inverse_sqrt": (0.1, 1.0, (10 / 99) ** 0.5, 0.1 * (100 / 99) ** 0.5),  # sqrt(warmup / step)
    "constant": (0.1, 1.0, 1.0, 1.0),
    "wsd": (0.1, 1.0, 1.0, 1.0),  # cooldown_steps 0: constant after warmup (tests/test_wsd.py cools down)
}


@pytest.mark.parametrize("name", sorted(optim.SCHEDULES))
def test_schedule_warms_up_to_the_peak_and_reaches_its_end_on_the_last_update(name):
    first, peak, last, last_without_warmup = FIRST_AND_LAST[name]
    assert lr_at(name, [0, 9, 99], end_factor=0.1) == pytest.approx([first, peak, last], rel=1e-6)
    assert lr_at(name, [0, 99], warmup=0, end_factor=0.1) == pytest.approx([1.0, last_without_warmup], rel=1e-6)


def test_schedules_in_between():
    assert lr_at("warmup_cosine", [4, 54], end_factor=0.1) == pytest.approx([0.5, 0.55])
    assert lr_at("warmup_linear", [4, 54], end_factor=0.1) == pytest.approx([0.5, 0.55])
    assert lr_at("inverse_sqrt", [10, 40, 90]) == pytest.approx([1.0, 0.5, 1 / 3], rel=1e-5)
    cosine = lr_at("warmup_cosine", range(9, 100))
    assert all(a > b for a, b in zip(cosine, cosine[1:]))  # decays right after the peak
    for name in ("warmup_cosine", "warmup_linear"):  # and stays at its end past the last update
        assert lr_at(name, [100, 150], end_factor=0.1) == pytest.approx([0.1, 0.1])


def test_inverse_sqrt_never_goes_below_its_end():
    assert lr_at("inverse_sqrt", [250, 2000, 9999], total=10000, end_factor=0.1) == pytest.approx([0.2, 0.1, 0.1])
    assert lr_at("inverse_sqrt", [9999], total=10000) == pytest.approx([(10 / 9999) ** 0.5], rel=1e-5)


@pytest.mark.parametrize("accum_steps", [1, 4])
def test_schedule_advances_once_per_update_not_per_micro_batch(tmp_path, accum_steps):
    """Update k (from 0) uses schedule(k), whatever the number of micro-batches per update (the
    optimizer's `learning_rate` is the one its last update used)."""
    config = tiny_config(train__accum_steps=accum_steps, train__num_steps=6, schedule__warmup_steps=4,
                         schedule__end_factor=0.1, export__saved_model=False)
    run = Run(config, str(tmp_path))
    seen = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(
        (int(run.optimizer.iterations), float(run.optimizer.learning_rate))))
    run.fit(extra_callbacks=[record])
    peak = config.optimizer.learning_rate
    assert seen == [(k + 1, pytest.approx(lr, rel=1e-6))
                    for k, lr in enumerate([peak / 4, peak / 2, 3 * peak / 4, peak, 0.55 * peak, 0.1 * peak])]


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
