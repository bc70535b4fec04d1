"""Scaling sweeps: plan the runs, run them (one after another, or a local pool at once), resumable
and shardable.

A sweep is a training config with a `sweep` section (`sweep_spec.sweep_defaults`): model sizes x
data budgets (`num_tokens`), or compute budgets with several sizes each (`compute_budgets`,
isoFLOP profiles), optionally crossed with a search over any other config keys (grid or random),
whose best run per (size, budget) a fit keeps (`sweep_plan`). Every run is a normal training run
in its own workdir (`DIR/runs/NAME`) with its schedule fitted to its own length: warmup a fixed
fraction of its updates, cosine to its own last update. Each finished or failed run writes its
row to `DIR/results/NAME.json`, and `DIR/results.jsonl` is assembled from those (`sweep_results`:
no appends or locks, so shards may share a `gs://` bucket).

Re-running the same command skips runs whose row says `ok`, resumes an interrupted run from its
checkpoints and retries failed ones. `shard_index/num_shards` split the planned runs
round-robin, so shards on machines that share DIR together run each exactly once; within a
shard, `sweep.workers` runs several at once (`sweep_pool`).
"""
import contextlib
import threading

from absl import logging

from tfscale import io, lock as lock_lib
from tfscale.scaling import sweep_results, sweep_run
from tfscale.scaling.sweep_run import failed_row, row_for, run_one
from tfscale.scaling.progress import Progress, progress_callback
from tfscale.scaling.sweep_plan import PlannedRun, plan, shard, size_costs
from tfscale.scaling.sweep_results import RESULTS_FILE, finished
from tfscale.scaling.sweep_spec import (apply_overrides, length_overrides, parse_search, parse_size,
                                        search_settings, strip_sections, sweep_defaults)

__all__ = ["PlannedRun", "Progress", "RESULTS_FILE", "apply_overrides", "failed_row", "finished",
           "length_overrides", "parse_search", "parse_size", "plan", "row_for", "run_one", "run_runs", "run_sweep",
           "search_settings", "shard", "size_costs", "strip_sections", "sweep_defaults"]

def run_sweep(config, workdir, shard_index=0, num_shards=1, train_fn=None):
    """Runs this shard's share of the sweep into `workdir`; returns {"ran", "skipped", "failed",
    "results", "planned"} ("planned": the names of every run of the sweep, all shards').

    train_fn(config, workdir, callbacks) -> summary (default `tfscale.training.train`; with a pool,
    a module-level function the workers can import). SIGTERM (preemption) or Ctrl-C stops the
    sweep: running runs save a checkpoint and the next invocation resumes them.
    """
    from tfscale.scaling import sweep_pool  # pylint: disable=import-outside-toplevel

    workers = sweep_pool.resolve(config)  # first: on a GPU host this process leaves the GPUs to its workers
    planned = plan(config)
    names = [r.name for r in planned]
    return {**run_runs(config, workdir, shard(planned, shard_index, num_shards), names,
                       workers, train_fn, lock_name=f"sweep-shard{shard_index}of{num_shards}"), "planned": names}


def run_runs(config, workdir, runs, names, workers, train_fn=None, lock_name="sweep", label="sweep"):
    """Runs the `PlannedRun`s `runs` not yet finished in `workdir` on `workers`
    (`sweep_pool.resolve`), recording their rows; DIR/results.jsonl lists `names` (every run of
    the sweep, this shard's or not). What `run_sweep` and the main job's plan check share."""
    from tfscale.scaling import sweep_pool  # pylint: disable=import-outside-toplevel

    # One process per shard: a second copy of the same shard would run and record runs twice.
    with lock_lib.WorkdirLock(workdir, name=lock_name) as lock, _heartbeat(lock):
        sweep_run.check_same_settings(config, workdir, runs)
        done = finished(workdir)
        todo = [r for r in runs if r.name not in done]
        logging.info("%s: %d runs in this shard, %d finished before, %d to run%s", label, len(runs),
                     len(runs) - len(todo), len(todo),
                     f" on {workers.count} workers" if workers.count > 1 and todo else "")
        progress = Progress(todo, label=label)
        try:
            if workers.count > 1 and todo:
                ran, failed = sweep_pool.Pool(config, workdir, todo, train_fn, workers, progress,
                                              lambda row: sweep_results.assemble(workdir, names)).run()
            else:
                ran, failed = _run_here(config, workdir, todo, train_fn, progress, names)
        finally:
            path = sweep_results.assemble(workdir, names)
    return {"ran": ran, "skipped": len(runs) - len(todo), "failed": failed, "results": path}


@contextlib.contextmanager
def _heartbeat(lock, seconds=60.0):
    """Keeps a bucket's shard lock fresh for as long as the sweep runs (runs outlast its staleness)."""
    stop = threading.Event()

    def beat():
        while not stop.wait(seconds):
            lock.refresh()

    if io.is_remote(lock.path):
        threading.Thread(target=beat, name="sweep-lock-heartbeat", daemon=True).start()
    try:
        yield
    finally:
        stop.set()


def _run_here(config, workdir, todo, train_fn, progress, names):
    """One run after another in this process."""
    from tfscale import training  # pylint: disable=import-outside-toplevel

    ran, failed = [], []
    for planned in todo:
        progress.index += 1
        row = run_one(config, workdir, planned, train_fn or training.train, (progress_callback(progress, planned),))
        ran.append(planned.name)
        if row["status"] != "ok":
            failed.append(planned.name)
        sweep_results.assemble(workdir, names)
        progress.finish_run(planned)
    return ran, failed
