"""A finished run's workdir: summary.json, metrics.jsonl, TensorBoard, export, eval.json."""
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from sklearn import metrics

import tf_keras

import tfscale
from conftest import tiny_config
from tfscale import data, evaluation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY_KEYS = {"num_params", "flops_per_example", "steps", "examples_seen", "train_loss",
                "eval_loss", "eval_accuracy", "examples_per_sec", "strategy", "num_replicas",
                "precision", "batch_size", "accum_steps", "wall_seconds"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    seen = RecordSteps()
    summary = tfscale.train(tiny_config(train__accum_steps=2), workdir, callbacks=[seen])
    assert seen.batches == 20  # the caller's own callback ran on every update
    return workdir, summary


class RecordSteps(tf_keras.callbacks.Callback):
    batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def test_summary_has_the_documented_keys_and_sane_values(finished_run):
    workdir, summary = finished_run
    with open(os.path.join(workdir, "summary.json")) as f:
        on_disk = json.load(f)
    assert SUMMARY_KEYS <= set(on_disk)
    assert on_disk["steps"] == 20 and on_disk["examples_seen"] == 20 * 32
    assert on_disk["accum_steps"] == 2 and on_disk["batch_size"] == 32
    assert on_disk["num_params"] == 64 * 32 + 32 + 32 * 10 + 10
    assert on_disk["flops_per_example"] == 3 * 2 * (64 * 32 + 32 * 10)
    assert on_disk["precision"] == "float32" and on_disk["strategy"] == "one_device"
    assert on_disk["examples_per_sec"] > 0 and 0 <= on_disk["eval_accuracy"] <= 1


def test_metrics_jsonl_logs_every_interval_in_optimizer_updates(finished_run):
    workdir, _ = finished_run
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert all({"loss", "accuracy", "learning_rate", "examples_per_sec"} <= set(r) for r in records)
    assert records[-1]["loss"] < records[0]["loss"]
    assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))


def test_exported_saved_model_matches_keras(finished_run):
    workdir, summary = finished_run
    assert summary["export"]["max_abs_diff"] < 1e-5
    assert summary["export"]["argmax_agreement"] == 1.0
    assert os.path.isdir(os.path.join(workdir, "export", "saved_model"))
    assert not glob.glob(os.path.join(workdir, "export", "*.tmp-*"))


def test_eval_json_agrees_with_scikit_learn_on_the_same_predictions(finished_run):
    workdir, _ = finished_run
    with open(os.path.join(workdir, "eval.json")) as f:
        report = json.load(f)
    labels = data.load(tiny_config().data).eval[1]
    probabilities = evaluation.predict_saved_model(os.path.join(workdir, "export", "saved_model"),
                                                   data.load(tiny_config().data).eval[0])
    predictions = probabilities.argmax(1)
    assert report["num_examples"] == len(labels) == 360
    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predictions))
    assert report["macro"]["f1"] == pytest.approx(metrics.f1_score(labels, predictions, average="macro"))
    assert report["roc_auc_ovr"] == pytest.approx(
        metrics.roc_auc_score(labels, probabilities, multi_class="ovr"), abs=1e-6)
    np.testing.assert_array_equal(report["confusion_matrix"], metrics.confusion_matrix(labels, predictions))
    assert os.path.getsize(os.path.join(workdir, "confusion_matrix.png")) > 1000


def test_evaluate_command_reruns_on_a_saved_run(finished_run):
    workdir, _ = finished_run
    with open(os.path.join(workdir, "eval.json")) as f:
        first = json.load(f)
    os.remove(os.path.join(workdir, "eval.json"))
    proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"accuracy {first['accuracy']:.4f}" in proc.stdout
    with open(os.path.join(workdir, "eval.json")) as f:
        assert json.load(f)["confusion_matrix"] == first["confusion_matrix"]


def test_rerunning_a_finished_run_trains_nothing_more(finished_run):
    workdir, summary = finished_run
    files = ("summary.json", os.path.join("export", "saved_model", "saved_model.pb"))
    before = {f: os.stat(os.path.join(workdir, f)).st_mtime_ns for f in files}
    again = tfscale.train(tiny_config(train__accum_steps=2), workdir)
    assert again["steps"] == summary["steps"]
    assert again["eval_loss"] == pytest.approx(summary["eval_loss"], abs=1e-6)
    # nothing evaluated, exported or written again: the finished run is handed back as it is
    assert {f: os.stat(os.path.join(workdir, f)).st_mtime_ns for f in files} == before
    assert again["wall_seconds"] == summary["wall_seconds"]


def test_default_digits_mlp_reaches_95_percent_test_accuracy(tmp_path):
    from experiments.configs import digits_mlp  # pylint: disable=import-outside-toplevel
    config = digits_mlp.get_config().unlock()
    config.export.saved_model = False  # the accuracy is the run's own evaluation, not the export's
    summary = tfscale.train(config.lock(), str(tmp_path))
    assert summary["eval_accuracy"] >= 0.95


class Sleep(tf_keras.callbacks.Callback):
    """A known workload: every update takes at least 20 ms."""

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.02)


def test_throughput_figures_match_a_known_workload(tmp_path):
    config = tiny_config(train__num_steps=30, train__log_every_steps=5, export__saved_model=False)
    summary = tfscale.train(config, str(tmp_path), callbacks=[Sleep()])
    ceiling = 32 / 0.02  # examples per second if the update itself took no time
    assert 0.4 * ceiling < summary["examples_per_sec"] <= ceiling  # a mean: one stall on a busy machine drags it
    assert summary["model_flops_per_sec"] == pytest.approx(summary["examples_per_sec"] * summary["flops_per_example"])
    assert summary["mfu"] == pytest.approx(summary["model_flops_per_sec"] / summary["peak_flops"])
    with open(os.path.join(str(tmp_path), "metrics.jsonl")) as f:
        windows = [json.loads(line) for line in f][1:]  # the first window includes tracing
    # No window can beat the sleep; a window a busy machine delayed may fall short of it, but
    # most cannot (the test files run two at a time).
    rates = sorted(w["examples_per_sec"] for w in windows)
    assert rates[-1] <= ceiling and 0.6 * ceiling < rates[len(rates) // 2]


@pytest.mark.parametrize("damage", ["a garbled middle line", "only the last line cut short"])
def test_resuming_drops_damaged_metrics_lines_with_a_warning_and_keeps_the_file_as_found(tmp_path, damage):
    from conftest import absl_messages  # pylint: disable=import-outside-toplevel
    from tfscale.callbacks import MetricsLogger  # pylint: disable=import-outside-toplevel
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (5, 10, 15)]
    if damage == "a garbled middle line":
        lines.insert(1, "\x00\x00garbage{")
    found = "\n".join(lines) + "\n" + '{"step": 20, "lo'  # the kill's cut line, always dropped quietly
    path.write_text(found)
    with absl_messages() as messages:
        MetricsLogger(str(tmp_path), 5, 8, 40).resume_at(10)
    assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [5, 10]
    warned = [m for m in messages if "damaged line(s) dropped" in m]
    if damage == "a garbled middle line":
        assert len(warned) == 1 and "(line 2)" in warned[0] and f"{path}.damaged" in warned[0]
        assert (tmp_path / "metrics.jsonl.damaged").read_text() == found + "\n"
    else:
        assert not warned and not (tmp_path / "metrics.jsonl.damaged").exists()
