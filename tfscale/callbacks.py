"""Keras callbacks of a run: metrics (JSON lines, TensorBoard, progress), checkpoints, preemption.

Both count optimizer updates (`optimizer.iterations`), not Keras batches, so they stay right
when a run resumes and when `steps_per_execution` runs several updates per call.
"""
import json
import signal
import threading
import time

from absl import logging
import tensorflow as tf
import tf_keras as keras

from tfscale import checkpoint as checkpoint_lib, io, throughput
from tfscale.errors import ConfigError
from tfscale.precision import inner_optimizer


def _crossed(previous, step, every):
    return step // every > previous // every


class MetricsLogger(keras.callbacks.Callback):
    """Every `every_steps` updates: one line in metrics.jsonl, TensorBoard scalars, a progress log.

    Metrics are reset after each log, so every logged value covers the updates since the last
    one (Keras would otherwise report a running mean over the whole run). Throughput is timed
    from the end of the first logged window, so start-up and tracing are not counted; with
    `flops_per_example` (training FLOPs), `tokens_per_example` and `peak_flops` (all replicas)
    it also logs tokens/s, model FLOP/s and MFU.
    """

    def __init__(self, workdir, every_steps, global_batch_size, num_steps, writer=None,
                 flops_per_example=None, tokens_per_example=None, peak_flops=None):
        super().__init__()
        self.flops_per_example = flops_per_example
        self.tokens_per_example = tokens_per_example
        self.peak_flops = peak_flops
        self.path = io.join(workdir, "metrics.jsonl")
        self.every = every_steps
        self.batch = global_batch_size
        self.num_steps = num_steps
        self.writer = writer
        self.last_logs = {}
        self.examples_per_sec = None
        self.earlier = []  # records logged before this process resumed the run

    def resume_at(self, step):
        """Drops the lines an interrupted run logged after its last checkpoint (they are logged
        again), so metrics.jsonl has each step once; the kept lines stand in for figures that a
        run with nothing left to train cannot measure."""
        if not io.exists(self.path):
            return
        with io.gfile.GFile(self.path, "r") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        records, damaged = [], []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            elif number < len(lines) or record is not None:  # not just the last line cut short by a kill
                damaged.append(number)
        kept = [r for r in records if r.get("step", 0) <= step]
        if damaged:  # lines nothing can rebuild: the file as found is kept beside it
            io.write_bytes(self.path + ".damaged", "".join(line + "\n" for line in lines))
            logging.warning("%s: %d damaged line(s) dropped (line %s); the file as it was is kept in %s.damaged",
                            self.path, len(damaged), ", ".join(map(str, damaged[:5])), self.path)
        if len(kept) != len(lines):
            io.write_bytes(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        self.earlier = [r for r in kept if "loss" in r]  # the training lines, not the evaluations
        if self.earlier:
            self.last_logs = self.earlier[-1]

    def on_train_begin(self, logs=None):
        self.start_step = self.last_step = self._step()
        self.t_last = self.t_start = time.perf_counter()
        self.timed_from = None  # (step, time) at the end of the first window

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if not (_crossed(self.last_step, step, self.every) or step >= self.num_steps):
            return
        now = time.perf_counter()
        window_rate = (step - self.last_step) * self.batch / max(now - self.t_last, 1e-9)
        if self.timed_from is None:
            self.timed_from = (step, now)
        elif step > self.timed_from[0]:
            self.examples_per_sec = (step - self.timed_from[0]) * self.batch / (now - self.timed_from[1])
        record = {k: float(v) for k, v in (logs or {}).items()}
        rates = throughput.derived(window_rate, self.flops_per_example, self.tokens_per_example,
                                   self.peak_flops)
        record.update({k: v for k, v in rates.items() if v is not None})
        record.update(step=step, examples_per_sec=window_rate,
                      learning_rate=float(tf.convert_to_tensor(inner_optimizer(self.model.optimizer).learning_rate)),
                      elapsed_seconds=now - self.t_start)
        io.append_jsonl(self.path, record)
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for k, v in record.items():
                    if k not in ("step", "elapsed_seconds"):
                        tf.summary.scalar(f"train/{k}", v)
            self.writer.flush()
        eta = (self.num_steps - step) / max(step - self.start_step, 1) * (now - self.t_start)
        shown = " ".join(f"{k} {record[k]:.4g}" for k in sorted(logs or {}))
        mfu = f"  MFU {record['mfu']:.3f}" if "mfu" in record else ""
        logging.info("step %d/%d  %s  lr %.3g  %.0f ex/s%s  ETA %.0fs", step, self.num_steps, shown,
                     record["learning_rate"], window_rate, mfu, eta)
        self.last_logs = record
        self.last_step, self.t_last = step, now
        self.model.reset_metrics()

    def exclude(self, seconds):
        """Leaves `seconds` (a periodic evaluation) out of the throughput figures."""
        self.t_last += seconds
        self.t_start += seconds
        if self.timed_from is not None:
            self.timed_from = (self.timed_from[0], self.timed_from[1] + seconds)

    def on_train_end(self, logs=None):
        if self.examples_per_sec is None and self.last_step > self.start_step:
            # A run too short for two windows: fall back to the whole run, start-up included.
            self.examples_per_sec = ((self.last_step - self.start_step) * self.batch
                                     / max(self.t_last - self.t_start, 1e-9))

    def throughput(self):
        """The run's examples/s, tokens/s, model FLOP/s and MFU (None where unknown)."""
        if self.examples_per_sec is None and len(self.earlier) > 1:
            # Nothing trained in this process: the median window of the earlier ones (the first
            # window holds start-up and tracing).
            rates = sorted(r["examples_per_sec"] for r in self.earlier[1:] if "examples_per_sec" in r)
            self.examples_per_sec = rates[len(rates) // 2] if rates else None
        return {"examples_per_sec": self.examples_per_sec,
                **throughput.derived(self.examples_per_sec, self.flops_per_example,
                                     self.tokens_per_example, self.peak_flops)}


class ProfileSteps(keras.callbacks.Callback):
    """A TensorFlow profile of updates `start`..`stop` into `logdir` (TensorBoard's profile tab).

    Counted in optimizer updates, like every callback here; with steps_per_execution the
    profile starts and stops at the executions that contain those updates."""

    def __init__(self, logdir, start, stop):
        super().__init__()
        self.logdir, self.start, self.stop = logdir, start, stop
        self.active = False

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if not self.active and self.start <= step < self.stop:
            tf.profiler.experimental.start(self.logdir)
            self.active = True
            logging.info("profiling updates %d..%d into %s", step, self.stop, self.logdir)

    def on_train_batch_end(self, batch, logs=None):
        if self.active and int(self.model.optimizer.iterations.numpy()) >= self.stop:
            self._finish()

    def on_train_end(self, logs=None):
        if self.active:
            self._finish()

    def _finish(self):
        tf.profiler.experimental.stop()
        self.active = False
        logging.info("profile written to %s (TensorBoard, profile tab)", self.logdir)


class Preempted(Exception):
    """Training stopped on SIGTERM (or Ctrl-C) after saving a checkpoint at `step`; re-run to resume."""

    EXIT_CODE = 128 + signal.SIGTERM  # 143: what a shell reports for a SIGTERM'd process

    def __init__(self, step, checkpoint_path, signum=signal.SIGTERM):
        what = "preempted (SIGTERM)" if signum == signal.SIGTERM else \
            f"interrupted ({signal.Signals(signum).name})"
        super().__init__(f"{what} at step {step}: checkpoint saved at {checkpoint_path}; "
                         "re-run the same command to resume")
        self.step, self.checkpoint_path = step, checkpoint_path
        self.exit_code = 128 + signum  # SIGTERM 143, SIGINT 130, as a shell reports them


class Diverged(ConfigError):
    """The loss or an update was not finite; the update was skipped and training stopped."""

    def __init__(self, step, checkpoint_path, learning_rate):
        kept = f"the newest good checkpoint is {checkpoint_path}" if checkpoint_path \
            else "no checkpoint was written"
        super().__init__(
            f"training diverged at update {step}: the loss or the update was not finite, so it was "
            f"not applied and training stopped; {kept} and nothing was exported; try a lower "
            f"optimizer.learning_rate (now {learning_rate:g}), optimizer.global_clipnorm=1.0, a longer "
            "schedule.warmup_steps, or precision=float32")
        self.step = step


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training once the model reports a non-finite update (`diverged_step()`)."""

    def __init__(self):
        super().__init__()
        self.diverged_at = None

    def on_train_batch_end(self, batch, logs=None):
        diverged_step = getattr(self.model, "diverged_step", None)  # AccumulatingModel's
        step = diverged_step() if diverged_step else None
        if step is not None:
            self.diverged_at = step
            self.model.stop_training = True


class CheckpointSaver(keras.callbacks.Callback):
    """Saves a `tf.train.CheckpointManager` checkpoint every `every_steps` updates and at the end.

    Preemption: while training, SIGTERM (how cloud VMs, Kubernetes and the local launcher announce
    that a process is about to be stopped) only raises a flag. After the update in flight has
    finished, a checkpoint is saved at that update and training stops; `preempted_at` is then the
    step, and the caller exits cleanly (see `Preempted`). With several workers a signal reaches
    them at different updates, or reaches only one, so they agree first: one all-reduce (sum) of
    the flag per update, at the same update on every worker, so all save the same step together
    (saving is collective). TensorFlow's `PreemptionCheckpointHandler` would agree through the
    coordination service instead, but it does nothing on GCE CPU and TPU VMs and restores on
    creation without falling back from an unreadable checkpoint, so it does not fit here.

    `keep_steps`: updates whose checkpoints are also written to checkpoints/keep/, out of the
    rotation's reach, so later runs can branch from them (tfscale.branch).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)  # preemption, and Ctrl-C in a terminal

    def __init__(self, manager, every_steps, strategy=None, on_save=None, keep_steps=()):
        super().__init__()
        self.manager = manager
        self.keep_steps = frozenset(keep_steps)
        self.every = every_steps
        self.strategy = strategy
        self.on_save = on_save
        self.preempted_at = None
        self.signal = None
        self._previous_handlers = {}
        self._agree = _any_worker_fn(strategy) if _multi_worker(strategy) else None

    def on_train_begin(self, logs=None):
        self.last_step = int(self.model.optimizer.iterations.numpy())
        self.preempted_at = None
        self._check_keep_steps_reachable()
        if self.last_step in self.keep_steps:  # resumed there: a kill may have beaten the write
            self._keep(self.last_step, only_if_missing=True)
        if threading.current_thread() is threading.main_thread():
            self._previous_handlers = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}
        else:
            logging.warning("training outside the main thread: SIGTERM will not save a checkpoint")

    def _on_signal(self, signum, frame):
        del frame
        if self.signal is None:
            logging.warning("%s received: saving a checkpoint after the current update",
                            signal.Signals(signum).name)
            self.signal = signum

    def _preempted(self):
        signalled = self.signal is not None
        if self._agree is None:
            return signalled
        return bool(self._agree(tf.constant(float(signalled))).numpy() > 0)

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step in self.keep_steps:
            self._keep(step)
        if self._preempted():
            if step != self.last_step:
                self._save(step)
            self.preempted_at = step
            self.model.stop_training = True
            logging.warning("preempted: checkpoint saved at step %d (%s); stopping", step,
                            self.manager.latest_checkpoint)
        elif _crossed(self.last_step, step, self.every):
            self._save(step)

    def on_train_end(self, logs=None):
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}
        step = int(self.model.optimizer.iterations.numpy())
        if step != self.last_step:
            self._save(step)

    def _check_keep_steps_reachable(self):
        """Callbacks run once per execution of steps_per_execution updates: a kept step between
        two of them could never be saved, so it is refused before training."""
        every = getattr(self.model, "_steps_per_execution", None)
        every = int(every.numpy()) if every is not None else 1
        end = self.last_step + int((self.params or {}).get("steps") or 0)
        missed = sorted(k for k in self.keep_steps
                        if self.last_step < k < end and (k - self.last_step) % every)
        if missed:
            raise ConfigError(f"checkpoint.keep_steps {missed[0]} falls inside an execution of "
                              f"{every} updates (training from update {self.last_step}); use "
                              f"multiples of train.steps_per_execution {every}")

    def _keep(self, step, only_if_missing=False):
        path = checkpoint_lib.kept_prefix(self.manager.directory, step)
        if only_if_missing and io.exists(path + ".index"):
            return
        checkpoint_lib.write_kept(self.manager.checkpoint, self.manager.directory, step)
        logging.info("kept checkpoint %s", path)

    def _save(self, step):
        if not _all_finite(self.model.trainable_weights):
            # An update can be finite and still overflow the weights (a huge learning rate):
            # the run stops at the next update, and a checkpoint must never hold such weights.
            logging.warning("not saving update %d: its weights are not finite", step)
            return
        self.manager.save(checkpoint_number=step)
        self.last_step = step
        if self.on_save is not None:
            self.on_save()


def _all_finite(variables):
    return all(bool(tf.reduce_all(tf.math.is_finite(v)).numpy()) for v in variables
               if v.dtype.is_floating)


def _multi_worker(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and resolver is not None and bool(resolver.cluster_spec().as_dict()))


def _any_worker_fn(strategy):
    """A function flag -> sum of `flag` over all replicas of `strategy` (a collective)."""

    @tf.function
    def any_worker(flag):
        per_replica = strategy.run(lambda: tf.identity(flag))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return any_worker
