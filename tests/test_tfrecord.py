"""TFRecord shards read sequentially: per-host files, a seeded shuffle buffer, exact resume."""
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_refused, tiny_config
import tfscale
from tfscale import data
from tfscale.data import tfrecord
from test_resume import final_weights, kill_then_resume, max_difference


@pytest.fixture(scope="module")
def digits_tfrecord(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tfrecord") / "digits")
    tfrecord.write(folder, data.load(tiny_config().data), shards=4)
    return folder


def overrides(folder):
    return ["--config.data.name=tfrecord", f"--config.data.path={folder}/train-*.tfrecord",
            f"--config.data.eval_path={folder}/eval-*.tfrecord", "--config.data.shuffle_buffer=256"]


def config_for(folder, **kw):
    return tiny_config(data__name="tfrecord", data__path=f"{folder}/train-*.tfrecord",
                       data__eval_path=f"{folder}/eval-*.tfrecord", data__shuffle_buffer=256, **kw)


def labels_of(fn, ctx=None):
    return np.concatenate([y.numpy().ravel() for _, y in (fn(ctx) if ctx else fn())])


def test_the_stream_visits_every_record_once_per_epoch_and_resumes_at_its_position(digits_tfrecord):
    source = tfrecord.TFRecordSource(config_for(digits_tfrecord).data)
    memory = data.load(tiny_config().data)
    assert source.info.num_train == memory.info.num_train and source.task == "classifier"
    assert source.info.num_classes == 10 and source.info.input_shape == (64,)
    n, batch = source.info.num_train, 32
    steps = 2 * n // batch + 3  # into a third epoch
    full = labels_of(source.train_dataset_fn(batch, seed=1, start_step=0, num_steps=steps))
    first_epoch = full[:n]
    assert np.array_equal(np.bincount(first_epoch, minlength=10), np.bincount(memory.train[1], minlength=10))
    assert not np.array_equal(full[:n], full[n:2 * n])  # each epoch in its own order
    for start in (5, n // batch + 2):  # inside the first epoch, and past it (whole epochs skipped)
        tail = labels_of(source.train_dataset_fn(batch, seed=1, start_step=start, num_steps=steps))
        assert np.array_equal(tail, full[start * batch:])
    other_seed = labels_of(source.train_dataset_fn(batch, seed=2, start_step=0, num_steps=5))
    assert not np.array_equal(other_seed, full[:5 * batch])


def test_each_host_reads_only_its_own_files(digits_tfrecord):
    source = tfrecord.TFRecordSource(config_for(digits_tfrecord).data)
    files = source.files["train"]
    for host in (0, 1):
        mine = files[host::2]
        per_epoch = sum(source.counts["train"][host::2])
        steps = per_epoch // 16  # 16 rows of each global batch of 32 are this host's
        ds = source.train_dataset_fn(32, seed=0, start_step=0, num_steps=steps)(tf.distribute.InputContext(2, host, 2))
        read = sorted(bytes(x) for batch, _ in ds for x in batch.numpy().astype(np.uint8))
        own = sorted(bytes(x) for x in source._parse_all(mine)[0])  # pylint: disable=protected-access
        assert len(read) == steps * 16 and set(read) <= set(own)
        assert len(set(read)) >= 0.9 * len(set(own))  # nearly a whole epoch of its own files


def test_sigkill_and_resume_end_with_the_weights_of_an_unbroken_run(digits_tfrecord, tmp_path):
    args = ["--config=experiments/configs/digits_mlp.py:tiny", "--config.train.num_steps=300",
            "--config.checkpoint.every_steps=20", "--config.deterministic=True", "--config.export.saved_model=False",
            "--config.train.log_every_steps=20", *overrides(digits_tfrecord)]
    # killed past the first epoch (45 updates of 32): the resume skips whole epochs and a part of one
    assert max_difference(*kill_then_resume(args, tmp_path, 300, after_step=60)) <= 1e-6


def test_four_mirrored_replicas_match_one_device(digits_tfrecord, tmp_path):
    common = dict(train__num_steps=30, export__saved_model=False, deterministic=True)
    tfscale.train(config_for(digits_tfrecord, distribute__strategy="one_device", **common), str(tmp_path / "one"))
    tfscale.train(config_for(digits_tfrecord, distribute__strategy="mirrored", **common), str(tmp_path / "four"))
    a, b = final_weights(str(tmp_path / "one")), final_weights(str(tmp_path / "four"))
    assert max(float(np.max(np.abs(a[k] - b[k]))) for k in a) <= 1e-6


def _write_example(path, features):
    with tf.io.TFRecordWriter(path) as w:
        w.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


@pytest.mark.parametrize("damage,fragment", [
    ("wrong_key", "has no feature 'labels'; its features: inputs, target"),
    ("empty", "train-00001-of-00004.tfrecord is empty"),
    ("truncated", "train-00001-of-00004.tfrecord is damaged (truncated or corrupt"),
    ("no_match", "matches no file"),
])
def test_bad_tfrecord_input_is_one_error_line_and_the_workdir_is_untouched(digits_tfrecord, tmp_path, damage,
                                                                            fragment):
    import shutil  # pylint: disable=import-outside-toplevel
    folder = str(tmp_path / "data")
    shutil.copytree(digits_tfrecord, folder)
    shard = os.path.join(folder, "train-00001-of-00004.tfrecord")
    if damage == "wrong_key":
        for name in os.listdir(folder):
            _write_example(os.path.join(folder, name), {
                "inputs": tf.train.Feature(int64_list=tf.train.Int64List(value=[1, 2])),
                "target": tf.train.Feature(int64_list=tf.train.Int64List(value=[0]))})
    elif damage == "empty":
        open(shard, "wb").close()
    elif damage == "truncated":
        with open(shard, "r+b") as f:
            f.truncate(os.path.getsize(shard) - 7)
    elif damage == "no_match":
        folder = str(tmp_path / "nowhere")
    assert_refused(fragment, tmp_path / "run", {"name": "tfrecord", "path": f"{folder}/train-*.tfrecord",
                                                 "eval_path": f"{folder}/eval-*.tfrecord", "shuffle_buffer": 256},
                   through_command=damage == "truncated")
