"""The one progress line of a sweep, weighted by planned FLOPs, with an ETA, and its Keras callback."""
import math
import sys
import time


class Progress:
    """One line of progress over the whole sweep, weighted by planned FLOPs, with an ETA."""

    def __init__(self, runs, stream=None):
        self.total = sum(r.cost for r in runs) or 1.0
        self.count = len(runs)
        self.done = 0.0
        self.index = 0
        self.t0 = time.time()
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last_print = 0.0

    def line(self, run, fraction):
        done = self.done + run.cost * fraction
        elapsed = time.time() - self.t0
        share = done / self.total
        eta = elapsed * (1 - share) / share if share > 0 else float("nan")
        bar = "#" * int(30 * share) + "." * (30 - int(30 * share))
        return (f"sweep [{bar}] {100 * share:5.1f}%  run {self.index}/{self.count} {run.name} "
                f"{100 * fraction:3.0f}%  elapsed {_clock(elapsed)}  ETA {_clock(eta)}")

    def update(self, run, fraction, force=False):
        now = time.time()
        if not force and now - self.last_print < (1.0 if self.tty else 30.0):
            return
        self.last_print = now
        text = self.line(run, fraction)
        self.stream.write(("\r" + text) if self.tty else text + "\n")
        self.stream.flush()

    def finish_run(self, run):
        self.update(run, 1.0, force=True)
        if self.tty:
            self.stream.write("\n")
        self.done += run.cost



def _clock(seconds):
    if not math.isfinite(seconds):
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"



def _progress_callback(progress, run):
    import tf_keras as keras  # pylint: disable=import-outside-toplevel

    class _Callback(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            progress.update(run, step / run.num_steps)

    return _Callback()
