"""LAMB and Muon against independent NumPy implementations of their papers' update rules."""
import tfscale  # noqa: F401  (Keras 2 before TensorFlow loads, with or without conftest)

import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfscale.optim.lamb import LAMB
from tfscale.optim.muon import Muon, newton_schulz

STEPS = 4
# tall and conv (18 x 5 flattened) have rows > cols, wide rows < cols; excluded is a matrix that
# Muon is told to leave to AdamW, bias a vector that gets AdamW anyway and no weight decay.
# query is a MultiHeadAttention query kernel [d=4, heads=2, head_dim=3] (a 4 x 6 matrix: the heads'
# projections side by side), attn_out its output kernel [heads, head_dim, d] (6 x 4: stacked),
# attn_bias the query's [heads, head_dim] bias (AdamW, no decay, although of rank 2).
SHAPES = {"tall": (6, 4), "wide": (3, 8), "conv": (3, 3, 2, 5), "bias": (4,), "excluded": (5, 3),
          "query": (4, 2, 3), "attn_out": (2, 3, 4), "attn_bias": (2, 3)}
NO_DECAY = ("bias", "attn_bias")


def initial_weights():
    rng = np.random.default_rng(42)
    return {k: (0.5 * rng.normal(size=s)).astype(np.float32) for k, s in SHAPES.items()}


def gradients(steps=STEPS):
    rng = np.random.default_rng(0)
    return {k: [rng.normal(size=s).astype(np.float32) for _ in range(steps)] for k, s in SHAPES.items()}


# --- NumPy references (lr: a number, or one per step) ------------------------------------------

