"""LAMB and Muon against independent NumPy implementations of their papers' update rules."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfscale.optim.lamb import LAMB
from tfscale.optim.muon import Muon, newton_schulz

STEPS = 4
SHAPES = {"kernel": (6, 4), "tall": (3, 8), "conv": (3, 3, 2, 5), "bias": (4,)}


def grads_for(shape, steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(np.float32) for _ in range(steps)]


def initial_weights(names):
    rng = np.random.default_rng(42)
    return {k: rng.normal(size=SHAPES[k]).astype(np.float32) for k in names}


# --- NumPy references -----------------------------------------------------------------------

def lamb_numpy(w, grads, lr, b1=0.9, b2=0.999, eps=1e-6, wd=0.0, adapt=True):
    w, m, v = w.astype(np.float64), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        r = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        if adapt:
            r = r + wd * w
            wn, rn = np.linalg.norm(w), np.linalg.norm(r)
            r = r * (wn / rn if wn > 0 and rn > 0 else 1.0)
        w = w - lr * r
    return w


def adamw_numpy(w, grads, lr, b1=0.9, b2=0.95, eps=1e-8, wd=0.0):
    w, m, v = w.astype(np.float64), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        w = w - lr * wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return w


def newton_schulz_numpy(g, steps=5):
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def muon_numpy(w, grads, lr, mu=0.95, wd=0.0):
    w, buf = w.astype(np.float64), np.zeros_like(w, np.float64)
    for g in grads:
        w = w - lr * wd * w
        buf = mu * buf + g
        d = (g + mu * buf).reshape(-1, w.shape[-1])
        o = newton_schulz_numpy(d) * 0.2 * np.sqrt(max(d.shape))
        w = w - lr * o.reshape(w.shape)
    return w


# --- tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_lamb_matches_numpy_and_skips_excluded_bias(wd):
    initial = initial_weights(["kernel", "conv", "bias"])
    grads = {k: grads_for(SHAPES[k], seed=i) for i, k in enumerate(initial)}
    optimizer = LAMB(learning_rate=0.01, weight_decay=wd)
    variables = {k: tf.Variable(w, name=k) for k, w in initial.items()}
    optimizer.exclude_from_weight_decay(var_list=[variables["bias"]])
    for step in range(STEPS):
        optimizer.apply_gradients([(tf.constant(grads[k][step]), variables[k]) for k in variables])
    for k in initial:
        expected = lamb_numpy(initial[k], grads[k], 0.01, wd=wd, adapt=k != "bias")
        np.testing.assert_allclose(variables[k].numpy(), expected, atol=1e-5, rtol=1e-5)


def test_muon_matches_numpy_for_matrices_convs_and_adamw_for_the_rest():
    initial = initial_weights(["kernel", "tall", "conv", "bias"])
    initial["excluded"] = np.random.default_rng(7).normal(size=(5, 3)).astype(np.float32)
    grads = {k: grads_for(w.shape, seed=i) for i, (k, w) in enumerate(initial.items())}
    variables = {k: tf.Variable(w, name=k) for k, w in initial.items()}
    optimizer = Muon(learning_rate=0.02, weight_decay=0.1)
    optimizer.exclude_from_muon(var_list=[variables["excluded"]])
    optimizer.exclude_from_weight_decay(var_list=[variables["bias"]])
    for step in range(STEPS):
        optimizer.apply_gradients([(tf.constant(grads[k][step]), variables[k]) for k in variables])
    for k in ("kernel", "tall", "conv"):
        np.testing.assert_allclose(variables[k].numpy(), muon_numpy(initial[k], grads[k], 0.02, wd=0.1),
                                   atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(variables["bias"].numpy(), adamw_numpy(initial["bias"], grads["bias"], 0.02),
                               atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(variables["excluded"].numpy(),
                               adamw_numpy(initial["excluded"], grads["excluded"], 0.02, wd=0.1),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(16, 16), (32, 8), (8, 32)])
def test_newton_schulz_gives_singular_values_near_one(shape):
    g = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    singular = np.linalg.svd(newton_schulz(tf.constant(g)).numpy(), compute_uv=False)
    assert singular.min() > 0.5 and singular.max() < 1.5
    np.testing.assert_allclose(newton_schulz(tf.constant(g)).numpy(), newton_schulz_numpy(g), atol=1e-5)


@pytest.mark.parametrize("optimizer", [lambda: LAMB(0.05), lambda: Muon(0.05)])
def test_optimizer_trains_a_model_under_fit_and_mirrored_strategy(optimizer):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    assert len(devices) == 2  # conftest splits the CPU into 4
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    y = x @ np.random.default_rng(1).normal(size=(8, 1)).astype(np.float32)
    with tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice()).scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
        model.compile(optimizer(), "mse")
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0]
