"""Variables' roles decide Muon and weight decay: on the registry's models and on a user's own."""
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from experiments.configs import lm
from test_optimizer_updates import adamw_numpy, muon_numpy
from tfscale import data, models, optim
from tfscale.optim import roles as roles_lib

D, HEADS, F, T, V = 32, 4, 64, 32, 256  # tiny LM with 4 heads of 8: a wrong flattening is [128, 8]


def lm_config(**optimizer):
    config = lm.get_config("tiny")
    config.model.num_heads = HEADS
    config.schedule.name, config.schedule.warmup_steps = "constant", 0
    config.optimizer.global_clipnorm = 0.0
    for k, value in optimizer.items():
        config.optimizer[k] = value
    return config


def build_lm(config):
    return models.build(config.model, data.DataInfo("pycode", (T,), V, 1.0, 0, 0))


def roles_by_name(model):
    roles = roles_lib.variable_roles(model)
    return {v.name.split(":")[0]: roles[roles_lib.key(v)] for v in model.trainable_variables}


@pytest.mark.parametrize("tie", [True, False])
def test_every_transformer_variable_has_its_role(tie):
    config = lm_config()
    config.model.tie_embeddings = tie
    got = roles_by_name(build_lm(config))
    matrix = roles_lib.Role("matrix", (D, D))
    want = {"token_embedding/embeddings": roles_lib.Role("embedding"),
            "position_embedding/embeddings": roles_lib.Role("embedding"),
            "ln_final/gamma": roles_lib.Role("norm"), "ln_final/beta": roles_lib.Role("norm")}
    for ln in ("ln_attention", "ln_mlp"):
        want.update({f"block_0_{ln}/gamma": roles_lib.Role("norm"), f"block_0_{ln}/beta": roles_lib.Role("norm")})
    for part in ("query", "key", "value", "attention_output"):  # [d, heads*head_dim] and back
        want.update({f"block_0_attention/{part}/kernel": matrix,
                     f"block_0_attention/{part}/bias": roles_lib.Role("bias")})
    want.update({"block_0_mlp_in/kernel": roles_lib.Role("matrix", (D, F)),
                 "block_0_mlp_out/kernel": roles_lib.Role("matrix", (F, D)),
                 "block_0_mlp_in/bias": roles_lib.Role("bias"), "block_0_mlp_out/bias": roles_lib.Role("bias")})
    if not tie:
        want.update({"logits/kernel": roles_lib.Role("output"), "logits/bias": roles_lib.Role("bias")})
    assert got == want


def test_muon_on_the_transformer_orthogonalises_hidden_matrices_as_their_linear_maps():
    """One update with random gradients against the NumPy reference, per kind of variable."""
    config = lm_config(name="muon", learning_rate=0.02, weight_decay=0.1)
    network = build_lm(config)
    optimizer = optim.build_optimizer(config, network)
    variables = {v.name.split(":")[0]: v for v in network.trainable_variables}
    muon = {n for n, v in variables.items() if optimizer.uses_muon(v)}
    assert muon == {f"block_0_attention/{p}/kernel" for p in ("query", "key", "value", "attention_output")} | {
        "block_0_mlp_in/kernel", "block_0_mlp_out/kernel"}
    assert optimizer.matrix_shape(variables["block_0_attention/query/kernel"]) == (D, D)

    rng = np.random.default_rng(0)
    initial = {n: v.numpy() for n, v in variables.items()}
    grads = {n: rng.normal(size=v.shape).astype(np.float32) for n, v in variables.items()}
    optimizer.apply_gradients([(tf.constant(grads[n]), v) for n, v in variables.items()])
    kinds = {"block_0_attention/query/kernel": "query", "block_0_attention/attention_output/kernel": "attn_out",
             "block_0_mlp_out/kernel": "matrix"}
    for name, kind in kinds.items():
        want = muon_numpy(initial[name], [grads[name]], 0.02, mu=optimizer.momentum, wd=0.1, kind=kind)
        np.testing.assert_allclose(variables[name].numpy(), want, atol=1e-5, err_msg=name)
    adam = dict(b1=optimizer.beta_1, b2=optimizer.beta_2, eps=optimizer.epsilon)
    for name, wd in [("position_embedding/embeddings", 0.1), ("token_embedding/embeddings", 0.1),
                     ("block_0_attention/query/bias", 0.0)]:
        want = adamw_numpy(initial[name], [grads[name]], 0.02, wd=wd, **adam)
        np.testing.assert_allclose(variables[name].numpy(), want, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("name", ["adamw", "lamb", "muon"])
def test_weight_decay_never_touches_the_transformers_biases_and_norms(name):
    """Zero gradients: only decay moves a variable, so exactly the biases and norms stay put."""
    config = lm_config(name=name, learning_rate=0.01, weight_decay=0.5)
    config.model.tie_embeddings = False
    network = build_lm(config)
    optimizer = optim.build_optimizer(config, network)
    roles = roles_by_name(network)
    for v in network.trainable_variables:
        v.assign(tf.fill(v.shape, 0.5))
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in network.trainable_variables])
    for v in network.trainable_variables:
        kind = roles[v.name.split(":")[0]].kind
        if kind in ("bias", "norm"):
            np.testing.assert_array_equal(v.numpy(), 0.5, err_msg=v.name)
        else:
            assert np.all(v.numpy() < 0.5), v.name
    assert {r.kind for r in roles.values()} == {"bias", "norm", "matrix", "output", "embedding"}


