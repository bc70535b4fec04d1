"""Validation during training, the best weights, early stopping, and their exact resume."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from conftest import tiny_config
import tfscale
from tfscale import ConfigError, config as config_lib
from tfscale.training import Run

EVERY = 10


def stopping_config(**overrides):
    """Stops on the digits MLP after a few evaluations: a high learning rate makes eval_loss
    wander once it is low, and patience 3 catches it (60 of 300 updates at the best)."""
    return tiny_config(train__num_steps=300, eval__every_steps=EVERY, train__log_every_steps=EVERY,
                       export__saved_model=False, optimizer__learning_rate=0.05,
                       train__early_stopping__patience=3, checkpoint__every_steps=EVERY,
                       deterministic=True, **overrides)


def records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def evaluations(workdir):
    return [(r["step"], r["eval_loss"], r["eval_accuracy"]) for r in records(workdir) if "eval_loss" in r]


def best_weights(workdir):
    directory = os.path.join(workdir, "checkpoints", "best")
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(directory))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if n.startswith("network/")}


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("stopped"))
    return workdir, tfscale.train(stopping_config(), workdir)


@pytest.mark.parametrize("strategy", ["one_device", "mirrored"])  # mirrored: 4 logical CPU replicas
def test_periodic_evaluations_leave_training_exactly_as_it_was(tmp_path, strategy):
    config = dict(train__num_steps=60, train__log_every_steps=20, export__saved_model=False, deterministic=True,
                  distribute__strategy=strategy)
    plain = tfscale.train(tiny_config(**config), str(tmp_path / "plain"))
    # every 15: evaluations fall inside logging windows, which must keep their running means
    checked = tfscale.train(tiny_config(eval__every_steps=15, **config), str(tmp_path / "checked"))
    train_lines = lambda d: [(r["step"], r["loss"], r["accuracy"]) for r in records(d) if "loss" in r]
    assert train_lines(str(tmp_path / "checked")) == train_lines(str(tmp_path / "plain"))
    assert [s for s, _, _ in evaluations(str(tmp_path / "checked"))] == [15, 30, 45, 60]
    assert checked["eval_loss"] == pytest.approx(plain["eval_loss"], abs=1e-6)  # the last is the best here
    assert checked["train_loss"] == plain["train_loss"]


def test_early_stopping_stops_and_evaluates_the_best_weights(stopped):
    workdir, summary = stopped
    evals = evaluations(workdir)
    losses = [loss for _, loss, _ in evals]
    best = int(np.argmin(losses))
    es = summary["early_stopping"]
    assert es["best_step"] == evals[best][0] and es["best"] == pytest.approx(losses[best], abs=1e-7)
    # stopped after exactly `patience` evaluations that did not improve, well before num_steps
    assert es["stopped_at"] == evals[-1][0] == evals[best][0] + 3 * EVERY < 300
    assert all(loss >= losses[best] for loss in losses[best + 1:])
    assert summary["steps"] == es["stopped_at"] and "did not improve" in es["reason"]
    # what is evaluated (and would be exported) is the best update's weights, not the last
    assert summary["evaluated_weights"] == {"which": "best", "step": es["best_step"]}
    assert summary["eval_loss"] == pytest.approx(losses[best], abs=1e-6)
    assert summary["eval_accuracy"] == pytest.approx(evals[best][2], abs=1e-6)
    assert os.listdir(os.path.join(workdir, "checkpoints", "best")) and tf.train.latest_checkpoint(
        os.path.join(workdir, "checkpoints", "best")).endswith(f"ckpt-{es['best_step']}")


class CrashAt(keras.callbacks.Callback):
    """Dies at update `step`, as a killed process would: nothing after the last checkpoint survives."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise RuntimeError("killed")


