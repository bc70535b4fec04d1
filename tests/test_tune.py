"""Tuning (`experiments.tune`): the space and its errors, a study end to end, pruning, failures,
re-runs and a killed study resumed."""
import itertools
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import types

import ml_collections
import pytest

from experiments import cli
from experiments.configs import digits_cnn_tune
from tfscale import ConfigError, tuning
from tfscale.tuning import outputs, space, study as study_lib
from tfscale.tuning.pruning import PruningCallback

from conftest import one_error_line, run_command, with_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(**keys):
    """The tiny tuning config with overrides (`tune__pruner="none"`)."""
    return with_overrides(digits_cnn_tune.get_config("tiny").unlock(), **keys).lock()

def _quiet(_):
    pass


def _json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class CountingTrain:
    """`tfscale.train` that records each trial's workdir (and whether it held a checkpoint), and
    raises for the calls listed in `fail`."""

    def __init__(self, fail=(), raise_with=None):
        self.calls, self.fail, self.raise_with = [], set(fail), raise_with

    def __call__(self, config, workdir, callbacks):
        import tfscale
        had_checkpoint = os.path.exists(os.path.join(workdir, "checkpoints", "checkpoint"))
        self.calls.append((os.path.basename(workdir), had_checkpoint))
        if len(self.calls) in self.fail:
            raise (self.raise_with or RuntimeError("boom: injected failure"))
        return tfscale.train(config, workdir, callbacks)


# -- the space ------------------------------------------------------------------------------

def test_space_entries_parse_into_typed_params():
    c = tiny(tune__space=("optimizer.learning_rate=loguniform(1e-4, 1e-2)", "optimizer.weight_decay=uniform(0, 0.1)",
                          "model.width=int(8, 64, log)", "model.depth=int(1, 2)",
                          "optimizer.beta_1=choice(0.8, 0.9)", "optimizer.name=choice(adamw, lion)",
                          "optimizer.nesterov=choice(true, false)"))
    params = {p.key: p for p in space.parse(c)}
    assert params["optimizer.learning_rate"] == space.Param("optimizer.learning_rate", "loguniform", 1e-4, 1e-2, True)
    assert params["optimizer.weight_decay"].kind == "uniform" and not params["optimizer.weight_decay"].log
    assert params["model.width"].log and params["model.depth"].grid_values() == [1, 2]
    assert params["optimizer.beta_1"].choices == (0.8, 0.9)  # a placeholder float key
    assert params["optimizer.name"].choices == ("adamw", "lion")
    assert params["optimizer.nesterov"].choices == (True, False)
    run = space.trial_config(c, {"model.width": 24, "optimizer.learning_rate": 3e-3, "optimizer.name": "lion"})
    assert (run.model.width, run.optimizer.learning_rate, run.optimizer.name) == (24, 3e-3, "lion")
    assert "tune" not in run and run.is_locked