def test_cnn_and_mlp_roles():
    info = data.DataInfo("digits", (64,), 10, 1 / 16, 0, 0)
    got = roles_by_name(models.build(ml_collections.ConfigDict({"name": "cnn"}), info))
    assert got["conv_1/kernel"] == roles_lib.Role("matrix", (3 * 3 * 32, 64))
    assert got["dense/kernel"].kind == "matrix" and got["logits/kernel"].kind == "output"
    got = roles_by_name(models.build(ml_collections.ConfigDict({"name": "mlp"}), info))
    assert got["dense_1/kernel"] == roles_lib.Role("matrix", (256, 256))
    assert got["logits/kernel"].kind == "output"
    assert all(r.kind == "bias" for n, r in got.items() if n.endswith("/bias"))


class Scale(keras.layers.Layer):
    """A user's layer: a gain vector and a mixing matrix, neither of which the framework knows."""

    def build(self, input_shape):
        self.gain = self.add_weight("gain", shape=(input_shape[-1],), initializer="ones")
        self.mix = self.add_weight("mix", shape=(input_shape[-1], input_shape[-1]))

    def call(self, x):
        return tf.matmul(x * self.gain, self.mix)


def test_a_users_model_gets_roles_from_its_layers_and_adamw_where_unknown():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(8, 3, groups=2, name="grouped")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2DTranspose(6, 3, name="up")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = Scale(name="scale")(x)
    x = keras.layers.EinsumDense("ab,bc->ac", output_shape=5, bias_axes="c", name="einsum")(x)
    x = keras.layers.Dense(3, name="head")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32")(x)
    model = keras.Model(inputs, outputs)
    got = roles_by_name(model)
    assert got == {
        "grouped/kernel": roles_lib.Role("other"), "grouped/bias": roles_lib.Role("bias"),
        "bn/gamma": roles_lib.Role("norm"), "bn/beta": roles_lib.Role("norm"),
        "up/kernel": roles_lib.Role("matrix", (3 * 3 * 6, 8)), "up/bias": roles_lib.Role("bias"),
        "scale/gain": roles_lib.Role("other"), "scale/mix": roles_lib.Role("other"),
        "einsum/kernel": roles_lib.Role("matrix", (6, 5)), "einsum/bias": roles_lib.Role("bias"),
        "head/kernel": roles_lib.Role("output"), "head/bias": roles_lib.Role("bias")}
    decays = {v.name.split(":")[0] for v in model.trainable_variables
              if roles_lib.decays(got[v.name.split(":")[0]], v)}
    assert decays == {"grouped/kernel", "up/kernel", "scale/mix", "einsum/kernel", "head/kernel"}


def test_a_subclassed_model_takes_its_last_kernel_as_the_output():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden, self.out = keras.layers.Dense(4), keras.layers.Dense(2)

        def call(self, x):
            return self.out(self.hidden(x))

    net = Net()
    net(tf.zeros((1, 3)))
    roles = roles_lib.variable_roles(net)
    assert [roles[roles_lib.key(v)].kind for v in net.trainable_variables] == ["matrix", "bias", "output", "bias"]
