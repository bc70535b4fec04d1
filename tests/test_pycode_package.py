"""The package-classification task: split by file after deduplication, no shared span, a baseline."""
import os

import numpy as np
import pytest

from tfscale import baselines, data
from tfscale.config import defaults
from tfscale.data import dedup, pycode_package


def load(train_split="train", eval_split="validation"):
    c = defaults().data
    c.name, c.train_split, c.eval_split = "pycode_package", train_split, eval_split
    return data.load(c)


@pytest.fixture(scope="module")
def source():
    return load()


@pytest.fixture(scope="module")
def pieces():
    return pycode_package.split(pycode_package.labelled_files(), tuning=True)


def test_every_package_is_a_class_and_the_classes_are_balanced(source):
    assert source.info.num_classes == len(pycode_package.PACKAGES) == 10 and source.task == "classifier"
    train, held_out = np.bincount(source.train[1], minlength=10), np.bincount(source.eval[1], minlength=10)
    assert train.max() <= pycode_package.MAX_PER_CLASS["train"] and train.min() >= 0.7 * train.max()
    assert held_out.min() >= 0.9 * held_out.max() and source.train[0].dtype == np.int32


@pytest.mark.parametrize("splits", [("train", "validation"), ("tuning_train", "tuning_validation")])
def test_no_64_byte_span_of_the_held_out_windows_occurs_in_training(splits):
    source = load(*splits)
    assert source.info.num_train > 0 and source.info.num_eval > 0
    reference = dedup.window_hashes(source.train[0].astype(np.uint8).ravel())
    reference.sort()
    for row in source.eval[0].astype(np.uint8):  # windows one by one: no span across two of them
        assert not dedup.shared_windows(dedup.window_hashes(row.tobytes()), reference).any()


def test_held_out_files_are_not_training_files(pieces):
    files = pycode_package.labelled_files()
    train = {t for t, _ in pieces["train"]}
    with_labels = {os.path.relpath(p).split(os.sep)[-1] for p, _ in files}
    assert len(with_labels) > 100 and pieces["validation"]
    assert not any(piece in text for piece, _ in pieces["validation"] for text in train)
    shares = [sum(len(p) for p, l in pieces["validation"] if l == k) /
              sum(len(p) for p, l in [*pieces["train"], *pieces["validation"]] if l == k) for k in range(10)]
    assert all(0.05 < s < 0.4 for s in shares), shares  # every package judged on files of its own


def test_the_tuning_carve_holds_out_training_files_that_its_own_training_never_reads(pieces):
    train, tuning_train = {t for t, _ in pieces["train"]}, {t for t, _ in pieces["tuning_train"]}
    assert tuning_train < train  # whole training files, and not all of them
    carved_out = train - tuning_train
    assert all(any(piece in text for text in carved_out) for piece, _ in pieces["tuning_validation"])
    assert not any(piece in text for piece, _ in pieces["tuning_validation"] for text in tuning_train)
    assert {label for _, label in pieces["tuning_validation"]} == set(range(10))  # every package judged
    held_out = sum(len(p) for p, _ in pieces["tuning_validation"]) / sum(len(t) for t in train)
    assert 0.1 < held_out < 0.3, held_out


def test_the_bag_of_bytes_baseline_beats_chance_and_is_no_oracle(source):
    result = baselines.bag_of_bytes(source)
    assert 0.15 < result["accuracy"] < 0.6 and 0 < result["macro_f1"] <= 1
    assert result["num_params"] == 10 * 256 + 10
