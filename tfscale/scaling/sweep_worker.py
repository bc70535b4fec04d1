"""One sweep run in a process of its own: what a pool worker runs (`sweep_pool`).

  python -m tfscale.scaling.sweep_worker < spec    (a pickle the pool writes)

Exit 0 once the run's row (ok or failed) is recorded; 143/130 after a SIGTERM or Ctrl-C saved a
checkpoint (nothing recorded: a re-run resumes); anything else is a crash the pool records.
"""
import os
import pickle
import sys
import time

PROGRESS_FD = "TFSCALE_SWEEP_PROGRESS_FD"  # the worker's end of its progress pipe


class PipeReporter:
    """Sends the run's fraction done to the pool, which draws the progress line."""

    def __init__(self, fd):
        self.fd, self.last = fd, 0.0

    def update(self, planned, fraction, force=False):  # pylint: disable=unused-argument
        now = time.time()
        if self.fd is None or (not force and now - self.last < 0.5):
            return
        self.last = now
        try:
            os.write(self.fd, f"{fraction:.4f}\n".encode())
        except OSError:  # the pool is gone; watch_launcher stops this process
            self.fd = None


def _set_threads(threads):
    """Before TensorFlow starts its thread pools (the environment covers OpenMP and the rest)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def main():
    spec = pickle.load(sys.stdin.buffer)
    sys.path[:0] = [p for p in spec["sys_path"] if p not in sys.path]  # a caller's own train_fn
    import tfscale  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import  (Keras 2 first)
    from tfscale import callbacks, launch, throughput, training  # pylint: disable=import-outside-toplevel
    from tfscale.scaling import progress, sweep_run  # pylint: disable=import-outside-toplevel

    from absl import logging  # pylint: disable=import-outside-toplevel
    logging.set_verbosity(logging.INFO)  # the run's log, as `experiments.train` writes it
    launch.watch_launcher()  # the pool may be killed outright: stop (checkpointed) when it is gone
    if spec["threads"]:
        _set_threads(spec["threads"])
    if spec["cpu_peak"]:
        throughput._cpu_peak = spec["cpu_peak"]  # pylint: disable=protected-access  (measured once by the pool)
    job = pickle.loads(spec["payload"])
    planned = job["planned"]
    fd = int(os.environ.get(PROGRESS_FD) or -1)
    reporter = PipeReporter(fd if fd >= 0 else None)
    try:
        sweep_run.run_one(job["config"], job["workdir"], planned, job["train_fn"] or training.train,
                           (progress.progress_callback(reporter, planned),))
    except callbacks.Preempted as e:
        print(e, file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    sys.exit(0)


if __name__ == "__main__":
    main()
