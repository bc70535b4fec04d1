"""The plan check's trainings: the chosen size and its neighbours at budget C, side by side.

They run as planned runs on a pool like the sweep's (`sweep.run_runs`): the chosen one in
DIR/final, each neighbour in DIR/check/LABEL, their rows in DIR/check/results/ (pool logs in
DIR/check/logs). A re-run keeps those finished and resumes the others from their checkpoints.
The main job then opens each run again as it was trained (`training.Run` on a finished run
restores its last checkpoint and trains nothing) for its held-out losses and compression.
"""
from tfscale import io
from tfscale.errors import ConfigError
from tfscale.scaling import plan_check, sweep, sweep_results
from tfscale.scaling.sweep_run import run_config

RESERVED = (sweep_results.RESULTS_DIR, "logs")  # DIR/check's own folders: no candidate may take them


def final_overrides(config, overrides, num_steps, export=True):
    """A model's overrides at budget C: the sweep's recipe at its own size and length, with
    gradient accumulation (and an export for the final model)."""
    return (*overrides, *sweep.length_overrides(config.sweep, num_steps),
            ("train.accum_steps", config.scaling.accum_steps), ("export.saved_model", export),
            ("checkpoint.every_steps", max(1, num_steps // 4)))


def workers(config, count):
    """The pool for `count` models: `scaling.check_workers`, or (0) one worker per model on a CPU
    host (each with its share of the cores: small models use a few cores badly), a GPU host's
    as the sweep's pool would be (`sweep_pool.resolve`); one after another here when the sweep
    is (`sweep.workers=1`)."""
    from tfscale.scaling import sweep_pool  # pylint: disable=import-outside-toplevel
    wanted = int(config.scaling.get("check_workers", 0))
    if wanted < 0:
        raise ConfigError(f"scaling.check_workers must be >= 0, got {wanted}")
    if wanted == 0 and int(config.sweep.get("workers", 1)) == 1:
        return sweep_pool.Workers(1)
    c = config.copy_and_resolve_references()
    c.unlock()
    c.sweep.workers = wanted
    resolved = sweep_pool.resolve(c)
    if resolved.devices or resolved.count == 1:
        return resolved
    count = min(count, resolved.count) if wanted else count
    return sweep_pool.Workers(count, max(1, sweep_pool.cores() // count))


def plan(config, workdir, entries, budget, costs, batch):
    """[(role, label, candidate overrides)] -> (planned runs, {label: training config})."""
    runs, configs = [], {}
    for role, label, overrides in entries:
        if label in RESERVED:
            raise ConfigError(f"scaling.candidate_sizes: the label {label!r} is a folder of DIR/check; rename it")
        steps = plan_check.steps_at(budget, costs[label][1], batch)
        run_overrides = final_overrides(config, overrides, steps, export=role == "chosen")
        configs[label] = run_config(config, run_overrides)
        runs.append(sweep.PlannedRun(
            name=label, group=label, size=label, overrides=run_overrides, num_steps=steps,
            cost=float(steps * batch * costs[label][1]), role=role,
            run_dir=io.join(workdir, "final") if role == "chosen" else io.join(workdir, "check", label)))
    return runs, configs


def train(config, workdir, runs):
    """Trains `runs` on the check's pool into their folders; raises ConfigError, naming where
    its error is, if one failed (a re-run retries it and keeps the finished ones)."""
    check_dir = io.join(workdir, "check")
    done = sweep_results.finished(check_dir)
    for r in runs:  # a row whose run folder was removed: train it again, on the pool
        if r.name in done and not io.exists(io.join(r.run_dir, "summary.json")):
            io.gfile.remove(sweep_results.row_path(check_dir, r.name))
    pool = workers(config, len(runs))
    sweep.run_runs(config, check_dir, runs, [r.name for r in runs], pool, lock_name="plan-check", label="plan check")
    rows = sweep_results.read_rows(check_dir)
    for r in runs:
        row = rows.get(r.name, {})
        if row.get("status") != "ok":
            where = (f"its log: {row['log']}" if row.get("log") else
                     "its log is named on its 'started in worker' line above" if pool.count > 1 else
                     "its traceback is in this job's log above")
            raise ConfigError(f"plan check: {r.name} failed ({row.get('error', 'no result')}); {where}; "
                              "re-running the same command retries it")
