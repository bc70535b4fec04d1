"""Scaling sweeps: plan the runs, run them one after another, resumable and shardable.

A sweep is a training config with a `sweep` section (see `sweep_defaults`): model sizes x data
budgets (`num_tokens`), or compute budgets with several sizes each (`compute_budgets`, isoFLOP
profiles), optionally crossed with a search over any other config keys (grid or random), whose
best run per (size, budget) a fit keeps. Every run is a normal training run in its own workdir
(`DIR/runs/NAME`) with its schedule fitted to its own length: warmup a fixed fraction of its
updates, cosine to its own last update. Each finished or failed run appends one row to
`DIR/results.jsonl` (`results.append`: atomic, safe for several shards sharing the folder).

Re-running the same command skips runs whose last row says `ok`, resumes an interrupted run
from its checkpoints and retries failed ones. `shard_index/num_shards` split the planned runs
round-robin, so shards on machines that share DIR together run each exactly once.
"""
import time

from absl import logging

from tfscale import io, lock as lock_lib
from tfscale.scaling import results as results_lib
from tfscale.scaling.progress import Progress, _progress_callback
from tfscale.scaling.sweep_plan import PlannedRun, plan, shard, size_costs
from tfscale.scaling.sweep_spec import (apply_overrides, length_overrides, parse_search, parse_size,
                                        search_settings, strip_sections, sweep_defaults)

__all__ = ["PlannedRun", "Progress", "apply_overrides", "finished", "length_overrides", "parse_search",
           "parse_size", "plan", "row_for", "run_sweep", "search_settings", "shard", "size_costs",
           "strip_sections", "sweep_defaults"]

RESULTS_FILE = "results.jsonl"


def finished(results_path):
    """Names whose last row is `ok`."""
    if not io.exists(results_path):
        return set()
    latest = {}
    for row in results_lib.read(results_path):
        latest[row.get("name")] = row.get("status")
    return {name for name, status in latest.items() if status == "ok"}



def row_for(run, summary, config):
    """The results row of a finished run: N, D (tokens), C and the final eval loss."""
    num_tokens = summary.get("num_tokens", summary["examples_seen"])  # examples for non-sequence data
    flops = summary["flops_per_example"] * summary["examples_seen"]
    return {
        "name": run.name, "group": run.group, "size": run.size, "status": "ok",
        "num_params": summary.get("non_embedding_params", summary["num_params"]),
        "total_params": summary["num_params"],
        "num_tokens": float(num_tokens), "flops": float(flops), "loss": summary["eval_loss"],
        "train_loss": summary.get("train_loss"), "steps": summary["steps"],
        "batch_size": config.train.batch_size, "learning_rate": config.optimizer.learning_rate,
        "overrides": {k: v for k, v in run.overrides}, "compute_budget": run.compute_budget or None,
        "wall_seconds": summary.get("wall_seconds"),
        **({"eval_accuracy": summary["eval_accuracy"]} if "eval_accuracy" in summary else {}),
    }



def run_sweep(config, workdir, shard_index=0, num_shards=1, train_fn=None):
    """Runs this shard's share of the sweep into `workdir`; returns {"ran", "skipped", "failed"}.

    train_fn(config, workdir, callbacks) -> summary (default `tfscale.run.train`); a failing
    run is recorded as `failed` with its error and the sweep goes on. SIGTERM (preemption)
    stops the sweep: the run saves a checkpoint and the next invocation resumes it.
    """
    from tfscale import run as run_lib  # pylint: disable=import-outside-toplevel

    train_fn = train_fn or run_lib.train
    runs = shard(plan(config), shard_index, num_shards)
    # One process per shard: a second copy of the same shard would run and record runs twice.
    with lock_lib.WorkdirLock(workdir, name=f"sweep-shard{shard_index}of{num_shards}"):
        return _run_shard(config, workdir, runs, train_fn)



def _run_shard(config, workdir, runs, train_fn):
    from tfscale import callbacks as callbacks_lib  # pylint: disable=import-outside-toplevel
    import tf_keras as keras  # pylint: disable=import-outside-toplevel

    results_path = io.join(workdir, RESULTS_FILE)
    done = finished(results_path)
    todo = [r for r in runs if r.name not in done]
    logging.info("sweep: %d runs in this shard, %d finished before, %d to run", len(runs),
                 len(runs) - len(todo), len(todo))
    progress = Progress(todo)
    failed = []
    for run in todo:
        progress.index += 1
        run_config = strip_sections(apply_overrides(config, run.overrides))
        run_dir = io.join(workdir, "runs", run.name)
        t0 = time.time()
        try:
            summary = train_fn(run_config, run_dir, (_progress_callback(progress, run),))
            row = row_for(run, summary, run_config)
        except callbacks_lib.Preempted:
            raise
        except Exception as e:  # pylint: disable=broad-except  (a failed run must not stop the sweep)
            logging.exception("sweep run %s failed", run.name)
            message = str(e).strip().splitlines()
            row = {"name": run.name, "group": run.group, "size": run.size, "status": "failed",
                   "error": f"{type(e).__name__}: {message[0] if message else ''}",
                   "overrides": {k: v for k, v in run.overrides}, "wall_seconds": time.time() - t0}
            failed.append(run.name)
        finally:
            keras.backend.clear_session()
        results_lib.append(results_path, row)
        progress.finish_run(run)
        if row["status"] == "ok":
            logging.info("sweep %s: N %d, D %.3g, C %.3g, loss %.4f (%.0f s)", run.name, row["num_params"],
                         row["num_tokens"], row["flops"], row["loss"], time.time() - t0)
    return {"ran": [r.name for r in todo], "skipped": len(runs) - len(todo), "failed": failed,
            "results": results_path}
