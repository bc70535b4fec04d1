"""Input pipelines: order fixed by (seed, step), replicas take slices of the same global batch."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import tiny_config
from tfscale import data
from tfscale.errors import ConfigError

ARRAYS = (np.arange(100, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32), np.arange(100, dtype=np.int32))


def labels_of(dataset_fn, ctx=None):
    return [y.numpy() for _, y in dataset_fn(ctx)]


def test_order_depends_on_seed_and_step_only():
    full = labels_of(data.train_dataset_fn(ARRAYS, 32, seed=1, start_step=0, num_steps=12))
    again = labels_of(data.train_dataset_fn(ARRAYS, 32, seed=1, start_step=0, num_steps=12))
    resumed = labels_of(data.train_dataset_fn(ARRAYS, 32, seed=1, start_step=7, num_steps=12))
    other_seed = labels_of(data.train_dataset_fn(ARRAYS, 32, seed=2, start_step=0, num_steps=12))
    assert len(full) == 12 and all(len(b) == 32 for b in full)
    np.testing.assert_array_equal(np.stack(full), np.stack(again))
    np.testing.assert_array_equal(np.stack(full[7:]), np.stack(resumed))
    assert not np.array_equal(np.stack(full), np.stack(other_seed))


def test_every_epoch_visits_every_example_once_in_a_new_order():
    stream = np.concatenate(labels_of(data.train_dataset_fn(ARRAYS, 25, 0, 0, 8)))
    first, second = stream[:100], stream[100:]
    assert sorted(first) == list(range(100)) and sorted(second) == list(range(100))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("pipelines,replicas", [(1, 4), (2, 4), (4, 4)])
def test_replicas_get_contiguous_slices_of_the_same_global_batch(pipelines, replicas):
    global_batches = labels_of(data.train_dataset_fn(ARRAYS, 32, 0, 0, 3))
    per_replica = {}
    for pid in range(pipelines):
        ctx = tf.distribute.InputContext(pipelines, pid, replicas)
        batches = labels_of(data.train_dataset_fn(ARRAYS, 32, 0, 0, 3), ctx)
        local = replicas // pipelines
        for i, b in enumerate(batches):
            step, local_index = divmod(i, local)
            per_replica[(step, pid * local + local_index)] = b
    for step, batch in enumerate(global_batches):
        joined = np.concatenate([per_replica[(step, r)] for r in range(replicas)])
        np.testing.assert_array_equal(joined, batch)


def test_digits_is_prepared_offline_with_a_fixed_split(tmp_path):
    config = tiny_config(data__data_dir=str(tmp_path))
    digits = data.load(config.data)
    assert (digits.info.num_train, digits.info.num_eval) == (1437, 360)
    assert digits.info.input_shape == (8, 8, 1) and digits.info.num_classes == 10
    assert digits.train[0].dtype == np.uint8 and digits.train[0].max() == 16
    assert (tmp_path / "digits" / "1.0.0").is_dir()
    again = data.load(config.data)  # from the prepared files
    np.testing.assert_array_equal(digits.eval[1], again.eval[1])
    assert set(np.unique(digits.eval[1])) == set(range(10))


def prepare_toy_images(data_dir):
    """Stores a small image data set in `data_dir` the way tfds stores any prepared data set."""
    def split(n):
        rng = np.random.default_rng(n)
        return tf.data.Dataset.from_tensor_slices({
            "image": rng.integers(0, 255, (n, 6, 6, 1), dtype=np.uint8),
            "label": np.arange(n) % 3})
    tfds.dataset_builders.TfDataBuilder(
        name="toy_images", version="1.0.0", data_dir=data_dir,
        split_datasets={"train": split(30), "test": split(9)},
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(6, 6, 1)),
            "label": tfds.features.ClassLabel(num_classes=3)})).download_and_prepare()


def test_any_tfds_data_set_prepared_in_data_dir_loads_by_name(tmp_path):
    config = tiny_config(data__name="toy_images", data__data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=f"unknown data set 'toy_images'.*not prepared in {tmp_path}"):
        data.check_name(config.data)
    mnist = tiny_config(data__name="mnist", data__data_dir=str(tmp_path)).data
    with pytest.raises(ConfigError, match=f"'mnist' is not prepared in {tmp_path}.*tfds build mnist"):
        data.check_name(mnist)
    prepare_toy_images(str(tmp_path))
    data.check_name(config.data)
    with pytest.raises(ConfigError, match="no supervised keys; set data.input_key"):
        data.load(config.data)
    config.data.input_key, config.data.label_key = "image", "label"
    toy = data.load(config.data)
    assert toy.info.input_shape == (6, 6, 1) and toy.info.num_classes == 3
    assert toy.info.input_scale == pytest.approx(1 / 255)
    assert (toy.info.num_train, toy.info.num_eval) == (30, 9)


def test_unknown_tfds_name_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown data set 'mnist9'"):
        data.check_name(tiny_config(data__name="mnist9").data)


def test_synthetic_is_learnable_and_fixed():
    a, b = data.load(tiny_config(data__name="synthetic").data), data.load(tiny_config(data__name="synthetic").data)
    np.testing.assert_array_equal(a.train[0], b.train[0])
    assert len(np.unique(a.train[1])) > 5


def test_workers_starting_together_prepare_digits_once(tmp_path):
    """Several processes on a fresh data dir: one prepares, the others wait and read it."""
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    code = ("import sys, tfscale; from tfscale import data; from tfscale.config import defaults; "
            "c = defaults(); c.data.data_dir = sys.argv[1]; print(data.load(c.data).info.num_train)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        assert out.strip().splitlines()[-1] == "1437"
