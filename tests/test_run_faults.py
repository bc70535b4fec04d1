"""Faults a user meets while a run trains: none loses the run, corrupts it, or ends in a traceback.

A run that is signalled or killed, or that holds the workdir, is a process of its own (`start`);
the other runs of `experiments.train` are run in this process (`train`)."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_command
from test_resume import ROOT, checkpoint_steps

TINY = ["--config=experiments/configs/digits_mlp.py:tiny", "--config.export.saved_model=False"]


def train(workdir, *args):
    """`experiments.train` run in this process: returncode, stdout and stderr."""
    return run_command("train", [f"--workdir={workdir}", *TINY, *args])


def start(workdir, *args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *TINY, *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def error_lines(stderr):
    return [l for l in stderr.splitlines() if l.startswith("error: ")]


LONG = ["--config.train.num_steps=100000", "--config.checkpoint.every_steps=20",
        "--config.train.log_every_steps=20"]


def test_a_second_process_on_the_same_workdir_is_refused_naming_the_holder(tmp_path):
    workdir = str(tmp_path / "run")
    first = start(workdir, *LONG)
    try:
        assert wait_for(lambda: checkpoint_steps(workdir)), "the first run never checkpointed"
        before = sorted(os.listdir(workdir))
        second = train(workdir, *LONG)
        assert second.returncode == 2, second.stderr[-2000:]
        assert "Traceback" not in second.stderr
        [line] = error_lines(second.stderr)
        assert f"is in use by pid {first.pid}" in line and "train.py --workdir=" in line
        assert sorted(os.listdir(workdir)) == before
    finally:
        first.kill()
        first.wait()
    # The kernel drops a killed holder's lock: the same command now resumes, with no stale lock.
    steps = max(checkpoint_steps(workdir))
    again = start(workdir, *LONG)
    assert wait_for(lambda: max(checkpoint_steps(workdir)) > steps), "the resumed run never trained"
    again.send_signal(signal.SIGTERM)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 143, err[-2000:]
    assert "resumed from" in err


def test_ctrl_c_saves_the_current_update_and_exits_130_without_traceback(tmp_path):
    workdir = str(tmp_path / "run")
    proc = start(workdir, *LONG)
    assert wait_for(lambda: checkpoint_steps(workdir))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    saved = max(checkpoint_steps(workdir))
    assert f"interrupted (SIGINT) at step {saved}: checkpoint saved at" in err


def test_diverging_run_stops_keeps_the_last_good_checkpoint_and_exports_nothing(tmp_path):
    workdir = str(tmp_path / "run")
    proc = train(workdir, "--config.optimizer.name=sgd", "--config.optimizer.learning_rate=1e30",
                 "--config.train.num_steps=50", "--config.checkpoint.every_steps=1000",
                 "--config.export.saved_model=True")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    [line] = error_lines(proc.stderr)
    assert "training diverged at update" in line and "optimizer.learning_rate" in line
    step = int(line.split("diverged at update ")[1].split(":")[0])
    assert 1 <= step < 50
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    assert not os.path.exists(os.path.join(workdir, "export"))
    assert checkpoint_steps(workdir) == ([step - 1] if step > 1 else [])
    if step > 1:
        reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints", f"ckpt-{step - 1}"))
        weights = [reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if n.startswith("network/")]
        assert weights and all(np.all(np.isfinite(w)) for w in weights)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 40-update run, checkpoints at 20, 30, 40 (keep 3)."""
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    proc = train(workdir, "--config.train.num_steps=40", "--config.checkpoint.every_steps=10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return workdir


@pytest.mark.parametrize("damage", ["deleted", "empty", "garbled"])
def test_damaged_checkpoint_state_file_resumes_from_the_files(finished, tmp_path, damage):
    import shutil  # pylint: disable=import-outside-toplevel
    workdir = str(tmp_path / "run")
    shutil.copytree(finished, workdir)
    state = os.path.join(workdir, "checkpoints", "checkpoint")
    if damage == "deleted":
        os.remove(state)
    else:
        with open(state, "w") as f:
            f.write("" if damage == "empty" else "model_checkpoint_path: {{{ garbage")
    assert checkpoint_steps(workdir) == [20, 30, 40]
    proc = train(workdir, "--config.train.num_steps=40", "--config.checkpoint.every_steps=10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "rebuilt it from the 3 checkpoint files" in proc.stderr
    assert "already trained: step 40 of 40" in proc.stderr
    assert checkpoint_steps(workdir) == [20, 30, 40]  # nothing retrained, nothing rotated away
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-40")


def test_a_read_error_that_is_not_corruption_stops_instead_of_falling_back(finished, monkeypatch):
    from tfscale import checkpoint  # pylint: disable=import-outside-toplevel
    from tfscale.errors import ConfigError  # pylint: disable=import-outside-toplevel

    manager = tf.train.CheckpointManager(tf.train.Checkpoint(), os.path.join(finished, "checkpoints"), None)

    def unavailable(path):
        raise tf.errors.UnavailableError(None, None, f"connection reset reading {path}")

    monkeypatch.setattr(tf.train, "load_checkpoint", unavailable)
    with pytest.raises(ConfigError, match=r"cannot read checkpoint \S+ckpt-40 \(UnavailableError"):
        checkpoint.restore_latest(manager)


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(finished, tmp_path):
    import shutil  # pylint: disable=import-outside-toplevel
    workdir = str(tmp_path / "run")
    shutil.copytree(finished, workdir)
    for data_file in glob.glob(os.path.join(workdir, "checkpoints", "ckpt-*.data-*")):
        with open(data_file, "r+b") as f:
            f.seek(os.path.getsize(data_file) // 2)
            f.write(b"\xff" * 64)
    proc = train(workdir, "--config.train.num_steps=40", "--config.checkpoint.every_steps=10")
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = error_lines(proc.stderr)
    assert "none of the 3 checkpoints" in line
    assert checkpoint_steps(workdir) == [20, 30, 40]


def test_resume_after_sigkill_logs_each_step_once_and_summary_has_training_figures(tmp_path):
    workdir = str(tmp_path / "run")
    args = ["--config.train.num_steps=400", "--config.checkpoint.every_steps=50",
            "--config.train.log_every_steps=10", "--config.deterministic=True"]
    proc = start(workdir, *args)
    metrics = os.path.join(workdir, "metrics.jsonl")

    def logged_past_checkpoint():
        steps = checkpoint_steps(workdir)
        if not steps or not os.path.exists(metrics):
            return False
        with open(metrics) as f:
            logged = [json.loads(l)["step"] for l in f if l.strip()]
        return logged and max(logged) > max(steps)

    assert wait_for(logged_past_checkpoint), "never logged past a checkpoint"
    proc.kill()
    proc.wait()
    done = train(workdir, *args)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(metrics) as f:
        logged = [json.loads(l)["step"] for l in f if l.strip()]
    assert logged == sorted(set(logged)) and logged[-1] == 400
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["steps"] == 400
    for key in ("train_loss", "train_accuracy", "examples_per_sec"):
        assert isinstance(summary[key], float) and np.isfinite(summary[key]), key


def _worker_pids(launcher_pid):
    """Processes whose environment names `launcher_pid` as their launcher."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if f"TFSCALE_LAUNCHER_PID={launcher_pid}".encode() in env:
            pids.append(int(entry))
    return pids


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_stop_when_the_launcher_is_killed(tmp_path):
    workdir = str(tmp_path / "run")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "tfscale.launch", "--num_workers=2", "--", sys.executable, "-m",
         "experiments.train", f"--workdir={workdir}", *TINY, "--config.distribute.strategy=multi_worker",
         *LONG], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(_worker_pids(launcher.pid)) == 2, timeout=60)
        workers = _worker_pids(launcher.pid)
        assert wait_for(lambda: checkpoint_steps(workdir), timeout=180), "the workers never trained"
        launcher.kill()
        launcher.wait()
        assert wait_for(lambda: not any(_running(p) for p in workers), timeout=90), "orphaned workers"
    finally:
        launcher.kill()
        for pid in _worker_pids(launcher.pid):
            os.kill(pid, signal.SIGKILL)
    # They stopped as if preempted: the checkpoint of the update they were at.
    assert max(checkpoint_steps(workdir)) >= 20


def test_weights_that_overflowed_are_never_checkpointed(tmp_path):
    from conftest import tiny_config  # pylint: disable=import-outside-toplevel
    from tfscale import callbacks  # pylint: disable=import-outside-toplevel
    from tfscale.training import Run  # pylint: disable=import-outside-toplevel

    with Run(tiny_config(train__num_steps=4, export__saved_model=False), str(tmp_path)) as run:
        saver = callbacks.CheckpointSaver(run.manager, every_steps=1)
        saver.set_model(run.model)
        saver._save(1)  # pylint: disable=protected-access
        kernel = run.network.trainable_weights[0]
        kernel.assign(tf.fill(kernel.shape, float("inf")))
        saver._save(2)  # pylint: disable=protected-access
        assert checkpoint_steps(str(tmp_path)) == [1]


def test_a_run_started_before_a_config_key_existed_still_resumes(tmp_path):
    from conftest import tiny_config  # pylint: disable=import-outside-toplevel
    from tfscale import workdir as workdir_lib  # pylint: disable=import-outside-toplevel

    config = tiny_config()
    saved = json.loads(config.to_json())
    del saved["schedule"]["cooldown_steps"]  # as written by a version without the key
    os.makedirs(tmp_path / "run")
    with open(tmp_path / "run" / "config.json", "w") as f:
        json.dump(saved, f)
    workdir_lib.check(str(tmp_path / "run"), config)  # the default: the same run
    changed = tiny_config(schedule__name="wsd", schedule__cooldown_steps=5)
    with pytest.raises(Exception, match="different config"):
        workdir_lib.check(str(tmp_path / "run"), changed)