def lamb_numpy(w, grads, lr, b1=0.9, b2=0.999, eps=1e-6, wd=0.0, adapt=True):
    w, m, v = w.astype(np.float64), 0.0, 0.0
    for t, (g, lr_t) in enumerate(zip(grads, np.broadcast_to(lr, len(grads))), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        r = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        if adapt:  # decayed variables only; the others get neither decay nor trust ratio
            r = r + wd * w
            wn, rn = np.linalg.norm(w), np.linalg.norm(r)
            r = r * (wn / rn if wn > 0 and rn > 0 else 1.0)
        w = w - lr_t * r
    return w


def adamw_numpy(w, grads, lr, b1=0.9, b2=0.95, eps=1e-8, wd=0.0):
    w, m, v = w.astype(np.float64), 0.0, 0.0
    for t, (g, lr_t) in enumerate(zip(grads, np.broadcast_to(lr, len(grads))), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr_t * wd * w - lr_t * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return w


def newton_schulz_numpy(g, steps=5):
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


# Each kernel as the matrix of its linear map (fan_in x fan_out), and back.
def heads_side_by_side(k):  # [d, heads, head_dim] -> [d, heads * head_dim]: x W = [x W_1 | x W_2 ...]
    return np.concatenate([k[:, h, :] for h in range(k.shape[1])], axis=1)


def heads_stacked(k):  # [heads, head_dim, d] -> [heads * head_dim, d]: sum_h o_h W_h
    return np.concatenate(list(k), axis=0)


def im2col(k):  # [kh, kw, cin, cout] -> [kh * kw * cin, cout]: patches times kernel
    return np.stack([k[..., o].ravel() for o in range(k.shape[-1])], axis=1)


TO_MATRIX = {"query": heads_side_by_side, "attn_out": heads_stacked, "conv": im2col}


def from_matrix(kind, m, shape):
    if kind == "query":
        return np.stack(np.split(m, shape[1], axis=1), axis=1)
    if kind == "attn_out":
        return np.stack(np.split(m, shape[0], axis=0), axis=0)
    if kind == "conv":
        return np.stack([m[:, o].reshape(shape[:-1]) for o in range(shape[-1])], axis=-1)
    return m


def muon_numpy(w, grads, lr, mu=0.95, nesterov=True, wd=0.0, kind="matrix"):
    w, buf = w.astype(np.float64), 0.0
    for g, lr_t in zip(grads, np.broadcast_to(lr, len(grads))):
        buf = mu * buf + g
        d = TO_MATRIX.get(kind, np.asarray)((g + mu * buf) if nesterov else buf)
        o = newton_schulz_numpy(d) * 0.2 * np.sqrt(max(d.shape))  # (fan_in, fan_out)
        w = w - lr_t * wd * w - lr_t * from_matrix(kind, o, w.shape)
    return w


# --- the two optimizers as the framework sets them up, and what NumPy expects of them ----------

def make_lamb(lr, variables, wd=0.01):
    optimizer = LAMB(lr, weight_decay=wd)
    optimizer.exclude_from_weight_decay(var_list=[variables[k] for k in NO_DECAY])
    return optimizer


def expect_lamb(initial, grads, lr, wd=0.01):
    return {k: lamb_numpy(w, grads[k], lr, wd=wd, adapt=k not in NO_DECAY) for k, w in initial.items()}


def make_muon(lr, variables, nesterov=True):
    """As the framework sets Muon up from the variables' roles."""
    optimizer = Muon(lr, nesterov=nesterov, weight_decay=0.1)
    optimizer.exclude_from_muon(var_list=[variables["excluded"], variables["attn_bias"]])
    optimizer.set_matrix_shapes([variables["query"], variables["attn_out"]], [(4, 6), (6, 4)])
    optimizer.exclude_from_weight_decay(var_list=[variables[k] for k in NO_DECAY])
    return optimizer


def expect_muon(initial, grads, lr, nesterov=True):
    return {**{k: adamw_numpy(initial[k], grads[k], lr, wd=0.0) for k in NO_DECAY},
            "excluded": adamw_numpy(initial["excluded"], grads["excluded"], lr, wd=0.1),
            **{k: muon_numpy(initial[k], grads[k], lr, nesterov=nesterov, wd=0.1, kind=k)
               for k in ("tall", "wide", "conv", "query", "attn_out")}}


CASES = {"lamb": (make_lamb, expect_lamb), "muon": (make_muon, expect_muon)}


def apply_steps(optimizer, variables, grads, steps, first=0):
    for step in range(first, first + steps):
        optimizer.apply_gradients([(tf.constant(grads[k][step]), variables[k]) for k in variables])


def assert_matches(variables, expected):
    for k, want in expected.items():
        np.testing.assert_allclose(np.asarray(variables[k]), want, atol=1e-5, rtol=1e-5, err_msg=k)


# --- tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_lamb_matches_numpy_with_trust_ratio_and_decay_and_neither_for_an_excluded_bias(wd):
    initial, grads = initial_weights(), gradients()
    variables = {k: tf.Variable(w, name=k) for k, w in initial.items()}
    optimizer = make_lamb(0.01, variables, wd=wd)
    apply_steps(optimizer, variables, grads, STEPS)
    assert_matches(variables, expect_lamb(initial, grads, 0.01, wd=wd))


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_matches_numpy_on_tall_wide_conv_and_attention_kernels_and_adamw_on_the_rest(nesterov):
    initial, grads = initial_weights(), gradients()
    variables = {k: tf.Variable(w, name=k) for k, w in initial.items()}
    optimizer = make_muon(0.02, variables, nesterov=nesterov)
    apply_steps(optimizer, variables, grads, STEPS)
    assert_matches(variables, expect_muon(initial, grads, 0.02, nesterov=nesterov))
    # Only what each variable needs: a momentum buffer per Muon matrix, m and v per AdamW one.
    slots = {re.search(r"(\w+)/(\w+):0$", v.name).groups() for v in optimizer.variables[1:]}  # [0]: step
    assert slots == {("momentum", k) for k in ("tall", "wide", "conv", "query", "attn_out")} | {
        (s, k) for s in ("m", "v") for k in ("bias", "excluded", "attn_bias")}
    with pytest.raises(ValueError, match="before the optimizer is built"):
        optimizer.exclude_from_muon(var_names=["tall"])
    with pytest.raises(ValueError, match="before the optimizer is built"):
        optimizer.set_matrix_shapes([variables["tall"]], [(4, 6)])


def test_muon_refuses_a_matrix_shape_of_another_size():
    with pytest.raises(ValueError, match="no \\(4, 4\\) matrix"):
        Muon(0.02).set_matrix_shapes([tf.Variable(tf.zeros((4, 2, 3)))], [(4, 4)])


def test_muon_excludes_matrices_by_name_pattern():
    initial, grads = initial_weights(), gradients()
    variables = {k: tf.Variable(w, name=k) for k, w in initial.items()}
    optimizer = Muon(0.02)
    optimizer.exclude_from_muon(var_names=["^excl"])
    apply_steps(optimizer, variables, grads, STEPS)
    np.testing.assert_allclose(variables["excluded"].numpy(),
                               adamw_numpy(initial["excluded"], grads["excluded"], 0.02), atol=1e-5)
    np.testing.assert_allclose(variables["tall"].numpy(), muon_numpy(initial["tall"], grads["tall"], 0.02),
                               atol=1e-5)


@pytest.mark.parametrize("shape", [(16, 16), (32, 8), (8, 32)])
def test_newton_schulz_makes_singular_values_near_one(shape):
    g = np.random.default_rng(1).normal(size=shape).astype(np.float32)  # 16 x 16: condition ~180
    out = newton_schulz(tf.constant(g)).numpy()
    assert out.shape == shape
    singular = np.linalg.svd(out, compute_uv=False)
    assert singular.min() > 0.5 and singular.max() < 1.5, singular  # the quintic is not exact
    np.testing.assert_allclose(out, newton_schulz_numpy(g), atol=1e-5)


def test_newton_schulz_runs_in_float32_for_bfloat16_input():
    g = np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32)
    out = newton_schulz(tf.constant(g, tf.bfloat16))
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), newton_schulz_numpy(g), atol=0.05)


