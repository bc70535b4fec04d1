"""The evaluation report must match scikit-learn exactly and survive JSON, PNG and TensorBoard."""
import glob
import io
import json
import os
import warnings

import tfscale  # noqa: F401  (selects Keras 2 before TensorFlow loads)

import numpy as np
import pytest
from matplotlib import image as mpimg
from sklearn import metrics

from tfscale import evaluation

NUM_CLASSES = 10


def _random_case(num_examples=400, num_classes=NUM_CLASSES, seed=0):
    """Random labels and softmax probabilities: a weak classifier, so no metric is trivial."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=num_examples)
    logits = rng.normal(size=(num_examples, num_classes))
    logits[np.arange(num_examples), labels] += 1.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probabilities


def _perfect_case(num_classes=4, per_class=5):
    labels = np.repeat(np.arange(num_classes), per_class)
    probabilities = np.full((labels.size, num_classes), 0.1 / (num_classes - 1))
    probabilities[np.arange(labels.size), labels] = 0.9
    return labels, probabilities


@pytest.fixture(name="case")
def fixture_case():
    labels, probabilities = _random_case()
    return labels, probabilities, np.argmax(probabilities, axis=1)


def test_report_keys():
    report = evaluation.classification_report(*_random_case())
    assert set(report) == {
        "num_examples", "accuracy", "per_class", "macro", "weighted",
        "roc_auc_ovr", "confusion_matrix", "log_loss",
    }
    assert set(report["macro"]) == {"precision", "recall", "f1", "roc_auc"}
    assert set(report["weighted"]) == {"precision", "recall", "f1", "roc_auc"}
    assert set(report["per_class"][0]) == {
        "class", "name", "precision", "recall", "f1", "support", "roc_auc",
    }


def test_headline_figures_match_sklearn(case):
    labels, probabilities, predictions = case
    report = evaluation.classification_report(labels, probabilities)
    classes = list(range(NUM_CLASSES))

    assert report["num_examples"] == labels.size
    assert report["accuracy"] == metrics.accuracy_score(labels, predictions)
    assert 0.2 < report["accuracy"] < 0.9  # a weak classifier: the comparison is not vacuous
    assert report["log_loss"] == pytest.approx(metrics.log_loss(labels, probabilities, labels=classes), rel=1e-12)
    assert report["confusion_matrix"] == metrics.confusion_matrix(
        labels, predictions, labels=classes
    ).tolist()
    expected_auc = metrics.roc_auc_score(labels, probabilities, multi_class="ovr", labels=classes)
    assert report["roc_auc_ovr"] == pytest.approx(expected_auc, rel=1e-12)
    assert report["macro"]["roc_auc"] == pytest.approx(expected_auc, rel=1e-12)
    expected_weighted_auc = metrics.roc_auc_score(
        labels, probabilities, multi_class="ovr", labels=classes, average="weighted"
    )
    assert report["weighted"]["roc_auc"] == pytest.approx(expected_weighted_auc, rel=1e-12)


@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_averaged_figures_match_sklearn(case, average):
    labels, probabilities, predictions = case
    report = evaluation.classification_report(labels, probabilities)
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        labels, predictions, labels=list(range(NUM_CLASSES)), average=average, zero_division=0
    )
    assert report[average]["precision"] == precision
    assert report[average]["recall"] == recall
    assert report[average]["f1"] == f1


def test_per_class_figures_match_sklearn(case):
    labels, probabilities, predictions = case
    names = [f"c{k}" for k in range(NUM_CLASSES)]
    report = evaluation.classification_report(labels, probabilities, class_names=names)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predictions, labels=list(range(NUM_CLASSES)), zero_division=0
    )
    assert [entry["class"] for entry in report["per_class"]] == list(range(NUM_CLASSES))
    assert [entry["name"] for entry in report["per_class"]] == names
    for k, entry in enumerate(report["per_class"]):
        assert entry["precision"] == precision[k]
        assert entry["recall"] == recall[k]
        assert entry["f1"] == f1[k]
        assert entry["support"] == support[k]
        assert entry["roc_auc"] == metrics.roc_auc_score(labels == k, probabilities[:, k])


def test_default_class_names_are_indices():
    report = evaluation.classification_report(*_random_case(num_classes=3))
    assert [entry["name"] for entry in report["per_class"]] == ["0", "1", "2"]


def test_perfect_classifier():
    labels, probabilities = _perfect_case()
    report = evaluation.classification_report(labels, probabilities)
    assert report["accuracy"] == 1.0
    assert report["confusion_matrix"] == (5 * np.eye(4, dtype=int)).tolist()
    assert report["roc_auc_ovr"] == 1.0
    assert report["macro"]["roc_auc"] == 1.0
    assert report["macro"]["f1"] == 1.0
    assert all(entry["roc_auc"] == 1.0 for entry in report["per_class"])


def test_missing_class_gives_none_auc_without_crashing():
    labels, probabilities = _random_case(num_examples=200, num_classes=4, seed=1)
    labels = labels % 3  # class 3 never occurs
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no UndefinedMetricWarning either
        report = evaluation.classification_report(labels, probabilities)
    aucs = [entry["roc_auc"] for entry in report["per_class"]]
    assert aucs[3] is None
    assert report["per_class"][3]["support"] == 0
    assert report["per_class"][3]["recall"] == 0.0
    expected = [metrics.roc_auc_score(labels == k, probabilities[:, k]) for k in range(3)]
    assert aucs[:3] == expected
    assert report["roc_auc_ovr"] == pytest.approx(np.mean(expected), rel=1e-12)
    assert report["macro"]["roc_auc"] == report["roc_auc_ovr"]
    json.dumps(report, allow_nan=False)


def test_single_class_labels_give_no_auc():
    _, probabilities = _random_case(num_examples=20, num_classes=3)
    report = evaluation.classification_report(np.zeros(20, dtype=int), probabilities)
    assert all(entry["roc_auc"] is None for entry in report["per_class"])
    assert report["roc_auc_ovr"] is None
    assert report["weighted"]["roc_auc"] is None


@pytest.mark.parametrize(
    "labels, probabilities",
    [
        (np.zeros(3, dtype=int), np.full((4, 2), 0.5)),  # length mismatch
        (np.zeros(4, dtype=int), np.full(4, 0.5)),  # probabilities not 2-D
        (np.array([0, 1, 2, 0]), np.full((4, 2), 0.5)),  # label out of range
        (np.array([0.0, 1.0]), np.full((2, 2), 0.5)),  # float labels
    ],
)
def test_bad_inputs_raise_value_error(labels, probabilities):
    with pytest.raises(ValueError):
        evaluation.classification_report(labels, probabilities)


def test_report_round_trips_through_json(case):
    labels, probabilities, _ = case
    report = evaluation.classification_report(labels, probabilities)
    assert json.loads(json.dumps(report, allow_nan=False)) == report


def test_plot_confusion_matrix_writes_png_atomically(tmp_path):
    report = evaluation.classification_report(*_random_case())
    path = tmp_path / "confusion.png"
    path.write_bytes(b"stale")  # replaced, not appended to
    evaluation.plot_confusion_matrix(
        report["confusion_matrix"], str(path), class_names=list("abcdefghij"), title="eval"
    )
    picture = mpimg.imread(str(path))
    assert picture.ndim == 3 and picture.shape[2] in (3, 4)
    assert picture.shape[0] >= 200 and picture.shape[1] >= 200
    assert picture[..., :3].min() < 0.5  # something was drawn, not a blank page
    assert os.listdir(tmp_path) == ["confusion.png"]  # no temporary file left behind


def test_confusion_matrix_image_is_rgb_uint8(tmp_path):
    matrix = [[3, 1], [0, 0]]  # a class with no examples must not divide by zero
    image = evaluation.confusion_matrix_image(matrix)
    assert image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3
    evaluation.plot_confusion_matrix(matrix, str(tmp_path / "cm.png"))
    assert image.shape[:2] == mpimg.imread(str(tmp_path / "cm.png")).shape[:2]


def test_write_tensorboard_writes_scalars_and_image(tmp_path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    report = evaluation.classification_report(*_random_case())
    evaluation.write_tensorboard(report, str(tmp_path), step=7)
    event_files = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    assert len(event_files) == 1

    values, plugins = {}, {}
    for event in tf.compat.v1.train.summary_iterator(event_files[0]):
        for value in event.summary.value:
            assert event.step == 7
            values[value.tag] = tf.make_ndarray(value.tensor)
            plugins[value.tag] = value.metadata.plugin_data.plugin_name
    assert plugins == {  # TensorBoard's dashboards pick summaries by plugin name
        "eval/accuracy": "scalars",
        "eval/macro_f1": "scalars",
        "eval/roc_auc_ovr": "scalars",
        "eval/log_loss": "scalars",
        "eval/confusion_matrix": "images",
    }
    assert values["eval/accuracy"] == pytest.approx(report["accuracy"])
    assert values["eval/macro_f1"] == pytest.approx(report["macro"]["f1"])
    assert values["eval/roc_auc_ovr"] == pytest.approx(report["roc_auc_ovr"])
    assert values["eval/log_loss"] == pytest.approx(report["log_loss"])

    width, height, png = values["eval/confusion_matrix"]  # tf.summary.image's encoding
    picture = mpimg.imread(io.BytesIO(png), format="png")
    assert picture.shape[:2] == (int(height), int(width))


def test_a_binary_classifier_gets_its_roc_auc():
    labels, probabilities = _random_case(num_classes=2, seed=3)
    report = evaluation.classification_report(labels, probabilities)
    expected = metrics.roc_auc_score(labels, probabilities[:, 1])
    assert 0.5 < expected < 1.0
    assert report["roc_auc_ovr"] == pytest.approx(expected, rel=1e-12)
    assert [c["roc_auc"] for c in report["per_class"]] == [pytest.approx(expected, rel=1e-12)] * 2
