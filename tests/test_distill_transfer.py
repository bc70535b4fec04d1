"""Distillation with a transfer set (`compress.distill.transfer_data`): every update is the
labelled batch the student alone sees plus inputs only the teacher labels, which carry the
soft term alone; and the byte-CNN student (`text_cnn`) converts to a small int8 file."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tfscale
from conftest import tiny_config
from tfscale import models, training
from tfscale.compress import distill, finetune, tflite
from tfscale.data import DataInfo


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("teacher"))
    config = tiny_config(train__num_steps=60, data__train_examples=48, distribute__strategy="one_device",
                         export__saved_model=False)
    r = training.Run(config, workdir)
    r.fit()  # trains it; the run holds the trained teacher
    yield r
    r.close()


def test_transfer_batches_are_the_labelled_batch_then_unlabelled_inputs(run):
    labelled = run.data.train_dataset_fn(8, 5, 0, 4)(tf.distribute.InputContext())
    mixed = distill.transfer_dataset_fn(run, run.config.data.name, 6, 4)(8, 5)(tf.distribute.InputContext())
    count = 0
    for (x, y), (xm, ym) in zip(labelled, mixed):
        count += 1
        np.testing.assert_array_equal(xm[:8].numpy(), x.numpy())
        np.testing.assert_array_equal(ym[:8].numpy(), y.numpy())
        assert xm.shape[0] == 14 and (ym[8:].numpy() == distill.UNLABELLED).all()
        assert not np.array_equal(xm[8:14].numpy(), x[:6].numpy())  # another seed: other rows
    assert count == 4


def test_unlabelled_examples_carry_the_soft_term_only(run):
    teacher = run.network
    keras.utils.set_random_seed(1)
    student = models.build(run.config.model, run.data.info)
    model = distill.DistillationModel(student, teacher, 1, temperature=2.0, alpha=0.5)
    model.compile("sgd", loss="sparse_categorical_crossentropy")
    x = run.data.sample(4)
    y_pred = tf.cast(student(x), tf.float32)
    labels = tf.constant([1, 2, distill.UNLABELLED, distill.UNLABELLED])
    losses = model.training_losses(x, labels, y_pred).numpy()
    soft = keras.losses.kl_divergence(tf.nn.softmax(teacher(x) / 2.0), tf.nn.softmax(y_pred / 2.0)).numpy()
    hard = keras.losses.sparse_categorical_crossentropy(tf.constant([1, 2, 0, 0]), y_pred, from_logits=True).numpy()
    np.testing.assert_allclose(losses[2:], 0.5 * 4.0 * soft[2:], rtol=1e-5)
    np.testing.assert_allclose(losses[:2], 0.5 * hard[:2] + 0.5 * 4.0 * soft[:2], rtol=1e-5)


def test_a_transfer_set_of_another_shape_is_one_config_error(run):
    with pytest.raises(tfscale.ConfigError) as error:
        distill.transfer_dataset_fn(run, "pycode", 0, 4)
    assert "transfer_data 'pycode' has inputs of shape" in str(error.value) and "\n" not in str(error.value)


def _held_out_kl(network, teacher, data):
    """Mean KL(teacher || student) over the held-out inputs: how far the student is from its teacher."""
    x, _ = data.eval_arrays()
    return float(np.mean(keras.losses.kl_divergence(tf.nn.softmax(teacher.predict(x, verbose=0)),
                                                    tf.nn.softmax(network.predict(x, verbose=0)))))


def test_a_transfer_set_teaches_the_student_what_few_labelled_examples_cannot(run):
    """The run trains on 48 labelled digits; the transfer set is every training digit."""

    def student(transfer):
        def model():
            keras.utils.set_random_seed(0)
            return distill.DistillationModel(models.build(run.config.model, run.data.info), run.network, 1, 2.0, 0.0)

        make = distill.transfer_dataset_fn(run, run.config.data.name, 32, 150) if transfer else None
        return finetune.fit(run, model, 150, 1e-2, dataset_fn=make).network

    without, taught = (_held_out_kl(student(t), run.network, run.data) for t in (False, True))
    assert taught < 0.6 * without, (taught, without)


def test_text_cnn_counts_and_converts_to_an_int8_file_near_a_quarter_of_float():
    info = DataInfo("tokens", (64,), 10, 1.0, 100, 10)
    config = tfscale.config.defaults().model
    config.unlock()
    config.name = "text_cnn"
    for key, value in dict(embed_dim=32, filters=48, widths="3,5", seq_len=64).items():
        config[key] = value
    network = models.build(config, info)
    by_hand = 256 * 32 + (3 * 32 * 48 + 48) + (5 * 32 * 48 + 48) + (96 * 10 + 10)
    assert models.num_params(network) == by_hand
    assert models.training_flops_per_example(network, config) == 3 * 2 * (62 * 3 * 32 * 48 + 60 * 5 * 32 * 48 + 96 * 10)
    sample = np.random.default_rng(0).integers(0, 256, (32, 64)).astype(np.int32)
    float_file = tflite.convert(network, "float32", sample)
    int8_file = tflite.convert(network, "int8", sample)
    # 20,906 weights: the graph adds ~3 kB to the float file and ~7 kB (quantization parameters)
    # to the int8 one, so int8 is 0.32x of float (a one-layer transformer of half the weights: 0.73x).
    assert len(int8_file) < 0.33 * len(float_file), (len(int8_file), len(float_file))


@pytest.mark.parametrize("knobs, fragment", [(dict(widths="0"), "model.widths must be"),
                                             (dict(seq_len=32), "text_cnn classifies token sequences")])
def test_bad_text_cnn_knobs_are_one_config_error(knobs, fragment):
    info = DataInfo("tokens", (64,), 10, 1.0, 100, 10)
    config = tfscale.config.defaults().model
    config.unlock()
    config.name = "text_cnn"
    config.seq_len = 64
    for key, value in knobs.items():
        config[key] = value
    with pytest.raises(tfscale.ConfigError) as error:
        models.build(config, info)
    assert fragment in str(error.value)


def test_students_train_at_their_own_learning_rate_when_one_is_set(run, monkeypatch):
    """compress.distill.learning_rate decouples the students from the teacher's rate (0: the same)."""
    from tfscale.compress import variants  # pylint: disable=import-outside-toplevel
    seen = []

    def fake_fit(run_, make_model, steps, learning_rate, *args, **kwargs):  # pylint: disable=unused-argument
        seen.append(learning_rate)
        return type("Fitted", (), {"network": None})()

    monkeypatch.setattr(finetune, "fit", fake_fit)
    run.config.unlock()
    student = run.config.compress.distill.student
    run.config.compress.distill.student = run.config.model
    try:
        variants._student(run, (run.network, None), distilled=False)  # pylint: disable=protected-access
        run.config.compress.distill.learning_rate = 3e-4
        variants._student(run, (run.network, None), distilled=False)  # pylint: disable=protected-access
    finally:
        run.config.compress.distill.learning_rate = 0.0
        run.config.compress.distill.student = student
        run.config.lock()
    assert seen == [run.config.optimizer.learning_rate, 3e-4]
