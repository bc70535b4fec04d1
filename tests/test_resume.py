"""Invariant 4: a run killed with SIGKILL and restarted ends with the same weights."""
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 400
ARGS = ["--config=experiments/configs/digits_mlp.py:tiny", f"--config.train.num_steps={NUM_STEPS}",
        "--config.checkpoint.every_steps=20", "--config.deterministic=True",
        "--config.export.saved_model=False", "--config.train.log_every_steps=20"]


def train_command(workdir):
    return [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *ARGS]


def final_weights(workdir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")))
    names = sorted(n for n in reader.get_variable_to_shape_map() if n.startswith("network/"))
    assert names
    return {n: reader.get_tensor(n) for n in names}


def checkpoint_steps(workdir):
    return sorted(int(p.split("-")[-1].split(".")[0])
                  for p in glob.glob(os.path.join(workdir, "checkpoints", "ckpt-*.index")))


def train_here(args):
    """`experiments.train ARGS` run in this process (an uninterrupted reference run)."""
    from conftest import run_command  # pylint: disable=import-outside-toplevel
    done = run_command("train", args)
    assert done.returncode == 0, done.stderr[-3000:]


def kill_then_resume(args, tmp_path, num_steps, after_step=1):
    """Trains `experiments.train ARGS` straight through (in this process), and again as a process
    SIGKILLed once a checkpoint of update >= `after_step` exists, then resumed by the same
    command; returns both runs' final weights."""
    command = lambda workdir: [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *args]  # noqa: E731
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    train_here([f"--workdir={straight}", *args])
    proc = subprocess.Popen(command(killed), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while max(checkpoint_steps(killed) or [0]) < after_step and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps_at_kill = checkpoint_steps(killed)
    assert steps_at_kill and after_step <= max(steps_at_kill) < num_steps, "the run must be killed mid-way"
    assert not os.path.exists(os.path.join(killed, "summary.json"))
    subprocess.run(command(killed), cwd=ROOT, check=True, capture_output=True)
    return final_weights(straight), final_weights(killed)


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[n] - b[n]))) for n in a)


def test_sigkill_mid_run_then_restart_ends_with_the_same_weights(tmp_path):
    assert max_difference(*kill_then_resume(ARGS, tmp_path, NUM_STEPS)) <= 1e-6


def test_corrupt_newest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    from conftest import tiny_config  # pylint: disable=import-outside-toplevel
    from tfscale.training import Run  # pylint: disable=import-outside-toplevel

    workdir = str(tmp_path)
    config = tiny_config(train__num_steps=20, checkpoint__every_steps=10, export__saved_model=False)
    Run(config, workdir).fit()
    assert checkpoint_steps(workdir) == [10, 20]
    data_file = glob.glob(os.path.join(workdir, "checkpoints", "ckpt-20.data-*"))[0]
    with open(data_file, "r+b") as f:
        size = os.path.getsize(data_file)
        f.seek(size // 2)
        f.write(b"\xff" * 64)

    resumed = Run(config, workdir)
    from tfscale import checkpoint  # pylint: disable=import-outside-toplevel
    with_warning = checkpoint.restore_latest(resumed.manager)
    assert with_warning.endswith("ckpt-10")
    assert any("ckpt-20 cannot be read" in r.getMessage() and "falling back" in r.getMessage()
               for r in caplog.records)
    assert resumed.step == 10
    resumed.fit()  # trains steps 10..20 again
    assert resumed.step == 20
