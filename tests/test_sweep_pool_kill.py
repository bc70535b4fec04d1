"""The local process pool through its command: SIGTERM forwarded to the workers, the pool killed
outright (its workers stop themselves), and every run finished exactly once on resuming."""
import fcntl
import glob
import os
import signal
import subprocess
import sys
import time

from tfscale.scaling import results
from sweep_fixtures import ROOT


def _locked(path):
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _wait(condition, seconds, what):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_pool_forwards_sigterm_and_a_killed_pool_resumes_every_run_exactly_once(tmp_path):
    args = [sys.executable, "-m", "experiments.sweep", "--config=experiments/configs/scaling_lm.py:tiny",
            f"--workdir={tmp_path}", "--config.sweep.workers=2",
            "--config.sweep.sizes=('a: num_layers=1,d_model=8,num_heads=2,d_ff=32', "
            "'b: num_layers=1,d_model=16,num_heads=2,d_ff=64')",
            "--config.sweep.num_tokens=(8192, 16384)", "--config.checkpoint.every_steps=8",
            "--config.sweep.schedule=cosine"]
    checkpoints = lambda: glob.glob(str(tmp_path / "runs" / "*_T1.64e4" / "checkpoints" / "checkpoint"))  # noqa
    locks = lambda: [p for p in glob.glob(str(tmp_path / "runs" / "*" / ".lock")) if _locked(p)]  # noqa
    with open(tmp_path / "log1.txt", "w") as log:  # SIGTERM once a large run has a checkpoint
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: checkpoints() or proc.poll() is not None, 300, "a checkpoint")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143, (tmp_path / "log1.txt").read_text()[-3000:]
    assert not locks()  # the parent waited for its workers
    assert "preempted (SIGTERM)" in (tmp_path / "log1.txt").read_text()
    logs = "".join(open(p).read() for p in glob.glob(str(tmp_path / "logs" / "*.log")))
    assert "checkpoint saved" in logs
    with open(tmp_path / "log2.txt", "w") as log:  # SIGKILL, once the workers are training again
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: "resumed from" in "".join(open(p).read() for p in glob.glob(str(tmp_path / "logs" / "*.log")))
              or proc.poll() is not None, 300, "a resumed run")
        proc.kill()
        proc.wait(timeout=60)
    _wait(lambda: not locks(), 150, "the orphaned workers to stop")
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = results.read(str(tmp_path / "results.jsonl"))
    planned = {"a_T8.19e3": 64, "b_T8.19e3": 64, "a_T1.64e4": 128, "b_T1.64e4": 128}
    assert sorted(r["name"] for r in rows) == sorted(planned)  # each run exactly once
    assert all(r["status"] == "ok" and r["steps"] == planned[r["name"]] for r in rows)
    assert "launcher (pid" in "".join(open(p).read() for p in glob.glob(str(tmp_path / "logs" / "*.log")))
