"""A pool worker: one process that runs sweep runs one after another (`sweep_pool`).

  python -m tfscale.scaling.sweep_worker < specs    (pickles the pool writes)

The first pickle sets the process up (import path, threads, the CPU peak); each later one is a
run (its config, workdir, plan entry and log file). TensorFlow is imported once per worker,
not once per run: on a CPU host that start-up is a large share of a short run. Between runs
the Keras session is cleared, as in a sweep run one after another in one process. After each
run the worker writes `done` on its progress pipe; the row (ok or failed) is recorded by then.
End of input: exit 0. SIGTERM or Ctrl-C: the run saves a checkpoint and the worker exits
143/130 (nothing recorded: a re-run resumes). Any other exit is a crash the pool records
against the run under way.
"""
import os
import pickle
import sys
import time

PROGRESS_FD = "TFSCALE_SWEEP_PROGRESS_FD"  # the worker's end of its progress pipe
DONE = b"done"  # the line that ends a run on the progress pipe


class PipeReporter:
    """Sends the run's fraction done to the pool, which draws the progress line."""

    def __init__(self, fd):
        self.fd, self.last = fd, 0.0

    def _send(self, line):
        try:
            os.write(self.fd, line + b"\n")
        except OSError:  # the pool is gone; watch_launcher stops this process
            self.fd = None

    def update(self, planned, fraction, force=False):  # pylint: disable=unused-argument
        now = time.time()
        if self.fd is None or (not force and now - self.last < 0.5):
            return
        self.last = now
        self._send(f"{fraction:.4f}".encode())

    def done(self):
        if self.fd is not None:
            self._send(DONE)


def _set_threads(threads):
    """Before TensorFlow starts its thread pools (the environment covers OpenMP and the rest)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _output_to(path):
    """This process's stdout and stderr (Python's and TensorFlow's) appended to `path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main():
    stdin = sys.stdin.buffer
    spec = pickle.load(stdin)
    sys.path[:0] = [p for p in spec["sys_path"] if p not in sys.path]  # a caller's own train_fn
    import tfscale  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import  (Keras 2 first)
    import tf_keras as keras  # pylint: disable=import-outside-toplevel
    from tfscale import callbacks, launch, throughput, training  # pylint: disable=import-outside-toplevel
    from tfscale.scaling import progress, sweep_run  # pylint: disable=import-outside-toplevel

    from absl import logging  # pylint: disable=import-outside-toplevel
    logging.set_verbosity(logging.INFO)  # the run's log, as `experiments.train` writes it
    launch.watch_launcher()  # the pool may be killed outright: stop (checkpointed) when it is gone
    if spec["threads"]:
        _set_threads(spec["threads"])
    if spec["cpu_peak"]:
        throughput._cpu_peak = spec["cpu_peak"]  # pylint: disable=protected-access  (measured once by the pool)
    fd = int(os.environ.get(PROGRESS_FD) or -1)
    reporter = PipeReporter(fd if fd >= 0 else None)
    while True:
        try:
            run = pickle.load(stdin)
        except EOFError:  # no more runs; every row is written: skip TensorFlow's teardown
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)  # pylint: disable=protected-access
        _output_to(run["log_path"])
        job = pickle.loads(run["payload"])
        planned = job["planned"]
        keras.backend.clear_session()
        try:
            sweep_run.run_one(job["config"], job["workdir"], planned, job["train_fn"] or training.train,
                              (progress.progress_callback(reporter, planned),))
        except callbacks.Preempted as e:
            print(e, file=sys.stderr, flush=True)
            sys.exit(e.exit_code)
        reporter.done()


if __name__ == "__main__":
    main()
