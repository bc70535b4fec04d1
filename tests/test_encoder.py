"""The BERT-style encoder: masked-LM data, pretraining, and fine-tuning from a pretrained run."""
import math

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tfscale
from tfscale import ConfigError, data, models, trainer, warm_start
from tfscale.data import masking

from experiments.configs import lm

ENCODER = {"name": "transformer_encoder", "num_layers": 1, "d_model": 32, "num_heads": 2, "d_ff": 64, "seq_len": 32}


def test_masking_follows_the_15_80_10_10_rule():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, (4000, 64))
    inputs, targets = (t.numpy() for t in masking.mask_tokens(tokens, tf.range(4000, dtype=tf.int64), 7, 0.15, 256))
    chosen = targets != trainer.IGNORED
    assert chosen.mean() == pytest.approx(0.15, abs=0.003)
    assert np.array_equal(targets[chosen], tokens[chosen]) and np.array_equal(inputs[~chosen], tokens[~chosen])
    became_mask = (inputs[chosen] == 256).mean()
    unchanged = (inputs[chosen] == tokens[chosen]).mean()
    assert became_mask == pytest.approx(0.8, abs=0.01)
    assert unchanged == pytest.approx(0.1 + 0.1 / 256, abs=0.01)  # kept, or a random token that hit itself
    assert 1 - became_mask - unchanged == pytest.approx(0.1 - 0.1 / 256, abs=0.01)  # another token


def mlm_config(steps=150, **model):
    c = lm.get_config("tiny")
    c.unlock()
    c.model = ml_collections.ConfigDict({**ENCODER, **model})
    c.data.mask_rate, c.train.loss = 0.15, "masked_lm"
    c.train.num_steps, c.export.saved_model, c.optimizer.learning_rate = steps, False, 3e-3
    return c


def test_masks_are_a_function_of_seed_and_step_on_any_number_of_pipelines():
    source = data.load(mlm_config().data, 32, seed=5)
    assert source.task == "masked_lm" and source.info.num_classes == 256

    def rows(fn, ctx=None):
        return [np.concatenate([x.numpy(), y.numpy()], -1) for x, y in (fn(ctx) if ctx else fn())]

    whole = np.concatenate(rows(source.train_dataset_fn(16, 1, 0, 6)))
    assert np.array_equal(np.concatenate(rows(source.train_dataset_fn(16, 1, 3, 6))), whole[48:])  # resumed
    halves = [rows(source.train_dataset_fn(16, 1, 0, 6), tf.distribute.InputContext(2, h, 2)) for h in (0, 1)]
    assert np.array_equal(np.concatenate([b for step in zip(*halves) for b in step]), whole)
    again = np.concatenate(rows(source.train_dataset_fn(16, 1, 0, 6)))
    assert np.array_equal(again, whole)
    # each epoch masks afresh, the held-out split once and for all
    x, y = source.eval_arrays(8)
    assert np.array_equal(source.eval_arrays(8)[1], y) and (y != trainer.IGNORED).any()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("mlm") / "run")
    return workdir, tfscale.train(mlm_config(), workdir)


def test_masked_lm_pretraining_learns_well_below_uniform(pretrained):
    _, summary = pretrained
    assert summary["eval_loss"] < 0.7 * math.log(256) and summary["eval_accuracy"] > 0.1
    assert summary["num_params"] == 32 * 258 + 33 * 32 + 2 * 2 * 32 + (4 * 32 * 32 + 4 * 32) + (32 * 64 + 64 + 64 * 32 + 32) + 2 * 32


def classifier(model_config, num_classes=3):
    return models.build(ml_collections.ConfigDict(model_config), data.DataInfo("task", (32,), num_classes, 1.0, 0, 0))