@pytest.mark.parametrize("crash_at", [25, 65])  # before the best update, and between best and stop
def test_a_killed_and_resumed_run_stops_at_the_same_update_with_the_same_best_weights(stopped, tmp_path, crash_at):
    workdir, summary = stopped
    resumed = str(tmp_path / "resumed")
    with pytest.raises(RuntimeError, match="killed"):
        tfscale.train(stopping_config(), resumed, callbacks=[CrashAt(crash_at)])
    again = tfscale.train(stopping_config(), resumed)
    assert again["early_stopping"] == summary["early_stopping"]
    assert again["steps"] == summary["steps"] and again["eval_loss"] == pytest.approx(summary["eval_loss"], abs=1e-6)
    a, b = best_weights(workdir), best_weights(resumed)
    assert a.keys() == b.keys() and max(float(np.max(np.abs(a[n] - b[n]))) for n in a) <= 1e-6
    assert [s for s, _, _ in evaluations(resumed)] == [s for s, _, _ in evaluations(workdir)]  # each once


def test_a_stopped_run_run_again_trains_nothing(stopped, caplog):
    workdir, summary = stopped
    listing = lambda: sorted(os.path.relpath(os.path.join(root, f), workdir)
                             for root, _, files in os.walk(workdir) for f in files if f != ".lock")
    before = listing()
    with caplog.at_level("INFO", logger="absl"):
        again = tfscale.train(stopping_config(), workdir)
    assert "already stopped early at update" in caplog.text
    assert again == summary
    assert listing() == before  # no new TensorBoard event file, nothing else


def test_the_evaluations_reach_later_callbacks_in_their_logs(tmp_path):
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if "eval_loss" in logs:
                seen.append((int(self.model.optimizer.iterations.numpy()), logs["eval_loss"]))

    workdir = str(tmp_path / "run")
    tfscale.train(tiny_config(train__num_steps=30, eval__every_steps=EVERY, export__saved_model=False),
                  workdir, callbacks=[Watch()])
    assert seen == [(s, pytest.approx(loss, abs=1e-7)) for s, loss, _ in evaluations(workdir)]
    assert [s for s, _ in seen] == [10, 20, 30]


def test_a_profile_of_the_asked_updates_lands_in_tensorboard(tmp_path):
    workdir = str(tmp_path / "run")
    tfscale.train(tiny_config(train__num_steps=20, train__profile_steps="5,8", export__saved_model=False), workdir)
    traces = [f for root, _, files in os.walk(os.path.join(workdir, "tensorboard", "plugins", "profile"))
              for f in files if f.endswith(".xplane.pb")]
    assert traces and all(os.path.getsize(os.path.join(root, f)) > 0
                          for root, _, files in os.walk(os.path.join(workdir, "tensorboard", "plugins", "profile"))
                          for f in files if f.endswith(".xplane.pb"))


@pytest.mark.parametrize("overrides,fragment", [
    (dict(train__early_stopping__patience=3), "needs eval.every_steps > 0"),
    (dict(eval__every_steps=-1), "eval.every_steps must be >= 0"),
    (dict(eval__every_steps=10, train__early_stopping__monitor="loss"), "must be a held-out figure"),
    (dict(eval__every_steps=10, train__early_stopping__mode="lowest"), "must be auto, min or max"),
    (dict(eval__every_steps=10, train__steps_per_execution=4), "multiple of train.steps_per_execution"),
    (dict(train__profile_steps="5"), "must be \"START,STOP\""),
    (dict(train__profile_steps="8,5"), "0 <= START < STOP"),
])
def test_bad_settings_are_refused_before_anything_is_written(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        config_lib.validate(tiny_config(**overrides))


def test_a_monitor_the_evaluation_does_not_measure_is_refused_before_any_write(tmp_path):
    workdir = str(tmp_path / "run")
    config = dict(train__num_steps=20, eval__every_steps=EVERY, export__saved_model=False)
    with pytest.raises(ConfigError, match="eval_auc.*is not measured; the evaluation gives eval_loss, eval_accuracy"):
        Run(tiny_config(train__early_stopping__monitor="eval_auc", **config), workdir)
    assert not os.path.exists(workdir)
    assert tfscale.train(tiny_config(**config), workdir)["steps"] == 20  # the corrected command is not refused
