"""`data.train_examples`: a labelled subset of the training split, evenly spaced, the same in
the stream as read by index; a bad count or a streamed data set is one ConfigError."""
import json

import numpy as np
import pytest
import tensorflow as tf

import tfscale
from conftest import tiny_config
from tfscale import data


def _stream_rows(source, batch, steps):
    ds = source.train_dataset_fn(batch, seed=3, start_step=0, num_steps=steps)(tf.distribute.InputContext())
    return np.concatenate([x.numpy().reshape(len(x), -1) for x, _ in ds])


def test_subset_keeps_evenly_spaced_examples_and_streams_only_them():
    c = tiny_config().data
    whole = data.load(c)
    c.train_examples = 100
    subset = data.load(c)
    assert subset.info.num_train == 100 and subset.info.num_eval == whole.info.num_eval
    chosen = np.linspace(0, whole.info.num_train - 1, 100).round().astype(np.int64)
    expected_x, expected_y = whole.read("train", chosen)
    got_x, got_y = subset.read("train", np.arange(100))
    np.testing.assert_array_equal(got_x, expected_x)
    np.testing.assert_array_equal(got_y, expected_y)
    # Two epochs of the training stream visit exactly the subset's rows, each once per epoch.
    rows = _stream_rows(subset, 20, 10)
    wanted = expected_x.reshape(100, -1)
    for epoch in (rows[:100], rows[100:]):
        assert sorted(map(bytes, epoch.astype(np.float32))) == sorted(map(bytes, wanted.astype(np.float32)))
    # Held-out data is the source's own, whole.
    np.testing.assert_array_equal(subset.eval_arrays()[0], whole.eval_arrays()[0])


@pytest.mark.parametrize("count, fragment", [(10**7, "more than the"), (-1, "data.train_examples must be >= 0")])
def test_a_bad_subset_is_one_config_error(tmp_path, count, fragment):
    with pytest.raises(tfscale.ConfigError) as error:
        tfscale.train(tiny_config(data__train_examples=count), str(tmp_path / "run"))
    assert fragment in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_a_run_on_a_subset_trains_and_records_it(tmp_path):
    summary = tfscale.train(tiny_config(data__train_examples=200, train__num_steps=20, export__saved_model=False),
                            str(tmp_path / "run"))
    assert summary["steps"] == 20
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["train_examples"] == 200
