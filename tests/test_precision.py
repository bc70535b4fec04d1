"""Invariant 3: precision changes speed, not the result; fp16 overflow skips the whole update."""
import numpy as np
import pytest
import tf_keras as keras

from conftest import tiny_config
from tfscale import models, precision, trainer
from tfscale.data import DataInfo
from tfscale.training import Run


def final_eval_loss(tmp_path, policy, accum_steps):
    run = Run(tiny_config(precision=policy, train__accum_steps=accum_steps, train__num_steps=60,
                          optimizer__learning_rate=1e-2,
                          export__saved_model=False), str(tmp_path / policy))
    run.fit()
    assert run.network.get_layer("dense_0").compute_dtype == {
        "float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[policy]
    assert run.network.layers[-1].compute_dtype == "float32"  # logits stay float32
    return run.evaluate()["loss"]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_with_accumulation_ends_near_float32(tmp_path, policy):
    reference = final_eval_loss(tmp_path, "float32", 1)
    mixed = final_eval_loss(tmp_path, policy, 4)
    print(f"{policy}: eval loss {mixed:.6f} vs float32 {reference:.6f}")
    assert reference < 1.0  # it learned something (ln 10 = 2.30 at the start)
    assert abs(mixed - reference) < 0.05 * reference


def test_auto_precision_is_float32_on_cpu_and_mixed_on_accelerators():
    assert precision.resolve("auto", "CPU") == "float32"
    assert precision.resolve("auto", "GPU") == "mixed_float16"
    assert precision.resolve("auto", "TPU") == "mixed_bfloat16"
    assert precision.resolve("mixed_bfloat16", "GPU") == "mixed_bfloat16"


@pytest.fixture
def float16_policy():
    precision.set_policy("mixed_float16")
    yield
    precision.set_policy("float32")


def test_fp16_overflow_in_one_micro_batch_skips_the_whole_update(float16_policy):
    """3 of 4 micro-batches are finite, one overflows float16: nothing may be applied."""
    keras.utils.set_random_seed(0)
    info = DataInfo("toy", (8,), 3, 1.0, 64, 0)
    network = models.build(tiny_config(model__width=16).model, info)
    optimizer = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=1024.0)
    model = trainer.AccumulatingModel(network, accum_steps=4)
    model.compile(optimizer, loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
    x[27] = 1e6  # micro-batch 3 of 4 (rows 24..31): inf once cast to float16
    y = np.zeros(32, np.int32)
    before = [v.numpy() for v in network.trainable_variables]
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    after = [v.numpy() for v in network.trainable_variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert float(optimizer.loss_scale) == 512.0
    assert int(optimizer.iterations) == 1  # the skipped update still counts for the schedule
    assert model.diverged_step() is None  # overflow that the scale can still absorb

    x[27] = 0.5  # the same update without the overflow is applied
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    changed = [v.numpy() for v in network.trainable_variables]
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(after, changed)) > 0
    assert all(np.all(np.isfinite(w)) for w in changed)
    assert model.diverged_step() is None


def test_fp16_overflow_at_loss_scale_one_is_divergence(float16_policy):
    """Once the scale is down to 1 there is nothing left to lower: that update diverged."""
    keras.utils.set_random_seed(0)
    info = DataInfo("toy", (8,), 3, 1.0, 64, 0)
    network = models.build(tiny_config(model__width=16).model, info)
    optimizer = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(0.1),
                                                         initial_scale=2.0)
    model = trainer.AccumulatingModel(network, accum_steps=2)
    model.compile(optimizer, loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(96, 8)).astype(np.float32)
    x[::32] = 1e6  # every update overflows
    before = [v.numpy() for v in network.trainable_variables]
    model.fit(x, np.zeros(96, np.int32), batch_size=32, epochs=1, verbose=0, shuffle=False)
    # Update 1 is skipped at scale 2 and lowers it to 1; update 2 overflows at scale 1.
    assert model.diverged_step() == 2
    assert float(optimizer.loss_scale) == 1.0 and int(optimizer.iterations) == 1
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, network.trainable_variables))
