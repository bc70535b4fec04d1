"""Invariant 2 across processes, through the local launcher: 2 MultiWorkerMirroredStrategy workers
on 127.0.0.1 give the weights of one device; a worker that dies stops the launch at once."""
import json
import os
import subprocess
import sys
import time

import numpy as np

from test_resume import ROOT, final_weights

ARGS = ["--config=experiments/configs/digits_mlp.py:tiny", "--config.train.num_steps=10",
        "--config.train.batch_size=32", "--config.train.accum_steps=2"]


def launch(num_workers, command, **kwargs):
    return subprocess.run([sys.executable, "-m", "tfscale.launch", f"--num_workers={num_workers}",
                           "--", *command], cwd=ROOT, capture_output=True, text=True, **kwargs)


def test_two_local_workers_give_the_weights_of_one_device(tmp_path):
    single = str(tmp_path / "single")
    subprocess.run([sys.executable, "-m", "experiments.train", f"--workdir={single}", *ARGS],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)

    shared = str(tmp_path / "multi")
    result = launch(2, [sys.executable, "-m", "experiments.train", f"--workdir={shared}", *ARGS,
                        "--config.distribute.strategy=multi_worker"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[worker 1] " in result.stderr and "[worker 0] {" in result.stdout  # prefixed output

    with open(os.path.join(shared, "summary.json")) as f:
        summary = json.load(f)
    assert summary["strategy"] == "multi_worker" and summary["num_replicas"] == 2
    assert sorted(os.listdir(shared)) == sorted(os.listdir(single))  # the other worker wrote elsewhere
    a, b = final_weights(single), final_weights(shared)
    diff = max(float(np.max(np.abs(a[n] - b[n]))) for n in a)
    print(f"2 workers x accum 2 vs one device: max |dw| = {diff:.2e}")
    assert diff < 1e-5


def test_a_killed_worker_makes_the_launcher_fail_fast_with_a_clear_message():
    # Worker 1 dies at once; worker 0 would otherwise wait (here: sleep) for a long time.
    script = ("import json, os, signal, time\n"
              "index = json.loads(os.environ['TF_CONFIG'])['task']['index']\n"
              "print('started', flush=True)\n"
              "time.sleep(0.5)\n"
              "os.kill(os.getpid(), signal.SIGKILL) if index == 1 else time.sleep(120)\n")
    t0 = time.time()
    result = launch(2, [sys.executable, "-c", script], timeout=60)
    elapsed = time.time() - t0
    assert result.returncode == 128 + 9
    assert "launcher: error: worker 1 was killed by SIGKILL; stopping worker 0" in result.stderr
    assert "[worker 0] started" in result.stdout and "[worker 1] started" in result.stdout
    assert elapsed < 20, f"the launcher took {elapsed:.0f}s to give up"


def test_launcher_without_a_command_is_a_usage_error():
    result = launch(2, [], timeout=60)
    assert result.returncode == 2 and "no command given" in result.stderr
