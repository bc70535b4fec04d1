"""Validation during training, the best weights, and early stopping.

Every `eval.every_steps` updates the held-out loss and metrics are measured on the same examples
the run's final `eval_loss` uses (all of the split, or `eval.max_examples` evenly spaced), then
written to metrics.jsonl (a line with `eval_loss`, ...) and TensorBoard (`eval/...`), and put
into the Keras `logs` of that update, so callbacks after this one (a tuner's pruner) see them.

The best value of `train.early_stopping.monitor` so far, its update, the evaluations since it
improved and the update the run stopped at are variables of the run's checkpoint, so a run
killed and resumed stops at the same update, with the same best weights, as one never stopped.
The best weights are saved apart from the rotation of the newest checkpoints, in
checkpoints/best/, each time they improve.
"""
import math
import time

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfscale import io
from tfscale.errors import ConfigError

BEST_DIR = "best"


def mode_of(monitor, mode):
    """"min" or "max": `auto` maximises accuracies and minimises everything else."""
    if mode != "auto":
        return mode
    return "max" if "accuracy" in monitor else "min"


def improved(value, best, mode, min_delta):
    """Whether `value` beats `best` by more than `min_delta` (anything beats no best yet)."""
    if not math.isfinite(value):
        return False
    if math.isnan(best):
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class StoppingState(tf.Module):
    """What early stopping must remember across a resume; saved in every checkpoint."""

    def __init__(self):
        super().__init__(name="early_stopping")
        with tf.init_scope():
            self.best = tf.Variable(float("nan"), dtype=tf.float64, trainable=False, name="best")
            self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_step")
            self.bad_evaluations = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_evaluations")
            self.stopped_at = tf.Variable(-1, dtype=tf.int64, trainable=False, name="stopped_at")

    def as_dict(self):
        best_step = int(self.best_step.numpy())
        stopped = int(self.stopped_at.numpy())
        return {"best": float(self.best.numpy()) if best_step >= 0 else None,
                "best_step": best_step if best_step >= 0 else None,
                "bad_evaluations": int(self.bad_evaluations.numpy()),
                "stopped_at": stopped if stopped >= 0 else None}


def best_manager(own_dir, network):
    """Keeps the best weights (the network only), one checkpoint, numbered by its update."""
    return tf.train.CheckpointManager(tf.train.Checkpoint(network=network),
                                      io.join(own_dir, "checkpoints", BEST_DIR), max_to_keep=1)


def restore_best(manager, step):
    """Loads the best weights, saved at update `step`, into the network; ConfigError if absent."""
    path = io.join(manager.directory, f"ckpt-{step}")
    if not io.exists(path + ".index"):
        raise ConfigError(f"the best weights (update {step}) are missing from {manager.directory}; "
                          "set train.early_stopping.restore_best=False to use the last weights")
    manager.checkpoint.read(path).assert_existing_objects_matched()
    logging.info("restored the best weights: update %d (%s)", step, path)


class PeriodicEvaluation(keras.callbacks.Callback):
    """Evaluates every `every_steps` updates and at the last one; tracks the best; stops early.

    `evaluate()` returns {"loss": ..., "accuracy": ...} without disturbing the training metrics.
    `patience` 0 never stops. `best_saver` (a CheckpointManager, or None) saves improvements.
    `pause(seconds)` is told the time each evaluation took, so throughput leaves it out.
    """

    def __init__(self, evaluate, every_steps, num_steps, state, stopping, metrics_path=None,
                 writer=None, best_saver=None, pause=None):
        super().__init__()
        self.evaluate, self.every, self.num_steps = evaluate, every_steps, num_steps
        self.state, self.stopping = state, stopping
        self.monitor = stopping.monitor
        self.mode = mode_of(stopping.monitor, stopping.mode)
        self.metrics_path, self.writer, self.best_saver, self.pause = metrics_path, writer, best_saver, pause

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self.last_step = self._step()

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        due = step // self.every > self.last_step // self.every or step >= self.num_steps
        if not due or step == self.last_step or self.model.stop_training:  # diverged or preempted
            return
        self.last_step = step
        t0 = time.perf_counter()
        results = {f"eval_{k}": float(v) for k, v in self.evaluate().items()}
        seconds = time.perf_counter() - t0
        if self.monitor not in results:
            raise ConfigError(f"train.early_stopping.monitor {self.monitor!r} is not measured; "
                              f"the evaluation gives {', '.join(sorted(results))}")
        if logs is not None:
            logs.update(results)
        self._record(step, results, seconds)
        self._track(step, results[self.monitor])
        if self.pause is not None:
            self.pause(seconds)

    def _record(self, step, results, seconds):
        shown = "  ".join(f"{k} {v:.4g}" for k, v in sorted(results.items()))
        logging.info("step %d/%d  %s  (%.1fs)", step, self.num_steps, shown, seconds)
        if self.metrics_path:
            io.append_jsonl(self.metrics_path, {"step": step, **results, "eval_seconds": seconds})
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for k, v in results.items():
                    tf.summary.scalar(f"eval/{k[len('eval_'):]}", v)
            self.writer.flush()

    def _track(self, step, value):
        s, st = self.state, self.stopping
        if improved(value, float(s.best.numpy()), self.mode, st.min_delta):
            s.best.assign(value)
            s.best_step.assign(step)
            s.bad_evaluations.assign(0)
            if self.best_saver is not None and np.isfinite(value):
                self.best_saver.save(checkpoint_number=step)
            return
        s.bad_evaluations.assign_add(1)
        if st.patience and int(s.bad_evaluations.numpy()) >= st.patience and step < self.num_steps:
            s.stopped_at.assign(step)
            self.model.stop_training = True
            logging.info("early stopping at update %d: %s has not improved on %.6g (update %d) "
                         "for %d evaluations", step, self.monitor, float(s.best.numpy()),
                         int(s.best_step.numpy()), st.patience)


def stop_reason(stopping, state):
    """One sentence for summary.json: why the run ended where it did."""
    d = state.as_dict()
    if d["stopped_at"] is None:
        return None
    return (f"{stopping.monitor} did not improve by more than {stopping.min_delta:g} for "
            f"{stopping.patience} evaluations after update {d['best_step']}")
