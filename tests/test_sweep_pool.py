"""Per-run result files (shards, old folders, tf.io.gfile filesystems) and the local process pool:
crashes recorded as failed, SIGTERM stops it after the runs under way (a pool's command killed
and resumed: test_sweep_pool_kill.py)."""
import dataclasses
import glob
import json
import os
import signal
import sys
import threading
import time
import uuid

from experiments.configs import scaling_lm
from tfscale import io
from tfscale.scaling import results, sweep, sweep_pool
from sweep_fixtures import measured_size_costs, tiny_sweep  # noqa: F401  (a fixture)


def fake_train(config, workdir, callbacks):  # pylint: disable=unused-argument
    """A deterministic summary without training: what rows are made of."""
    d = config.model.d_model
    examples = config.train.num_steps * config.train.batch_size
    return {"examples_seen": examples, "num_tokens": float(examples * config.model.seq_len),
            "flops_per_example": 1000.0 * d, "num_params": 100 * d, "non_embedding_params": 90 * d,
            "eval_loss": 10.0 / d, "steps": config.train.num_steps, "wall_seconds": 1.0}


def crashing_train(config, workdir, callbacks):
    """Size b dies outright (as a segfault or the OOM killer would), size c raises."""
    size = os.path.basename(workdir).split("_")[0]
    if size == "b":
        print("about to crash: size b", file=sys.stderr, flush=True)
        os._exit(3)  # pylint: disable=protected-access
    if size == "c":
        raise RuntimeError("boom\nsecond line")
    return fake_train(config, workdir, callbacks)


def slow_train(config, workdir, callbacks):
    """`fake_train` after a few seconds: runs still under way when the pool is stopped."""
    time.sleep(4)
    return fake_train(config, workdir, callbacks)


def test_per_run_files_assemble_the_same_results_on_1_and_3_shards(tmp_path):
    config = tiny_sweep()
    one, three = str(tmp_path / "one"), str(tmp_path / "three")
    sweep.run_sweep(config, one, train_fn=fake_train)
    for index in (2, 0, 1):  # any order of shards, as on machines sharing a folder
        out = sweep.run_sweep(config, three, index, 3, train_fn=fake_train)
    planned = [r.name for r in sweep.plan(config)]
    assert len(os.listdir(os.path.join(three, "results"))) == len(planned) == 8
    text = (tmp_path / "one" / "results.jsonl").read_text()
    assert (tmp_path / "three" / "results.jsonl").read_text() == text
    assert [r["name"] for r in results.read(out["results"])] == planned
    assert io.read_json(os.path.join(three, "results", f"{planned[0]}.json")) == json.loads(text.splitlines()[0])


def test_a_sweep_with_only_an_old_results_jsonl_is_read_and_kept(tmp_path):
    config = tiny_sweep(sizes=scaling_lm.get_config("tiny").sweep.sizes[:1])
    first, second = [r.name for r in sweep.plan(config)]
    with open(tmp_path / "results.jsonl", "w") as f:
        f.write(json.dumps({"name": first, "status": "failed", "error": "x"}) + "\n")
        f.write(json.dumps({"name": first, "status": "ok", "loss": 9.0, "legacy": True}) + "\n")
        f.write(json.dumps({"name": "elsewhere", "status": "ok", "loss": 1.0}) + "\n")
    out = sweep.run_sweep(config, str(tmp_path), train_fn=fake_train)
    assert out["ran"] == [second] and out["skipped"] == 1
    rows = results.read(out["results"])
    assert [r["name"] for r in rows] == [first, second, "elsewhere"] and rows[0]["legacy"]


