"""Preemption: SIGTERM saves a checkpoint at the current update and exits 143; the same command
then resumes exactly (invariant 4), for one process and for 2 workers under the launcher."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from test_resume import NUM_STEPS, ROOT, checkpoint_steps, final_weights, train_command, train_here

PREEMPTED = re.compile(r"preempted \(SIGTERM\) at step (\d+): checkpoint saved at \S+ckpt-(\d+);")


def _terminate_mid_run(command, workdir, **popen_kwargs):
    """Starts `command`, sends SIGTERM once it has checkpointed, returns (returncode, stderr)."""
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, **popen_kwargs)
    deadline = time.time() + 120
    while not checkpoint_steps(workdir) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted one-device run of the same command, in this process."""
    workdir = str(tmp_path_factory.mktemp("straight"))
    train_here(train_command(workdir)[3:])
    return final_weights(workdir)


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[n] - b[n]))) for n in a)


def test_sigterm_saves_the_current_update_exits_143_and_the_restart_resumes_exactly(tmp_path, straight):
    stopped = str(tmp_path / "stopped")
    code, err = _terminate_mid_run(train_command(stopped), stopped)
    assert code == 143, err[-3000:]
    match = PREEMPTED.search(err)
    assert match, err[-3000:]
    step = int(match.group(1))
    assert int(match.group(2)) == step and step in checkpoint_steps(stopped) and step < NUM_STEPS
    assert not os.path.exists(os.path.join(stopped, "summary.json"))
    print(f"SIGTERM: stopped at step {step}; checkpoints {checkpoint_steps(stopped)}")

    subprocess.run(train_command(stopped), cwd=ROOT, check=True, capture_output=True)
    diff = max_diff(straight, final_weights(stopped))
    print(f"SIGTERM + restart vs uninterrupted: max |dw| = {diff:.2e}")
    assert diff <= 1e-6


def test_sigterm_to_the_launcher_stops_both_workers_at_one_update_and_they_resume(tmp_path, straight):
    workdir = str(tmp_path / "multi")
    command = [sys.executable, "-m", "tfscale.launch", "--num_workers=2", "--",
               *train_command(workdir), "--config.distribute.strategy=multi_worker"]
    code, err = _terminate_mid_run(command, workdir)
    assert code == 143, err[-3000:]
    steps = {int(m.group(1)) for m in PREEMPTED.finditer(err)}
    assert len(re.findall(r"\[worker [01]\] preempted", err)) == 2, err[-3000:]
    assert len(steps) == 1, f"the workers stopped at different updates: {steps}"
    step = steps.pop()
    assert step in checkpoint_steps(workdir) and step < NUM_STEPS
    print(f"SIGTERM to the launcher: both workers stopped at step {step}")

    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    diff = max_diff(straight, final_weights(workdir))
    print(f"2 workers, SIGTERM + restart vs one device uninterrupted: max |dw| = {diff:.2e}")
    assert diff <= 1e-5