@pytest.mark.parametrize("keys, message", [
    ({"tune__space": ("optimizer.learning_rate",)}, "is not KEY=SPEC"),
    ({"tune__space": ("optimizer.nope=uniform(0, 1)",)}, "unknown config key 'optimizer.nope'"),
    ({"tune__space": ("nosection.x=uniform(0, 1)",)}, "no section 'nosection'"),
    ({"tune__space": ("model=uniform(0, 1)",)}, "is a section, not a key"),
    ({"tune__space": ("optimizer.learning_rate=gauss(0, 1)",)}, "unknown spec 'gauss'"),
    ({"tune__space": ("optimizer.learning_rate=1e-3",)}, "is not a spec"),
    ({"tune__space": ("optimizer.learning_rate=loguniform(0, 1)",)}, "needs lo > 0"),
    ({"tune__space": ("optimizer.learning_rate=uniform(0.1, 0.1)",)}, "lo must be below hi"),
    ({"tune__space": ("optimizer.learning_rate=uniform(0.2, 0.1)",)}, "lo must be below hi"),
    ({"tune__space": ("optimizer.learning_rate=uniform(a, 1)",)}, "'a' is not a number"),
    ({"tune__space": ("optimizer.learning_rate=uniform(0, inf)",)}, "not a finite number"),
    ({"tune__space": ("optimizer.learning_rate=uniform(0, 1, 2)",)}, "takes (lo, hi)"),
    ({"tune__space": ("model.width=uniform(8, 64)",)}, "model.width is an integer"),
    ({"tune__space": ("model.width=int(8.5, 64)",)}, "int bounds must be integers"),
    ({"tune__space": ("model.width=int(0, 64, log)",)}, "needs lo > 0"),
    ({"tune__space": ("model.width=int(8, 64, lin)",)}, "can only be log"),
    ({"tune__space": ("model.width=choice(8)",)}, "at least 2 values"),
    ({"tune__space": ("model.width=choice(8, 8)",)}, "listed twice"),
    ({"tune__space": ("optimizer.name=uniform(0, 1)",)}, "is a string; use choice"),
    ({"tune__space": ("optimizer.nesterov=choice(1, 2)",)}, "is true/false"),
    ({"tune__space": ("optimizer.learning_rate=choice(1e-3, adam)",)}, "every choice must be one"),
    ({"tune__space": ("model.width=int(8, 16)", "model.width=int(8, 32)")}, "searched twice"),
    ({"tune__space": ("tune.seed=int(0, 3)",)}, "tune section itself"),
    ({"tune__space": ("schedule.warmup_steps=int(0, 100000)",)}, "at schedule.warmup_steps=100000 the config is refused"),
    ({"tune__space": ()}, "tune.space is empty"),
    ({"tune__sampler": "grid"}, "needs choice(...) or int(...) specs"),
    ({"tune__sampler": "grid", "tune__space": ("model.width=int(1, 100000)", "model.depth=int(1, 3)")},
     "the grid has 300,000 points"),
    ({"tune__sampler": "bayes"}, "unknown tune.sampler 'bayes'"),
    ({"tune__pruner": "hyperband"}, "unknown tune.pruner 'hyperband'"),
    ({"tune__metric": "f1"}, "unknown tune.metric 'f1'"),
    ({"tune__direction": "up"}, "tune.direction must be"),
    ({"tune__num_trials": 0}, "tune.num_trials must be >= 1"),
    ({"tune__storage": "study.db"}, "is not a database URL"),
    ({"train__early_stopping__monitor": "eval_auc"}, "'eval_auc' is not measured; the evaluation gives eval_loss"),
    ({"tune__study_name": " "}, "tune.study_name is empty"),
    ({"eval__every_steps": 0}, "tune.pruner=median needs periodic evaluation"),
    ({"tune__best_config_overrides": ("data.nope=1",)}, "tune.best_config_overrides: unknown config key 'data.nope'"),
    ({"tune__best_config_overrides": ("train.num_steps",)}, "is not key=value"),
    ({"tune__best_config_overrides": ("train.num_steps=0",)}, "train.num_steps must be >= 1"),
])
def test_each_mistake_is_one_config_error(keys, message):
    with pytest.raises(ConfigError) as e:
        tuning.check(tiny(**keys))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_bad_spec_on_the_command_line_is_one_error_line_and_writes_nothing(tmp_path):
    workdir = tmp_path / "study"
    proc = run_command("tune", ["--config=experiments/configs/digits_cnn_tune.py:tiny", f"--workdir={workdir}",
                                "--config.tune.space=('optimizer.learning_rate=loguniform(0, 1e-2)',)"])
    assert "needs lo > 0" in one_error_line(proc)
    assert not workdir.exists()


def test_a_sqlite_storage_in_a_missing_folder_is_refused_before_anything_is_written(tmp_path):
    workdir = tmp_path / "study"
    with pytest.raises(ConfigError, match=f"the folder {tmp_path}/nowhere does not exist"):
        tuning.tune(tiny(tune__storage=f"sqlite:///{tmp_path}/nowhere/study.db"), str(workdir), say=_quiet)
    assert not workdir.exists()


