"""The package-classification task: split by file after deduplication, no shared span, a baseline."""
import os

import numpy as np
import pytest

from tfscale import baselines, data
from tfscale.config import defaults
from tfscale.data import dedup, pycode_package


@pytest.fixture(scope="module")
def source():
    c = defaults().data
    c.name, c.eval_split = "pycode_package", "validation"
    return data.load(c)


def test_every_package_is_a_class_and_the_classes_are_balanced(source):
    assert source.info.num_classes == len(pycode_package.PACKAGES) == 10 and source.task == "classifier"
    train, held_out = np.bincount(source.train[1], minlength=10), np.bincount(source.eval[1], minlength=10)
    assert train.max() <= pycode_package.MAX_PER_CLASS["train"] and train.min() >= 0.7 * train.max()
    assert held_out.min() >= 0.9 * held_out.max() and source.train[0].dtype == np.int32


def test_no_64_byte_span_of_the_held_out_windows_occurs_in_training(source):
    reference = dedup.window_hashes(source.train[0].astype(np.uint8).ravel())
    reference.sort()
    for row in source.eval[0].astype(np.uint8):  # windows one by one: no span across two of them
        assert not dedup.shared_windows(dedup.window_hashes(row.tobytes()), reference).any()


def test_held_out_files_are_not_training_files():
    files = pycode_package.labelled_files()
    pieces = pycode_package.split(files)
    train = {t for t, _ in pieces["train"]}
    with_labels = {os.path.relpath(p).split(os.sep)[-1] for p, _ in files}
    assert len(with_labels) > 100 and pieces["validation"]
    assert not any(piece in text for piece, _ in pieces["validation"] for text in train)
    shares = [sum(len(p) for p, l in pieces["validation"] if l == k) /
              sum(len(p) for p, l in [*pieces["train"], *pieces["validation"]] if l == k) for k in range(10)]
    assert all(0.05 < s < 0.4 for s in shares), shares  # every package judged on files of its own


def test_the_bag_of_bytes_baseline_beats_chance_and_is_no_oracle(source):
    result = baselines.bag_of_bytes(source)
    assert 0.15 < result["accuracy"] < 0.6 and 0 < result["macro_f1"] <= 1
    assert result["num_params"] == 10 * 256 + 10
