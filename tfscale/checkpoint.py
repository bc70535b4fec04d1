"""Checkpoints that resume exactly: network, optimizer (slots, step, loss scale) and RNG state.

The data position needs no state of its own: the input order is a function of (seed, step) and
the step is the optimizer's. An unreadable newest checkpoint falls back to the one before.
"""
from absl import logging
import tensorflow as tf

from tfscale import io


def manager_for(workdir, network, optimizer, keep):
    checkpoint = tf.train.Checkpoint(network=network, optimizer=optimizer)
    directory = io.join(workdir, "checkpoints")
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


def restore_latest(manager):
    """Restores the newest readable checkpoint; returns its path, or None for a fresh start.

    Build the optimizer first, so every variable exists and restoring is immediate (a failed
    restore must not leave deferred values behind for a later one to mix with).
    """
    for path in reversed(manager.checkpoints):
        try:
            reader = tf.train.load_checkpoint(path)
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)  # checksums are verified on read
            manager.checkpoint.restore(path).assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, AssertionError) as e:
            logging.warning("checkpoint %s cannot be read (%s); falling back to the one before",
                            path, str(e).splitlines()[0][:200])
            continue
        logging.info("resumed from %s", path)
        return path
    return None
