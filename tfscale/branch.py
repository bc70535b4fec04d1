"""Runs that start from another run's checkpoint at update s (`train.init_from = "PATH@s"`).

The input order is a function of (seed, step) and the learning rate of the step, so a run that
restores the checkpoint (network, optimizer) at update s of a run with the same config and the
same schedule before s trains exactly as an unbroken run (as a resumed one does): a wsd cooldown branched from a constant
trunk equals the full wsd run, and one trunk per model size gives every data budget's loss.
The branch's own checkpoints win once it has any (a resumed branch ignores `init_from`).
"""
import os

from absl import logging
import numpy as np
import tensorflow as tf

from tfscale import checkpoint, io, optim, values, workdir as workdir_lib
from tfscale.errors import ConfigError

# What a branch may change: its schedule, its length, and what a resumed run may change anyway.
MAY_DIFFER = ("schedule.", "train.num_steps", "train.init_from") + workdir_lib.RESUMABLE


def resolve(init_from):
    """(checkpoint prefix, step, source workdir or None) of `train.init_from`."""
    path, step = values.init_from_parts(init_from)
    if io.exists(path + ".index"):
        prefix = path
    else:
        if not io.exists(path):
            raise ConfigError(f"train.init_from: {path} does not exist (a workdir or a checkpoint prefix)")
        tried = [checkpoint.kept_prefix(io.join(path, "checkpoints"), step),
                 io.join(path, "checkpoints", f"ckpt-{step}")]
        prefix = next((p for p in tried if io.exists(p + ".index")), None)
        if prefix is None:
            raise ConfigError(f"train.init_from: {path} has no checkpoint at update {step} (neither "
                              f"{tried[0]} nor {tried[1]}); train it there first, with "
                              f"checkpoint.keep_steps=({step},)")
    parts = prefix.rstrip("/").split("/")[:-1]
    if parts and parts[-1] == checkpoint.KEEP_DIR:
        parts = parts[:-1]
    source = "/".join(parts[:-1]) if parts and parts[-1] == "checkpoints" else None
    return prefix, step, source


def checkpoint_steps(run_dir):
    """The updates of all of `run_dir`'s checkpoints: kept (`checkpoint.keep_steps`) and rotated."""
    directory = io.join(run_dir, "checkpoints")
    return {int(p.rsplit("-", 1)[1]) for p in (checkpoint.checkpoint_paths(directory)
                                                + checkpoint.checkpoint_paths(io.join(directory, checkpoint.KEEP_DIR)))}


def newest_step_at_or_before(run_dir, step):
    """The update of `run_dir`'s newest checkpoint at or before `step`, or None.

    A branch that starts there instead of at `step` trains the updates between again, at the
    run's own rate, on the same inputs: it still equals the unbroken run (a budget added to a
    finished sweep, between or beyond the trunk's kept points)."""
    return max((s for s in checkpoint_steps(run_dir) if s <= step), default=None)


def check(config, workdir):
    """Everything about `train.init_from` that can be checked before the workdir is written:
    the checkpoint exists, reads, holds update `step`, and comes from a run this one may branch
    from. Nothing to check once the run has checkpoints of its own."""
    if not str(config.train.init_from).strip() or checkpoint.checkpoint_paths(io.join(workdir, "checkpoints")):
        return
    prefix, step, source = resolve(config.train.init_from)
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)  # checksums are verified on read
        stored = checkpoint.saved_step(reader)
    except (tf.errors.OpError, ValueError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConfigError(f"train.init_from: cannot read checkpoint {prefix} ({type(e).__name__}: "
                          f"{reason})") from None
    if stored != step:
        raise ConfigError(f"train.init_from: checkpoint {prefix} is at update {stored}, not {step}")
    if source is not None and io.exists(io.join(source, workdir_lib.CONFIG_FILE)):
        if _same_dir(source, workdir):
            raise ConfigError(f"train.init_from: {source} is this run's own workdir; a branch needs its own")
        _check_same_run(config, workdir_lib.load_config(source), source, step)


def _same_dir(a, b):
    if io.is_remote(a) or io.is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def _check_same_run(config, source_config, source, step):
    flat = workdir_lib._flat  # pylint: disable=protected-access
    mine, theirs = flat(workdir_lib.config_dict(config)), flat(workdir_lib.config_dict(source_config))
    differ = sorted(k for k in set(mine) | set(theirs)
                    if mine.get(k) != theirs.get(k) and not k.startswith(MAY_DIFFER))
    if differ:
        shown = ", ".join(f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}" for k in differ[:3])
        raise ConfigError(f"train.init_from: {source} was trained with a different config ({shown}); "
                          "a branch may differ from it in schedule.* and train.num_steps only")
    if step == 0:
        return
    steps = tf.range(step, dtype=tf.float32)
    here, there = (optim.build_schedule(c.optimizer, c.schedule, c.train.num_steps)(steps).numpy()
                   for c in (config, source_config))
    off = np.flatnonzero(~np.isclose(here, there, rtol=1e-6, atol=0.0))
    if off.size:
        k = int(off[0])
        raise ConfigError(f"train.init_from: update {k} uses learning rate {here[k]:.6g} here but "
                          f"{there[k]:.6g} in {source}; branch at or before the update where the "
                          "schedules part (e.g. this run's cooldown start)")


def restore(config, ckpt, optimizer):
    """Restores `ckpt` (the run's checkpoint object) from `train.init_from`; returns its prefix,
    or None when the config has none. `check` has run (Run.__init__)."""
    if not str(config.train.init_from).strip():
        return None
    prefix, step, _ = resolve(config.train.init_from)
    try:
        ckpt.restore(prefix).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConfigError(f"train.init_from: cannot restore {prefix} into this run "
                          f"({type(e).__name__}: {reason})") from None
    if int(optimizer.iterations.numpy()) != step:
        raise ConfigError(f"train.init_from: checkpoint {prefix} is at update "
                          f"{int(optimizer.iterations.numpy())}, not {step}")
    logging.info("branched from %s at update %d", prefix, step)
    return prefix


def plan(trunk_workdir, budget_steps, cooldown_fraction=0.2, warmup_steps=0, multiple=1):
    """Config overrides of one model size's wsd runs: one trunk and one branch per budget.

    `budget_steps`: each budget's length in updates. Branch i cools down over its last
    round(cooldown_fraction * steps) updates, from a branch point rounded down to a multiple of
    `multiple` (train.steps_per_execution). Returns (trunk, [branch, ...]), each a tuple of
    (key, value) pairs; every other key must be the same in all of them.
    """
    if not 0 < cooldown_fraction < 1:
        raise ConfigError(f"cooldown fraction must be in (0, 1), got {cooldown_fraction}")
    points = [(n, (n - round(cooldown_fraction * n)) // multiple * multiple) for n in budget_steps]
    bad = [n for n, s in points if s < max(warmup_steps, 1) or s >= n]
    if bad:
        raise ConfigError(f"a budget of {bad[0]} updates leaves no constant phase after "
                          f"{warmup_steps} warmup updates for a cooldown fraction {cooldown_fraction}")
    common = (("schedule.name", "wsd"), ("schedule.warmup_steps", warmup_steps))
    trunk = common + (("schedule.cooldown_steps", 0), ("train.num_steps", max(s for _, s in points)),
                      ("checkpoint.keep_steps", tuple(sorted({s for _, s in points}))))
    branches = [common + (("schedule.cooldown_steps", n - s), ("train.num_steps", n),
                          ("train.init_from", f"{trunk_workdir}@{s}")) for n, s in points]
    return trunk, branches
