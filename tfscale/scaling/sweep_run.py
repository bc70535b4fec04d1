"""One run of a sweep: trained in DIR/runs/NAME, its row (ok, or failed with its error) recorded.

Shared by the sweep's own loop (`sweep`) and the pool's worker processes (`sweep_worker`).
"""
import time

from absl import logging

from tfscale import io, lock as lock_lib
from tfscale.errors import ConfigError
from tfscale.scaling import results as results_lib
from tfscale.scaling import sweep_results
from tfscale.scaling.sweep_plan import resolve_overrides
from tfscale.scaling.sweep_spec import apply_overrides, strip_sections

# How long a run waits for its workdir to be free: the workers of a pool that was just killed
# may still be saving their checkpoints (`launch.ORPHAN_GRACE_SECONDS` at the most).
RUN_LOCK_WAIT_SECONDS = 150


def row_for(planned, summary, config):
    """The results row of a finished run: N, D (tokens), C in both conventions and the final eval loss."""
    num_params, num_tokens, flops = results_lib.ndc_from_summary(summary, "total")
    non_embedding_params, _, flops_kaplan = results_lib.ndc_from_summary(summary, "non_embedding")
    return {
        "name": planned.name, "group": planned.group, "size": planned.size, "status": "ok",
        "num_params": num_params, "non_embedding_params": non_embedding_params,
        "num_tokens": float(num_tokens), "flops": float(flops), "flops_kaplan": float(flops_kaplan),
        "loss": summary["eval_loss"],
        "train_loss": summary.get("train_loss"), "steps": summary["steps"],
        "batch_size": config.train.batch_size, "learning_rate": config.optimizer.learning_rate,
        "overrides": {k: v for k, v in planned.overrides}, "compute_budget": planned.compute_budget or None,
        "wall_seconds": summary.get("wall_seconds"),
        **({"eval_accuracy": summary["eval_accuracy"]} if "eval_accuracy" in summary else {}),
        **({"role": planned.role} if planned.role else {}),
    }


def failed_row(planned, error, wall_seconds, **extra):
    """The results row of a run that failed with `error` (one line)."""
    return {"name": planned.name, "group": planned.group, "size": planned.size, "status": "failed", "error": error,
            "overrides": {k: v for k, v in planned.overrides}, "wall_seconds": wall_seconds, **extra}


def _lock_run_dir(run_dir):
    deadline = time.time() + RUN_LOCK_WAIT_SECONDS
    while True:
        try:
            return lock_lib.WorkdirLock(run_dir).acquire()
        except ConfigError:
            if time.time() > deadline:
                raise
            logging.log_first_n(logging.INFO, "sweep: %s is in use; waiting for it", 1, run_dir)
            time.sleep(1.0)


def run_config(config, overrides, workdir=""):
    """The training config of a planned run with `overrides` (a wsd branch's trunk reference
    resolved in `workdir`): what `run_one` trains, and what the main job reopens a run with."""
    return strip_sections(apply_overrides(config, resolve_overrides(overrides, workdir)))


# What a finished run may differ in from its plan and still be the planned run: a branch's start
# (`resolve_overrides` picks it from what the trunk kept); a trunk's length and kept points (its
# branches start at its newest checkpoint before their cooldown, so budgets may be added).
BRANCH_MAY_DIFFER = ("train.init_from",)
TRUNK_MAY_DIFFER = ("train.num_steps", "checkpoint.keep_steps")


def check_same_settings(config, workdir, runs):
    """A ConfigError, before anything trains, if a finished run was trained with another config
    than the plan now gives the run of that name (a size's shape changed under its label, the
    base config changed, another warmup): its row would be reused as if it were the planned run."""
    from tfscale import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
    done = sweep_results.finished(workdir)
    for planned in runs:
        run_dir = planned.run_dir or io.join(workdir, "runs", planned.name)
        if planned.name not in done or not io.exists(io.join(run_dir, workdir_lib.CONFIG_FILE)):
            continue
        unresolved = tuple((k, v) for k, v in planned.overrides if k not in BRANCH_MAY_DIFFER)
        may_differ = BRANCH_MAY_DIFFER + (TRUNK_MAY_DIFFER if planned.role == "trunk" else ())
        saved, now, differ = workdir_lib.differences(
            run_dir, strip_sections(apply_overrides(config, unresolved)), may_differ)
        differ = [k for k in differ if not _close(saved.get(k), now.get(k))]
        if not differ:
            continue
        key = differ[0]
        hint = (f"the trunks' warmup is sweep.warmup_fraction of the smallest budget; keep theirs with "
                f"--config.sweep.warmup_steps={saved.get(key)}" if key == "schedule.warmup_steps" and
                planned.role == "trunk" else "use a new workdir, or give a changed size a new label")
        more = f" (and {len(differ) - 1} more key{'s' if len(differ) > 2 else ''})" if len(differ) > 1 else ""
        raise ConfigError(f"{planned.name} finished in {run_dir} with {key}={saved.get(key)!r}, but the plan now "
                          f"gives it {now.get(key)!r}{more}: {hint}")


def _close(a, b):
    """Floats equal up to their last bits (a random search's draws made on another host)."""
    return isinstance(a, float) and isinstance(b, float) and abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def run_one(config, workdir, planned, train_fn, callbacks=()):
    """Trains one planned run into DIR/runs/NAME (or its `run_dir`) and records its row (ok, or failed with its
    error: a failed run must not stop the sweep); returns the row. `callbacks.Preempted`
    propagates with nothing recorded: the next invocation resumes the run."""
    from tfscale import callbacks as callbacks_lib  # pylint: disable=import-outside-toplevel
    import tf_keras as keras  # pylint: disable=import-outside-toplevel

    run_cfg = run_config(config, planned.overrides, workdir)
    run_dir = planned.run_dir or io.join(workdir, "runs", planned.name)
    t0 = time.time()
    try:
        lock = _lock_run_dir(run_dir)
        try:
            summary = train_fn(run_cfg, run_dir, tuple(callbacks))
        finally:
            lock.release()
        row = row_for(planned, summary, run_cfg)
    except callbacks_lib.Preempted:
        raise
    except Exception as e:  # pylint: disable=broad-except  (recorded; the sweep goes on)
        logging.exception("sweep run %s failed", planned.name)
        message = str(e).strip().splitlines()
        row = failed_row(planned, f"{type(e).__name__}: {message[0] if message else ''}", time.time() - t0)
    finally:
        keras.backend.clear_session()
    sweep_results.write_row(workdir, row)
    if row["status"] == "ok":
        logging.info("sweep %s: N %d, D %.3g, C %.3g, loss %.4f (%.0f s)", planned.name, row["num_params"],
                     row["num_tokens"], row["flops"], row["loss"], time.time() - t0)
    return row