def test_init_from_loads_every_body_weight_and_starts_the_head_fresh(pretrained):
    workdir, _ = pretrained
    config = ml_collections.ConfigDict({"model": {**ENCODER, "init_from": workdir}})
    network = classifier(config.model)
    report = warm_start.load(network, config)
    assert sorted(report["fresh"]) == ["logits", "pooler"]
    reader = tf.train.load_checkpoint(report["source"])
    pre = models.build(mlm_config().model, data.DataInfo("pycode", (32,), 256, 1.0, 0, 0, task="masked_lm"))
    tf.train.Checkpoint(network=pre).read(report["source"]).expect_partial()
    assert reader is not None and len(report["loaded"]) == sum(1 for l in pre.layers if l.weights)
    for name in report["loaded"]:
        for a, b in zip(network.get_layer(name).get_weights(), pre.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("change,fragment", [
    ({"d_model": 48}, "layer token_embedding has weights"),
    ({"num_layers": 2}, "has no layer block_1_ln_attention"),
])
def test_init_from_refuses_a_body_that_does_not_match(pretrained, change, fragment):
    workdir, _ = pretrained
    config = ml_collections.ConfigDict({"model": {**ENCODER, **change, "init_from": workdir}})
    with pytest.raises(ConfigError, match=fragment):
        warm_start.load(classifier(config.model), config)


def test_init_from_a_folder_that_is_not_a_run_is_refused(tmp_path):
    config = ml_collections.ConfigDict({"model": {**ENCODER, "init_from": str(tmp_path)}})
    with pytest.raises(ConfigError, match="is not a tfscale run"):
        warm_start.check(config)


def test_mean_pooling_reads_the_token_states_and_a_bad_pooling_is_refused():
    network = classifier({**ENCODER, "pooling": "mean"})
    assert "mean_tokens" in [l.name for l in network.layers] and "cls_state" not in [l.name for l in network.layers]
    with pytest.raises(ConfigError, match="model.pooling must be one of cls, mean"):
        classifier({**ENCODER, "pooling": "max"})


def _sgd_updates(network, steps, x, y):
    model = trainer.AccumulatingModel(network)
    trainer.compile_model(model, keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    before = {v.name: v.numpy() for v in network.trainable_variables}
    deltas = []
    for _ in range(steps):
        model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
        now = {v.name: v.numpy() for v in network.trainable_variables}
        deltas.append({k: now[k] - before[k] for k in now})
        before = now
    return deltas


def test_a_frozen_body_warmup_and_a_body_learning_rate_factor_scale_the_body_updates_only():
    x = np.random.default_rng(0).integers(0, 256, (8, 32)).astype(np.int32)
    y = np.arange(8) % 3
    keras.utils.set_random_seed(0)
    plain = _sgd_updates(classifier(ENCODER), 1, x, y)[0]
    keras.utils.set_random_seed(0)
    network = classifier({**ENCODER, "body_learning_rate": 0.25, "frozen_body_steps": 2})
    body = {v.name for v in network.update_scale.variables(network)}
    head = {v.name for l in ("pooler", "logits") for v in network.get_layer(l).trainable_variables}
    assert body and head and not body & head and len(body | head) == len(network.trainable_variables)
    deltas = _sgd_updates(network, 3, x, y)
    for step in (0, 1):  # frozen: the body stays as it started, the head learns
        assert all(not deltas[step][k].any() for k in body) and all(deltas[step][k].any() for k in head)
    np.testing.assert_allclose(deltas[0]["logits/kernel:0"], plain["logits/kernel:0"], rtol=1e-5, atol=1e-7)
    assert all(deltas[2][k].any() for k in body)
    # not frozen: the same first gradient as the plain run, the body moved a quarter as far
    keras.utils.set_random_seed(0)
    quarter = _sgd_updates(classifier({**ENCODER, "body_learning_rate": 0.25}), 1, x, y)[0]
    for k in body:
        np.testing.assert_allclose(quarter[k], 0.25 * plain[k], rtol=1e-4, atol=5e-7)  # float32 w_new - w_old