def test_a_validation_split_carved_out_of_train_is_disjoint_from_it():
    from tfscale import data
    c = tiny()
    loaded = data.load(c.data)
    assert (loaded.info.num_train, loaded.info.num_eval) == (1150, 287)  # 80 % / 20 % of the 1,437
    train = {x.tobytes() for x in loaded.train[0]}
    assert not any(x.tobytes() in train for x in loaded.eval[0][:50])


# -- the pruning callback -------------------------------------------------------------------

class FakeTrial:
    def __init__(self, prune_after):
        self.reports, self.prune_after = [], prune_after

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return len(self.reports) >= self.prune_after


def test_pruning_callback_reports_at_evaluations_by_update_and_stops_training():
    trial = FakeTrial(prune_after=2)
    callback = PruningCallback(trial, "eval_loss")
    model = types.SimpleNamespace(optimizer=types.SimpleNamespace(iterations=0), stop_training=False)
    callback.set_model(model)
    callback.on_train_begin()
    for step, logs in [(10, {"loss": 2.0}), (20, {"loss": 1.5, "eval_loss": 1.7}), (30, {"loss": 1.4}),
                       (40, {"loss": 1.2, "eval_loss": float("nan")}), (50, {"loss": 1.1, "eval_loss": 1.3})]:
        model.optimizer.iterations = step  # the optimizer update, whatever Keras' batch index is
        callback.on_train_batch_end(step // 10 - 1, logs)
    assert trial.reports == [(20, 1.7), (50, 1.3)]  # NaN is not reported; training figures neither
    assert model.stop_training and callback.pruned_at == 50 and callback.last_step == 50


# -- studies --------------------------------------------------------------------------------

class FakeObjective:
    """Scores a trial's values without training (for the sampler's behaviour alone)."""
    current = None

    def __init__(self, params):
        self.params = params

    def __call__(self, trial):
        values = {p.key: p.suggest(trial) for p in self.params}
        trial.set_user_attr("num_steps", 1)
        return abs(math.log(values["optimizer.learning_rate"] / 1e-2)) + values["model.width"] / 256


def test_processes_sharing_a_study_draw_different_values_and_the_draws_are_reproducible(tmp_path):
    config = tiny(tune__pruner="none", tune__num_trials=6, tune__sampler_startup_trials=2)
    params = tuning.check(config)

    def seed_sampler(number):
        return study_lib.sampler(config.tune, params, config.tune.seed + number)

    one, two = (study_lib.open_study(config, str(tmp_path / "shared"), params) for _ in range(2))
    for n in range(1, 7):  # two "processes" on one study, taking turns
        study_lib.run(one if n % 2 else two, FakeObjective(params), n, seed_sampler=seed_sampler)
    alone = study_lib.open_study(config, str(tmp_path / "alone"), params)
    study_lib.run(alone, FakeObjective(params), 6, seed_sampler=seed_sampler)
    shared = [tuple(t.params.values()) for t in one.trials]
    assert len(set(shared)) == 6  # no two trials drew the same values
    assert shared == [tuple(t.params.values()) for t in alone.trials]  # whoever ran which trial

@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """A tiny study of 4 trials, run to its end; the second trial's training raises."""
    workdir = str(tmp_path_factory.mktemp("study"))
    train = CountingTrain(fail={2})
    summary = tuning.tune(tiny(tune__pruner="none", eval__every_steps=0), workdir, train_fn=train, say=_quiet)
    return workdir, summary, train


def test_a_study_writes_best_config_report_plots_and_hparams(finished_study):
    workdir, summary, _ = finished_study
    for name in ("best_config.py", "report.md", "history.png", "results.json", "study.db"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    # 3 complete trials: fewer than fANOVA needs, and report.md says so instead of a plot.
    with open(os.path.join(workdir, "report.md"), encoding="utf-8") as f:
        report = f.read()
    assert not os.path.exists(os.path.join(workdir, "importances.png"))
    assert "parameter importances: 3 complete trial(s): importances need 4 or more" in report
    assert "| 1 | FAIL |" in report and "RuntimeError: boom: injected failure" in report
    assert report.count("| COMPLETE |") == 3 and "updates trained: 120 of the 120" in report
    best = summary["best"]
    config = cli.load_config_file(os.path.join(workdir, "best_config.py"))  # experiments.train's loader
    from tfscale import config as config_lib
    config_lib.validate(config)
    assert "tune" not in config and config.is_locked
    assert config.optimizer.learning_rate == best["params"]["optimizer.learning_rate"]
    assert config.model.width == best["params"]["model.width"]
    # tune.best_config_overrides: the final run trains on all of train and reports test accuracy.
    assert (config.data.train_split, config.data.eval_split, config.export.saved_model) == ("train", "test", True)
    assert config.eval.every_steps == 0  # nothing is chosen on the test split (no best weights from it)
    trial_config = config_lib.defaults()
    trial_config.update(ml_collections.ConfigDict(_json(os.path.join(workdir, f"trials/{best['number']:04d}/config.json"))))
    assert trial_config.model.width == config.model.width and trial_config.data.eval_split == "train[80%:]"
    events = [os.path.join(d, f) for d, _, files in os.walk(os.path.join(workdir, "tensorboard")) for f in files]
    assert len(events) == 1 + 4  # the HParams config and one session per trial


def test_a_failing_trial_is_recorded_with_its_error_and_the_study_goes_on(finished_study):
    _, summary, train = finished_study
    states = [r["state"] for r in summary["trials"]]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"] and len(train.calls) == 4
    failed = summary["trials"][1]
    assert failed["note"] == "RuntimeError: boom: injected failure" and failed["wall_seconds"] is not None


def test_rerunning_a_finished_study_runs_no_trial_and_a_longer_one_adds_trials(finished_study, tmp_path):
    workdir, summary, _ = finished_study
    again = CountingTrain()
    rerun = tuning.tune(tiny(tune__pruner="none", eval__every_steps=0), workdir, train_fn=again, say=_quiet)
    assert again.calls == [] and rerun["best"] == summary["best"]
    with pytest.raises(ConfigError, match="was made from a different config"):
        tuning.tune(tiny(tune__pruner="none", eval__every_steps=0, model__depth=2), workdir, train_fn=again,
                    say=_quiet)
    assert again.calls == []


def test_a_grid_study_visits_every_point_once():
    class Recording:
        """A trial's training that records the values its config was given and trains nothing:
        what the grid visits is the sampler's doing, the training of a trial is the other tests'."""
        def __init__(self):
            self.values = []

        def __call__(self, config, workdir, callbacks):
            self.values.append((config.optimizer.learning_rate, config.model.width))
            return {"steps": config.train.num_steps, "eval_loss": config.optimizer.learning_rate * config.model.width}

    train = Recording()
    grid = ("optimizer.learning_rate=choice(1e-3, 1e-2, 3e-2)", "model.width=choice(8, 16)")
    with tempfile.TemporaryDirectory() as workdir:
        summary = tuning.tune(tiny(tune__sampler="grid", tune__space=grid, tune__num_trials=6, tune__pruner="none",
                                   train__num_steps=4, eval__every_steps=0), workdir, train_fn=train, say=_quiet)
    assert sorted(train.values) == sorted(itertools.product((1e-3, 1e-2, 3e-2), (8, 16)))
    assert sorted(tuple(t["params"].values()) for t in summary["trials"]) == sorted(train.values)


def test_a_pruned_trial_stops_early_and_costs_fewer_updates(tmp_path):
    config = tiny(train__num_steps=60, tune__num_trials=2, tune__pruner_startup_trials=1)
    params = tuning.check(config)
    study = study_lib.open_study(config, str(tmp_path), params)
    study.enqueue_trial({"optimizer.learning_rate": 3e-2, "optimizer.weight_decay": 1e-4, "model.width": 64})
    study.enqueue_trial({"optimizer.learning_rate": 1e-3, "optimizer.weight_decay": 1e-4, "model.width": 8})
    summary = tuning.tune(config, str(tmp_path), say=_quiet)
    good, slow = summary["trials"]
    assert good["state"] == "COMPLETE" and good["steps"] == 60
    assert slow["state"] == "PRUNED" and slow["steps"] < 60 and slow["note"].startswith("pruned at update")
    assert summary["updates_trained"] == 60 + slow["steps"] and summary["updates_unpruned"] == 120
    steps = _json(tmp_path / "trials" / "0001" / "summary.json")["steps"]
    assert steps == slow["steps"]  # what summary.json says was trained
    reported = _load(config, tmp_path).trials[1].intermediate_values
    assert sorted(reported) == list(range(10, slow["steps"] + 1, 10))  # optimizer updates, every eval


def test_a_trial_stopped_by_sigterm_is_enqueued_again_and_resumes_in_its_workdir(tmp_path):
    from tfscale.callbacks import Preempted
    config = tiny(tune__pruner="none", tune__num_trials=2, eval__every_steps=0)
    stopped = CountingTrain(fail={1}, raise_with=Preempted(5, "ckpt-5"))
    with pytest.raises(Preempted):
        tuning.tune(config, str(tmp_path), train_fn=stopped, say=_quiet)
    resumed = CountingTrain()
    summary = tuning.tune(config, str(tmp_path), train_fn=resumed, say=_quiet)
    assert [r["state"] for r in summary["trials"]] == ["INTERRUPTED", "COMPLETE", "COMPLETE"]
    assert resumed.calls[0][0] == "0000"  # the retry ran first, in the interrupted trial's folder
    assert summary["trials"][1]["workdir"] == "trials/0000" and summary["trials"][1]["note"] == "resumes #0"
    assert summary["trials"][1]["params"] == summary["trials"][0]["params"]


def test_a_killed_study_resumes_its_running_trial_from_the_checkpoint(tmp_path):
    """SIGKILL mid-trial: the trial stays RUNNING in study.db; the re-run fails it once its
    heartbeat is stale and runs it again in the same workdir, from its checkpoint."""
    workdir = tmp_path / "study"
    args = [sys.executable, "-m", "experiments.tune", "--config=experiments/configs/digits_cnn_tune.py:tiny",
            f"--workdir={workdir}", "--config.tune.pruner=none", "--config.tune.num_trials=2",
            "--config.train.num_steps=400", "--config.checkpoint.every_steps=20", "--config.eval.every_steps=0"]
    checkpoint = workdir / "trials" / "0000" / "checkpoints" / "checkpoint"
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 240
            while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert checkpoint.exists(), (tmp_path / "log").read_text()[-3000:]
    with sqlite3.connect(workdir / "study.db") as db:
        assert db.execute("SELECT number, state FROM trials").fetchall() == [(0, "RUNNING")]
    config = tiny(tune__pruner="none", tune__num_trials=2, train__num_steps=400, checkpoint__every_steps=20,
                  eval__every_steps=0)
    resumed = CountingTrain()
    summary = tuning.tune(config, str(workdir), train_fn=resumed, say=_quiet)
    rows = {r["workdir"]: r for r in summary["trials"] if r["state"] == "COMPLETE"}
    assert sorted(rows) == ["trials/0000", "trials/0001"]
    assert ("0000", True) in resumed.calls  # trained on from the killed trial's checkpoint
    assert rows["trials/0000"]["note"] == "resumes #0" and rows["trials/0000"]["steps"] == 400
    assert [r["state"] for r in summary["trials"]].count("INTERRUPTED") == 1
    assert outputs.update_counts(_load(config, workdir)) == (800, 800)


def _load(config, workdir):
    return study_lib.open_study(config, str(workdir), tuning.check(config))


def test_the_benchmark_script_runs_end_to_end_on_the_tiny_configs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.tune_benchmark",
                           "--config=experiments/configs/digits_cnn_tune.py:tiny", f"--workdir={tmp_path}",
                           "--default_config=experiments/configs/digits_cnn.py:tiny", "--seeds=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "goal, updates <= 50 % of unpruned" in proc.stdout and "| 0 | " in proc.stdout
    figures = _json(tmp_path / "benchmark.json")
    assert figures["trials"] == 4 and figures["updates_unpruned"] == 160
    assert 0 < figures["updates_trained"] <= 160 and len(figures["best_test_accuracy"]) == 1