def test_results_files_work_on_an_in_memory_gfile_filesystem():
    workdir = f"ram://sweep-{uuid.uuid4().hex}"
    config = tiny_sweep(sizes=scaling_lm.get_config("tiny").sweep.sizes[:2])
    out = sweep.run_sweep(config, workdir, train_fn=fake_train)
    names = [r.name for r in sweep.plan(config)]
    with io.gfile.GFile(out["results"]) as f:
        assert [json.loads(line)["name"] for line in f.read().splitlines()] == names
    assert all(io.exists(io.join(workdir, "results", f"{n}.json")) for n in names)
    assert sweep.run_sweep(config, workdir, train_fn=fake_train)["skipped"] == 4


def test_a_shard_lock_on_a_bucket_keeps_its_heartbeat_while_the_sweep_runs():
    from tfscale import lock as lock_lib  # pylint: disable=import-outside-toplevel
    lock = lock_lib.WorkdirLock(f"ram://sweep-{uuid.uuid4().hex}", name="sweep-shard0of1").acquire()
    first = io.read_json(lock.path)["time"]
    with sweep._heartbeat(lock, seconds=0.1):  # pylint: disable=protected-access
        time.sleep(0.5)
    assert io.read_json(lock.path)["time"] > first
    lock.release()


def test_auto_workers_fit_the_cores_and_one_means_no_pool():
    cores = sweep_pool.cores()
    assert sweep_pool.resolve(tiny_sweep()) == sweep_pool.Workers(1)
    auto = sweep_pool.resolve(tiny_sweep(workers=0))
    assert auto == (sweep_pool.Workers(cores, 1) if cores > 1 else sweep_pool.Workers(1))
    assert sweep_pool.resolve(tiny_sweep(workers=2, threads_per_worker=0)).threads == max(1, cores // 2)
    env = sweep_pool.worker_env(sweep_pool.Workers(2, 3), 0, False)
    assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == "3" and env["TFSCALE_LAUNCHER_PID"]
    assert sweep_pool.worker_env(sweep_pool.Workers(2, 0, ("0", "1")), 1, False)["CUDA_VISIBLE_DEVICES"] == "1"


def test_pool_records_a_crashing_worker_as_failed_and_retries_it(tmp_path):
    sweep_keys = dict(sizes=scaling_lm.get_config("tiny").sweep.sizes[:3], num_tokens=(4096,))
    config = tiny_sweep(**sweep_keys, workers=2)
    out = sweep.run_sweep(config, str(tmp_path), train_fn=crashing_train)
    rows = {r["name"]: r for r in results.read(out["results"])}
    assert [r["name"] for r in results.read(out["results"])] == [r.name for r in sweep.plan(config)]
    crashed, raised, ok = rows["b_T4.1e3"], rows["c_T4.1e3"], rows["a_T4.1e3"]
    assert crashed["status"] == "failed" and crashed["exit_code"] == 3
    assert crashed["error"] == "worker exited with code 3: about to crash: size b"
    assert raised["status"] == "failed" and raised["error"] == "RuntimeError: boom"
    assert ok["status"] == "ok" and sorted(out["failed"]) == ["b_T4.1e3", "c_T4.1e3"]
    # the next sweep runs the failed two again (here, in this process: which runs are left is
    # decided before any pool starts)
    again = sweep.run_sweep(tiny_sweep(**sweep_keys, workers=1), str(tmp_path), train_fn=fake_train)
    assert sorted(again["ran"]) == ["b_T4.1e3", "c_T4.1e3"] and again["skipped"] == 1 and not again["failed"]
    assert {r["status"] for r in results.read(out["results"])} == {"ok"}


def test_two_workers_take_every_run_in_two_processes_and_match_one_process(tmp_path, caplog):
    sweep_keys = dict(sizes=scaling_lm.get_config("tiny").sweep.sizes[:3], num_tokens=(4096, 8192))
    with caplog.at_level("INFO", logger="absl"):
        pooled = sweep.run_sweep(tiny_sweep(**sweep_keys, workers=2), str(tmp_path / "pool"), train_fn=fake_train)
    started = [r.getMessage() for r in caplog.records if " started (pid " in r.getMessage()]
    assert len(started) == 2, started  # one process per worker, not one per run
    serial = sweep.run_sweep(tiny_sweep(**sweep_keys, workers=1), str(tmp_path / "serial"), train_fn=fake_train)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("wall_seconds", "finished_at")} for r in rows]  # noqa
    assert len(pooled["ran"]) == 6 and not pooled["failed"]
    assert strip(results.read(pooled["results"])) == strip(results.read(serial["results"]))


