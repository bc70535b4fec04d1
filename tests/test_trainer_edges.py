"""The trainer at its edges: uneven replica batches, sample weights, metrics outside the loop,
divergence, padded evaluation."""
import collections

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from conftest import tiny_config
from tfscale import distribute, trainer
from tfscale.data import eval_dataset
from tfscale.training import Run

MIRRORED_X4 = {"distribute__strategy": "mirrored", "distribute__cpu_devices": 4}


def strategy(name):
    if name == "one_device":
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy(distribute.split_cpu(2),
                                          cross_device_ops=tf.distribute.ReductionToOneDevice())


def regression(rows, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 5)).astype(np.float32)
    return x, (x @ rng.normal(size=(5, 1))).astype(np.float32)


def mae():
    return [keras.metrics.MeanAbsoluteError(name="mae")]


def sgd():
    return keras.optimizers.SGD(0.1)


def adam():
    return keras.optimizers.Adam(0.01)


def build(where, accum_steps, optimizer=sgd, metrics=mae, weighted_metrics=list,
          steps_per_execution=1):
    """`optimizer` and the metrics are functions: they are made in the strategy's scope."""
    with strategy(where).scope():
        keras.utils.set_random_seed(0)
        network = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"),
                                    keras.layers.Dense(1)])
        model = trainer.AccumulatingModel(network, accum_steps)
        model.compile(optimizer(), loss="mse", metrics=metrics(),
                      weighted_metrics=weighted_metrics(), steps_per_execution=steps_per_execution)
    return model


def max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


