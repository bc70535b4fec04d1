"""Checkpoints that resume exactly: network, optimizer (slots, step, loss scale) and RNG state.

The data position needs no state of its own: the input order is a function of (seed, step) and
the step is the optimizer's. Checkpoints are found from their own files (`ckpt-N.index`), not
only from the `checkpoint` state file, so a deleted or garbled state file neither restarts a
run from update 0 nor lets the rotation delete what it no longer lists. A newest checkpoint
that is really corrupt (a checksum or format error, a missing piece) falls back to the one
before, and says so; any other read error (a bucket that is briefly unreachable) stops the run,
because falling back or starting fresh would throw trained updates away.
"""
import re

from absl import logging
import tensorflow as tf

from tfscale import io
from tfscale.errors import ConfigError

_NUMBERED = re.compile(r"ckpt-(\d+)\.index$")
KEEP_DIR = "keep"
_ITERATIONS = "/_iterations/.ATTRIBUTES/VARIABLE_VALUE"
# How TensorFlow's checkpoint reader words a damaged file (it reports most as UNKNOWN errors).
_CORRUPT = ("checksum does not match", "too short to be an sstable", "not an sstable", "corrupt",
            "data loss", "truncated", "failed to find any matching files", "unable to open table file",
            "bad magic number")


def checkpoint_paths(directory):
    """The checkpoint prefixes in `directory`, oldest first, from the files themselves."""
    if not io.exists(directory):
        return []
    found = [(int(m.group(1)), name[: -len(".index")]) for name in io.gfile.listdir(directory)
             if (m := _NUMBERED.search(name))]
    return [io.join(directory, prefix) for _, prefix in sorted(found)]


def _listed(directory):
    """The checkpoints the state file lists, or None when it is missing or unreadable."""
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (ValueError, tf.errors.OpError):
        return None
    return None if state is None else [io.join(directory, p.split("/")[-1])
                                       for p in state.all_model_checkpoint_paths]


def repair_state(directory):
    """Rewrites the state file from the checkpoint files when it does not list them all."""
    found = checkpoint_paths(directory)
    listed = _listed(directory)
    if found and listed != found:
        logging.warning("checkpoint state in %s %s; rebuilt it from the %d checkpoint files "
                        "(newest %s)", directory,
                        "is missing or unreadable" if listed is None else "does not match its files",
                        len(found), found[-1])
        tf.compat.v1.train.update_checkpoint_state(directory, found[-1], all_model_checkpoint_paths=found)


def manager_for(workdir, network, optimizer, keep, objects=None):
    """The checkpoint manager of a run (the chief's: it repairs the state file first)."""
    checkpoint = tf.train.Checkpoint(network=network, optimizer=optimizer, **(objects or {}))
    directory = io.join(workdir, "checkpoints")
    repair_state(directory)
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep)


def reader_for(manager, workdir):
    """A manager of the same checkpoint object over `workdir`'s checkpoints, for restoring only.

    Non-chief workers save into folders of their own but resume from the chief's checkpoints.
    It must be the same object: its save counter is created on first restore or save, and under
    MultiWorkerMirroredStrategy creating it is a collective that every worker must run at the
    same point.
    """
    # Never saves through, so never deletes: max_to_keep=None.
    return tf.train.CheckpointManager(manager.checkpoint, io.join(workdir, "checkpoints"),
                                      max_to_keep=None)


def kept_prefix(directory, step):
    """Where the checkpoint of update `step` in `checkpoint.keep_steps` goes: a folder of its
    own under the run's checkpoints, which the manager neither lists nor rotates."""
    return io.join(directory, KEEP_DIR, f"ckpt-{step}")


def write_kept(checkpoint, directory, step):
    """Writes `checkpoint` as the kept one of update `step`; returns its prefix."""
    return checkpoint.write(kept_prefix(directory, step))


def saved_step(reader):
    """The optimizer update count a checkpoint holds (None when it holds no optimizer)."""
    # Wrapping optimizers (loss scaling) nest the inner one's counter: take the outermost.
    keys = sorted((k for k in reader.get_variable_to_shape_map()
                   if k.startswith("optimizer/") and k.endswith(_ITERATIONS)), key=len)
    return int(reader.get_tensor(keys[0])) if keys else None


def is_corruption(error):
    """True for a damaged checkpoint; False for errors that say nothing about its bytes."""
    if isinstance(error, (tf.errors.DataLossError, AssertionError)):
        return True
    return isinstance(error, (tf.errors.OpError, ValueError)) and any(
        s in str(error).lower() for s in _CORRUPT)


def restore_latest(manager):
    """Restores the newest readable checkpoint; returns its path, or None for a fresh start.

    Build the optimizer first, so every variable exists and restoring is immediate (a failed
    restore must not leave deferred values behind for a later one to mix with). Raises
    ConfigError when checkpoints exist but none can be read, rather than start over them.
    """
    paths = checkpoint_paths(manager.directory)
    for path in reversed(paths):
        try:
            reader = tf.train.load_checkpoint(path)
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)  # checksums are verified on read
            manager.checkpoint.restore(path).assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, AssertionError) as e:
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            if not is_corruption(e):
                raise ConfigError(f"cannot read checkpoint {path} ({type(e).__name__}: {reason}); "
                                  "nothing was changed: re-run when it can be read") from None
            logging.warning("checkpoint %s cannot be read (damaged: %s); falling back to the one before",
                            path, reason)
            continue
        logging.info("resumed from %s", path)
        return path
    if paths:
        raise ConfigError(f"none of the {len(paths)} checkpoints in {manager.directory} can be read "
                          "(see the warnings above); move them away to start this run over")
    return None