def _wait(condition, seconds, what):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sigterm_with_runs_still_pending_stops_the_pool_after_the_runs_under_way(tmp_path):
    sweep_keys = dict(sizes=scaling_lm.get_config("tiny").sweep.sizes[:3], num_tokens=(4096, 8192))
    rows = lambda: glob.glob(str(tmp_path / "results" / "*.json"))  # noqa: E731

    def stop_once_a_run_started():
        _wait(lambda: glob.glob(str(tmp_path / "logs" / "*.log")), 120, "a run to start")
        time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop_once_a_run_started, daemon=True)
    stopper.start()
    t0 = time.time()
    try:
        sweep.run_sweep(tiny_sweep(**sweep_keys, workers=2), str(tmp_path), train_fn=slow_train)
        raise AssertionError("the pool was not stopped")
    except sweep_pool.Stopped as e:
        assert e.exit_code == 143
    stopper.join()
    assert time.time() - t0 < 90  # it did not wait for (or hang on) the four runs never started
    assert len(rows()) < 6


def recording_train(config, workdir, callbacks):
    """`fake_train` that leaves a file where it trained."""
    os.makedirs(workdir, exist_ok=True)
    open(os.path.join(workdir, "trained_here"), "w").close()
    return fake_train(config, workdir, callbacks)


def test_planned_runs_with_their_own_folders_train_there_on_a_pool(tmp_path):
    """What the main job's plan check does: three runs side by side, each in its own folder,
    their rows in the pool's workdir; a second call finds them finished."""
    config = tiny_sweep(sizes=scaling_lm.get_config("tiny").sweep.sizes[:3], num_tokens=(4096,))
    planned = sweep.plan(config)
    own = [dataclasses.replace(r, run_dir=str(tmp_path / "own" / r.size)) for r in planned]
    workdir = str(tmp_path / "check")
    out = sweep.run_runs(config, workdir, own, [r.name for r in own], sweep_pool.Workers(3, 1),
                         train_fn=recording_train)
    assert sorted(out["ran"]) == sorted(r.name for r in own) and not out["failed"]
    assert sorted(os.listdir(tmp_path / "own")) == ["a", "b", "c"]
    assert all((tmp_path / "own" / r.size / "trained_here").exists() for r in own)
    assert not os.path.exists(os.path.join(workdir, "runs"))
    assert [r["status"] for r in results.read(out["results"])] == ["ok"] * 3
    again = sweep.run_runs(config, workdir, own, [r.name for r in own], sweep_pool.Workers(1), train_fn=recording_train)
    assert again["ran"] == [] and again["skipped"] == 3


def test_the_plan_check_pool_has_one_worker_per_model_on_a_cpu_host():
    from tfscale.scaling import check_runs  # pylint: disable=import-outside-toplevel
    config = scaling_lm.get_config()
    cores = sweep_pool.cores()
    expected = sweep_pool.Workers(3, max(1, cores // 3)) if cores > 1 else sweep_pool.Workers(1)
    assert check_runs.workers(config, 3) == expected
    config.unlock()
    config.scaling.check_workers = 5  # a count of its own, never more than the models
    assert check_runs.workers(config, 3) == expected
    config.scaling.check_workers = 2
    assert check_runs.workers(config, 3) == sweep_pool.Workers(2, max(1, cores // 2))
    config.scaling.check_workers, config.sweep.workers = 0, 1  # no pool for the sweep: none for the check
    assert check_runs.workers(config, 3) == sweep_pool.Workers(1)