@pytest.mark.parametrize("accum_steps", [1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_uneven_last_batch_on_two_replicas_gives_the_one_device_update(accum_steps, weighted):
    """9 examples, batch 8: the last batch has 1 row on replica 0 and none on replica 1."""
    x, y = regression(9)
    sample_weight = np.linspace(0.5, 2.0, 9).astype(np.float32) if weighted else None
    results = {}
    for where in ("one_device", "mirrored"):
        model = build(where, accum_steps)
        logs = model.fit(x, y, sample_weight=sample_weight, batch_size=8, epochs=2, shuffle=False,
                         verbose=0).history
        assert all(np.all(np.isfinite(v)) for v in logs.values()), logs
        results[where] = model.network.get_weights(), logs
    (one, one_logs), (two, two_logs) = results["one_device"], results["mirrored"]
    assert max_diff(one, two) <= 1e-6
    for name in ("loss", "mae"):
        np.testing.assert_allclose(one_logs[name], two_logs[name], rtol=1e-6)


def weighted_mean(values, weights):
    return float(np.sum(values * weights) / np.sum(weights))


@pytest.mark.parametrize("where", ["one_device", "mirrored"])
def test_logged_loss_is_the_weighted_mean_the_gradient_comes_from(where):
    x, y = regression(16)
    w = np.linspace(0.0, 3.0, 16).astype(np.float32)
    model = build(where, 2, weighted_metrics=lambda: [keras.metrics.MeanAbsoluteError(name="wmae")])
    before = model.network.get_weights()
    with tf.GradientTape() as tape:
        per_example = tf.reduce_mean(tf.square(model.network(x) - y), axis=-1)
        loss = tf.reduce_sum(per_example * w) / tf.reduce_sum(w)
    grads = tape.gradient(loss, model.network.trainable_variables)
    logs = model.fit(x, y, sample_weight=w, batch_size=16, epochs=1, verbose=0).history
    np.testing.assert_allclose(logs["loss"][0], float(loss), rtol=1e-6)
    expected = [v - 0.1 * g.numpy() for v, g in zip(before, grads)]
    assert max_diff(expected, model.network.get_weights()) <= 1e-6

    results = model.evaluate(x, y, sample_weight=w, batch_size=5, verbose=0, return_dict=True)
    error = model.network.predict(x, verbose=0) - y
    keras_mean = keras.metrics.Mean()
    keras_mean.update_state(np.mean(error ** 2, axis=-1), sample_weight=w)
    np.testing.assert_allclose(results["loss"], float(keras_mean.result()), rtol=1e-6)
    np.testing.assert_allclose(results["loss"], weighted_mean(error[:, 0] ** 2, w), rtol=1e-6)
    np.testing.assert_allclose(results["wmae"], weighted_mean(np.abs(error[:, 0]), w), rtol=1e-6)
    # Unweighted metrics ignore sample weights, but rows of weight 0 do not count.
    np.testing.assert_allclose(results["mae"], np.mean(np.abs(error[w > 0, 0])), rtol=1e-6)


class Traced:
    """Records the graph each update_state is traced in."""

    def update_state(self, *args, **kwargs):
        self.__dict__.setdefault("graphs", []).append(tf.compat.v1.get_default_graph())
        return super().update_state(*args, **kwargs)


class TracedMean(Traced, keras.metrics.Mean):
    pass


class TracedMAE(Traced, keras.metrics.MeanAbsoluteError):
    pass


@pytest.mark.parametrize("unroll", [False, True])
def test_metrics_are_updated_once_per_update_outside_the_micro_batch_loop(unroll, monkeypatch):
    monkeypatch.setattr(trainer.AccumulatingModel, "unroll_micro_batches", unroll)
    traced = []

    def metrics():
        traced.extend([TracedMean(name="loss"), TracedMAE(name="mae")])
        return traced[1:]

    model = build("mirrored", 4, metrics=metrics)
    model.loss_tracker = traced[0]
    x, y = regression(32)
    logs = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    one_logs = build("one_device", 1).fit(x, y, batch_size=16, epochs=1, shuffle=False,
                                          verbose=0).history
    for name in ("loss", "mae"):
        np.testing.assert_allclose(logs[name], one_logs[name], rtol=1e-6)
    for metric in traced:
        # One update per replica in each traced step (Mirrored traces the step once per replica).
        assert metric.graphs and set(collections.Counter(metric.graphs).values()) == {2}
        assert not any("while" in g.name for g in metric.graphs), [g.name for g in metric.graphs]


def diverging_data(at, updates=5, batch=8):
    """A regression whose squared error overflows to inf in update `at` (1-based)."""
    x, y = regression(updates * batch)
    y[(at - 1) * batch + 1] = 1e30
    return x, y


@pytest.fixture(scope="module")
def two_good_updates():
    """(network weights, optimizer variables) after the 2 updates before the diverging one, by
    (where, accum_steps): the reference each steps_per_execution is compared with."""
    done = {}

    def reference(where, accum_steps):
        if (where, accum_steps) not in done:
            x, y = diverging_data(at=3)
            model = build(where, accum_steps, adam)
            model.fit(x[:16], y[:16], batch_size=8, epochs=1, shuffle=False, verbose=0)
            assert model.diverged_step() is None
            done[where, accum_steps] = (model.network.get_weights(), [v.numpy() for v in model.optimizer.variables])
        return done[where, accum_steps]

    return reference


@pytest.mark.parametrize("steps_per_execution", [1, 4])
@pytest.mark.parametrize("accum_steps", [1, 2])
@pytest.mark.parametrize("where", ["one_device", "mirrored"])
def test_a_diverging_update_and_all_later_ones_are_skipped(where, accum_steps, steps_per_execution,
                                                           two_good_updates):
    x, y = diverging_data(at=3)
    weights, optimizer_variables = two_good_updates(where, accum_steps)
    model = build(where, accum_steps, adam, steps_per_execution=steps_per_execution)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert model.diverged_step() == 3 and int(model.diverged_at.numpy()) == 3
    assert int(model.optimizer.iterations.numpy()) == 2
    assert max_diff(weights, model.network.get_weights()) == 0
    assert max_diff(optimizer_variables, [v.numpy() for v in model.optimizer.variables]) == 0
    model.fit(x[:16], y[:16], batch_size=8, epochs=1, shuffle=False, verbose=0)  # stays skipped
    assert max_diff(weights, model.network.get_weights()) == 0
    assert model.diverged_step() == 3


def test_eval_batches_have_one_static_shape_and_weight_each_example_once():
    x, y = np.arange(10, dtype=np.float32).reshape(10, 1), np.arange(10, dtype=np.int32)
    ds = eval_dataset((x, y), 4)
    assert ds.element_spec[0].shape == (4, 1) and ds.element_spec[2].shape == (4,)
    batches = list(ds.as_numpy_iterator())
    labels = np.concatenate([b[1] for b in batches])
    weights = np.concatenate([b[2] for b in batches])
    np.testing.assert_array_equal(labels[weights == 1], y)
    assert weights.sum() == 10 and len(weights) == 12


@pytest.mark.parametrize("where", [{}, MIRRORED_X4])
def test_padded_evaluation_equals_the_mean_over_the_held_out_split(tmp_path, where):
    config = tiny_config(eval__batch_size=64, train__num_steps=5, export__saved_model=False, **where)
    run = Run(config, str(tmp_path))
    run.fit()
    x, y = run.data.eval
    assert len(y) % 64  # the last batch is padded
    logits = run.network.predict(x.astype(np.float32), verbose=0)
    loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True).numpy()
    results = run.evaluate()
    assert abs(results["loss"] - float(np.mean(loss))) <= 1e-6
    assert abs(results["accuracy"] - float(np.mean(np.argmax(logits, -1) == y))) <= 1e-6
