"""Sweeps: every run planned once, schedules fitted to each run, resume, failures, shards, searches."""
import os
import re
import subprocess
import sys
import time

import pytest

from experiments.configs import scaling_lm
from tfscale import ConfigError, training
from tfscale.scaling import results, sweep
from sweep_fixtures import ROOT, measured_size_costs, quiet, tiny_sweep  # noqa: F401  (a fixture)


def test_plan_crosses_sizes_with_budgets_and_fits_each_schedule_to_its_run():
    config = tiny_sweep()
    runs = sweep.plan(config)
    assert len(runs) == len(config.sweep.sizes) * len(config.sweep.num_tokens) == 8
    batch, seq_len = config.train.batch_size, config.model.seq_len
    for r in runs:
        overrides = dict(r.overrides)
        tokens = float(r.group.split("_T")[1])
        assert overrides["train.num_steps"] == r.num_steps == round(tokens / (batch * seq_len))
        assert overrides["schedule.warmup_steps"] == round(config.sweep.warmup_fraction * r.num_steps)
    assert [r.cost for r in runs] == sorted(r.cost for r in runs)


def test_isoflop_plan_gives_every_size_the_same_compute():
    config = tiny_sweep(num_tokens=(), compute_budgets=(2e9,))
    runs = sweep.plan(config)
    assert len(runs) == 4 and all(r.compute_budget == 2e9 for r in runs)
    for r in runs:  # num_steps x batch x FLOPs per example ~ the budget (up to rounding one update)
        assert abs(r.cost - 2e9) <= r.cost / r.num_steps
    assert len({r.num_steps for r in runs}) == 4  # smaller models train longer


def test_grid_and_random_search_expand_each_size_budget_group():
    grid = sweep.plan(tiny_sweep(search="optimizer.learning_rate=1e-3,3e-3;optimizer.weight_decay=0,0.1"))
    assert len(grid) == 8 * 4 and len({r.group for r in grid}) == 8
    for group in {r.group for r in grid}:
        settings = {(dict(r.overrides)["optimizer.learning_rate"], dict(r.overrides)["optimizer.weight_decay"])
                    for r in grid if r.group == group}
        assert settings == {(1e-3, 0), (1e-3, 0.1), (3e-3, 0), (3e-3, 0.1)}
    rand = sweep.plan(tiny_sweep(search="optimizer.learning_rate=loguniform(1e-4,1e-2)", search_mode="random",
                                 search_samples=3))
    lrs = [dict(r.overrides)["optimizer.learning_rate"] for r in rand]
    assert len(rand) == 24 and all(1e-4 <= lr <= 1e-2 for lr in lrs) and len(set(lrs)) == 24
    assert [r.name for r in rand] == [r.name for r in sweep.plan(tiny_sweep(
        search="optimizer.learning_rate=loguniform(1e-4,1e-2)", search_mode="random", search_samples=3))]


def test_shards_cover_every_run_exactly_once():
    runs = sweep.plan(tiny_sweep(search="optimizer.learning_rate=1e-3,3e-3,1e-2"))
    for num_shards in (1, 2, 3, 5):
        names = [r.name for i in range(num_shards) for r in sweep.shard(runs, i, num_shards)]
        assert sorted(names) == sorted(r.name for r in runs)
    with pytest.raises(ConfigError, match="shard_index 2"):
        sweep.shard(runs, 2, 2)


@pytest.mark.parametrize("keys, fragment", [
    ({"sizes": ()}, "sweep.sizes is empty"),
    ({"compute_budgets": (1e9,)}, "exactly one of"),
    ({"sizes": ("num_layers",)}, "is not key=value"),
    ({"sizes": ("d_modle=8",)}, "unknown config key 'model.d_modle'"),
    ({"search": "optimizer.lr=1,2"}, "unknown config key 'optimizer.lr'"),
    ({"search": "optimizer.learning_rate=loguniform(1e-3,1e-2)"}, "needs sweep.search_mode=random"),
])
def test_bad_sweep_configs_are_config_errors(keys, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        sweep.plan(tiny_sweep(**keys))


def test_failing_run_is_recorded_and_the_sweep_goes_on_then_retried(tmp_path):
    config = quiet(tiny_sweep(sizes=scaling_lm.get_config("tiny").sweep.sizes[:2]))
    calls = []

    def train(run_config, workdir, callbacks):
        calls.append(os.path.basename(workdir))
        if len(calls) == 2:
            raise RuntimeError("out of memory\nsecond line")
        return training.train(run_config, workdir, callbacks)

    out = sweep.run_sweep(config, str(tmp_path), train_fn=train)
    rows = results.read(out["results"])
    assert len(rows) == 4 and out["failed"] == [calls[1]]
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed == [r for r in rows if r["name"] == calls[1]]
    assert failed[0]["error"] == "RuntimeError: out of memory"
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(r["num_tokens"] == r["steps"] * config.train.batch_size * config.model.seq_len for r in ok)
    assert all(r["flops"] > 6 * r["num_params"] * r["num_tokens"] for r in ok)  # + attention
    # a re-run skips the three finished runs and retries the failed one
    calls.clear()
    again = sweep.run_sweep(config, str(tmp_path), train_fn=train)
    assert calls == [failed[0]["name"]] and again["skipped"] == 3 and not again["failed"]
    assert len(results.load(out["results"])) == 4


def test_sweep_cli_resumes_after_sigkill_and_skips_finished_runs(tmp_path):
    args = [sys.executable, "-m", "experiments.sweep", "--config=experiments/configs/scaling_lm.py:tiny",
            f"--workdir={tmp_path}", "--config.sweep.sizes=('a: num_layers=1,d_model=8,num_heads=2,d_ff=32',)",
            "--config.sweep.num_tokens=(8192, 16384)", "--config.checkpoint.every_steps=8",
            "--config.sweep.schedule=cosine"]
    checkpoint = tmp_path / "runs" / "a_T1.64e4" / "checkpoints" / "checkpoint"
    with open(tmp_path / "log.txt", "w") as log:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while proc.poll() is None and not checkpoint.exists() and time.time() < deadline:
            time.sleep(0.02)  # kill once the second (larger) run has written a checkpoint
        proc.kill()
        proc.wait(timeout=60)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    rows = results.read(str(tmp_path / "results.jsonl"))
    assert [r["name"] for r in rows] == ["a_T8.19e3"], "".join(lines[-20:])
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 runs ran (0 failed), 1 already finished" in done.stdout
    assert "resumed from" in done.stderr
    rows = results.read(str(tmp_path / "results.jsonl"))
    assert [r["name"] for r in rows] == ["a_T8.19e3", "a_T1.64e4"] and rows[1]["steps"] == 128