@pytest.mark.parametrize("name", sorted(CASES))
def test_optimizer_follows_a_learning_rate_schedule_inside_tf_function(name):
    make, expect = CASES[name]
    initial, grads = initial_weights(), gradients()
    variables = {k: tf.Variable(w, name=k) for k, w in initial.items()}
    schedule = keras.optimizers.schedules.ExponentialDecay(0.02, decay_steps=1, decay_rate=0.5)
    optimizer = make(schedule, variables)
    step = tf.function(lambda g: optimizer.apply_gradients(zip(g, variables.values())))
    for t in range(STEPS):
        step([tf.constant(grads[k][t]) for k in variables])
    assert_matches(variables, expect(initial, grads, [0.02 * 0.5**t for t in range(STEPS)]))


@pytest.mark.parametrize("name", sorted(CASES))
def test_optimizer_resumes_exactly_from_a_checkpoint(tmp_path, name):
    """Slots are saved under stable names, so a fresh process's optimizer picks them up."""
    make, expect = CASES[name]
    initial, grads = initial_weights(), gradients()
    variables = {k: tf.Variable(w, name=k) for k, w in initial.items()}
    optimizer = make(0.02, variables)
    apply_steps(optimizer, variables, grads, 2)
    path = tf.train.Checkpoint(variables=variables, optimizer=optimizer).save(str(tmp_path / "ckpt"))

    fresh = {k: tf.Variable(tf.zeros_like(w), name=k) for k, w in initial.items()}
    resumed = make(0.02, fresh)
    resumed.build(list(fresh.values()))
    tf.train.Checkpoint(variables=fresh, optimizer=resumed).restore(path).assert_consumed()
    apply_steps(resumed, fresh, grads, STEPS - 2, first=2)
    assert_matches(fresh, expect(initial, grads, 0.02))


@pytest.mark.parametrize("name", sorted(CASES))
def test_optimizer_matches_numpy_under_mirrored_strategy_with_summed_replica_gradients(name):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.skip(f"needs 2 logical CPUs (the conftest splits the CPU into 4); have {len(devices)}")
    strategy = tf.distribute.MirroredStrategy(devices[:2],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    make, expect = CASES[name]
    initial, grads = initial_weights(), gradients()
    with strategy.scope():
        variables = {k: tf.Variable(w, name=k) for k, w in initial.items()}
        optimizer = make(0.02, variables)
    # Replica 1 sees noise, replica 0 the gradient minus that noise: only their sum is the gradient.
    rng = np.random.default_rng(9)
    noise = {k: [rng.normal(size=g.shape).astype(np.float32) for g in gs] for k, gs in grads.items()}
    parts = [{k: [g - n for g, n in zip(grads[k], noise[k])] for k in grads}, noise]

    @tf.function
    def step(g):
        strategy.run(lambda g: optimizer.apply_gradients(zip(g, variables.values())), args=(g,))

    for t in range(STEPS):
        step(strategy.experimental_distribute_values_from_function(
            lambda ctx: [tf.constant(parts[ctx.replica_id_in_sync_group][k][t]) for k in variables]))
    expected = expect(initial, grads, 0.02)
    for replica in range(2):
        assert_matches({k: v.values[replica] for k, v in variables.items()}, expected)


@pytest.mark.parametrize("optimizer", [lambda: LAMB(0.05, weight_decay=1e-3),
                                       lambda: Muon(0.05, weight_decay=1e-3)], ids=["lamb", "muon"])
def test_optimizer_trains_a_dense_model_under_fit(optimizer):
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    y = x @ np.random.default_rng(1).normal(size=(8, 1)).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    optimizer = optimizer()
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v.shape.rank <= 1])
    if isinstance(optimizer, Muon):
        optimizer.exclude_from_muon(var_list=[model.layers[-1].kernel])  # the output layer: AdamW
    model.compile(optimizer, "mse")
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0).history["loss"]
    assert history[-1] < 0.3 * history[0], history


@pytest.mark.parametrize("optimizer", [
    lambda: LAMB(3e-3, beta_2=0.99, weight_decay=0.01, global_clipnorm=1.0),
    lambda: Muon(0.01, momentum=0.9, nesterov=False, ns_steps=3, weight_decay=0.1)], ids=["lamb", "muon"])
def test_optimizer_config_round_trips(optimizer):
    optimizer = optimizer()
    config = optimizer.get_config()
    assert type(optimizer).from_config(dict(config)).get_config() == config
    assert config["weight_decay"] == optimizer.weight_decay > 0
