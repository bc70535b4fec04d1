"""Data that does not match what it claims, or the model it trains: one line naming the file and
the field, before anything is written (never a TensorFlow error from inside the first update)."""
import json
import os
import shutil
import textwrap

import numpy as np
import pytest

from conftest import assert_refused, tiny_config
import tfscale
from tfscale import data
from tfscale.data import array_record, tfrecord

DIGITS = {"name": "digits"}


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """The digits as ArrayRecord shards (8 x 8 x 1 uint8 inputs, int32 labels)."""
    out = str(tmp_path_factory.mktemp("shards") / "digits")
    array_record.write(out, data.load(tiny_config().data), shards=2)
    return out


def _edited(digits_folder, tmp_path, edit):
    folder = str(tmp_path / "edited")
    shutil.copytree(digits_folder, folder)
    path = os.path.join(folder, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    edit(manifest)
    with open(path, "w") as f:
        json.dump(manifest, f)
    return folder


@pytest.mark.parametrize("edit,fragment", [
    (lambda m: m["inputs"].update(dtype="float64"), "make records of"),
    (lambda m: m["inputs"].update(shape=[32]), "make records of"),
    (lambda m: m["labels"].update(dtype="float33"), "field 'labels'"),
    (lambda m: m["inputs"].update(shape=["wide"]), "field 'inputs'"),
    (lambda m: m.update(num_classes=5), "train examples: a label 9 is outside 0..4 (num_classes 5)"),
])
def test_an_edited_manifest_is_refused_naming_its_field(digits_folder, tmp_path, edit, fragment):
    folder = _edited(digits_folder, tmp_path, edit)
    assert_refused(fragment, str(tmp_path / "run"), {"name": "array_record", "path": folder})
    with pytest.raises(tfscale.ConfigError, match="manifest.json"):
        tfscale.train(tiny_config(data__name="array_record", data__path=folder), str(tmp_path / "run"))


def test_an_edited_manifest_through_the_command_line(digits_folder, tmp_path):
    folder = _edited(digits_folder, tmp_path, lambda m: m["inputs"].update(dtype="float16"))
    assert_refused(f"{folder}/manifest.json: its inputs (float16 [8, 8, 1]) + labels", str(tmp_path / "run"),
                   {"name": "array_record", "path": folder}, through_command=True)


def test_lm_windows_given_to_a_classifier_are_refused(tmp_path):
    folder = str(tmp_path / "windows")
    tokens = np.arange(4000) % 200
    array_record.write_windows(folder, {"train": tokens, "eval": tokens[:700]}, 256, 32, shards=1)
    assert_refused("the model gives outputs of shape [256], the labels need [32, 256]", str(tmp_path / "run"),
                   {"name": "array_record", "path": folder})


def _tfrecords(tmp_path, change, split="train"):
    """The digits as TFRecord files, the records of `split`'s file passed through `change`."""
    folder = tmp_path / "records"
    tfrecord.write(str(folder), data.load(tiny_config().data), shards=1)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    path = str(folder / f"{split}-00000-of-00001.tfrecord")
    records = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    change(records)
    with tf.io.TFRecordWriter(path) as w:
        for r in records:
            w.write(r.SerializeToString())
    return {"name": "tfrecord", "path": str(folder / "train-*.tfrecord"), "eval_path": str(folder / "eval-*.tfrecord")}


def _short_input(records):
    values = records[500].features.feature["inputs"].bytes_list.value  # raw uint8 pixels
    values[0] = values[0][:40]


def _negative_label(records):
    records[700].features.feature["labels"].int64_list.value[0] = -3


def _unseen_label(records):
    records[7].features.feature["labels"].int64_list.value[0] = 12


@pytest.mark.parametrize("change,split,fragment", [
    (_short_input, "train", "train-00000-of-00001.tfrecord: feature 'inputs' holds 40 values in some records, 64 in the first"),
    (_negative_label, "train", "train-00000-of-00001.tfrecord: feature 'labels' holds the label -3"),
    (_unseen_label, "eval", "eval-00000-of-00001.tfrecord: feature 'labels' holds the label 12, which no training "
                            "file holds (their labels are 0..9)"),
])
def test_tfrecord_records_unlike_the_first_are_refused(tmp_path, change, split, fragment):
    assert_refused(fragment, str(tmp_path / "run"), _tfrecords(tmp_path, change, split))


OWN = textwrap.dedent("""
    import numpy as np
    import tf_keras as keras
    from tfscale.data import DataInfo, InMemorySource

    def three_logits(info):
        inputs = keras.Input(info.input_shape)
        return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))

    def labels(shift):
        def load(data_config, seq_len):
            x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
            y = (np.arange(64) % 10 + shift).astype(np.int32)
            return InMemorySource(DataInfo("own", (8,), 10, 1.0, 48, 16), (x[:48], y[:48]), (x[48:], y[48:]))
        return load

    too_large, negative = labels(1), labels(-1)
""")


@pytest.mark.parametrize("overrides,fragment", [
    ({"model__name": "own_mismatch:three_logits"}, "the model gives outputs of shape [3], the labels need [10]"),
    ({"data__name": "own_mismatch:too_large"}, "data 'own': train examples: a label 10 is outside 0..9"),
    ({"data__name": "own_mismatch:negative"}, "data 'own': train examples: a label -1 is outside 0..9"),
])
def test_your_own_model_and_data_are_checked_against_each_other(tmp_path, monkeypatch, overrides, fragment):
    (tmp_path / "own_mismatch.py").write_text(OWN)
    monkeypatch.syspath_prepend(str(tmp_path))
    workdir = str(tmp_path / "run")
    config = tiny_config(**overrides)
    if "model__name" in overrides:
        config.unlock().model = type(config.model)({"name": overrides["model__name"]})
    with pytest.raises(tfscale.ConfigError) as error:
        tfscale.train(config, workdir)
    assert fragment in str(error.value) and "\n" not in str(error.value)
    assert not os.path.exists(workdir)


def test_a_shard_damaged_after_preparing_is_one_line_naming_it_and_the_run_resumes_once_fixed(tmp_path):
    from experiments.configs import lm  # pylint: disable=import-outside-toplevel
    folder, workdir = str(tmp_path / "windows"), str(tmp_path / "run")
    tokens = np.random.default_rng(0).integers(0, 256, 40_000)
    array_record.write_windows(folder, {"train": tokens, "eval": tokens[:2000]}, 256, 32, shards=2)
    shard = os.path.join(folder, "train-00001-of-00002.array_record")
    good = open(shard, "rb").read()
    with open(shard, "r+b") as f:  # the same size: only reading its records finds it
        f.seek(len(good) // 4)
        f.write(bytes(b ^ 0xFF for b in good[len(good) // 4:len(good) // 4 + 300]))
    config = lm.get_config("tiny").unlock()
    config.data.name, config.data.path = "array_record", folder
    config.train.num_steps, config.checkpoint.every_steps, config.export.saved_model = 40, 5, False
    with pytest.raises(tfscale.ConfigError) as error:
        tfscale.train(config.lock(), workdir)
    message = str(error.value)
    assert message.startswith(f"{shard} cannot be read (") and "\n" not in message
    assert "experiments.prepare --verify" in message and "re-run this command to resume" in message
    with open(shard, "wb") as f:
        f.write(good)
    assert tfscale.train(config, workdir)["steps"] == 40
