"""Invariant 2 across processes: 2 MultiWorkerMirroredStrategy workers on 127.0.0.1 give the
weights of one device."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

from test_resume import final_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--config=experiments/configs/digits_mlp.py:tiny", "--config.train.num_steps=10",
        "--config.train.batch_size=32", "--config.train.accum_steps=2"]


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_local_workers_give_the_weights_of_one_device(tmp_path):
    single = str(tmp_path / "single")
    subprocess.run([sys.executable, "-m", "experiments.train", f"--workdir={single}", *ARGS],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)

    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    shared = str(tmp_path / "multi")
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "experiments.train", f"--workdir={shared}", *ARGS,
             "--config.distribute.strategy=multi_worker"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]

    with open(os.path.join(shared, "summary.json")) as f:
        summary = json.load(f)
    assert summary["strategy"] == "multi_worker" and summary["num_replicas"] == 2
    a, b = final_weights(single), final_weights(shared)
    diff = max(float(np.max(np.abs(a[n] - b[n]))) for n in a)
    print(f"2 workers x accum 2 vs one device: max |dw| = {diff:.2e}")
    assert diff < 1e-5
