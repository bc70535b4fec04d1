"""The one progress line of a sweep, weighted by planned FLOPs, with an ETA, and its Keras callback.

A pool's workers report their fractions to the parent, which keeps the only line (`update_pool`),
so concurrent runs never interleave their output on the terminal.
"""
import math
import sys
import time


class Progress:
    """One line of progress over the whole sweep, weighted by planned FLOPs, with an ETA."""

    def __init__(self, runs, stream=None, label="sweep"):
        self.label = label  # what the line is of: the sweep, or the main job's plan check
        self.total = sum(r.cost for r in runs) or 1.0
        self.count = len(runs)
        self.done = 0.0
        self.index = 0
        self.t0 = time.time()
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last_print = 0.0
        self._width = 0  # of the last line on a terminal, to blank a longer one

    def line(self, planned, fraction):
        done = self.done + planned.cost * fraction
        elapsed = time.time() - self.t0
        share = done / self.total
        eta = elapsed * (1 - share) / share if share > 0 else float("nan")
        bar = "#" * int(30 * share) + "." * (30 - int(30 * share))
        return (f"{self.label} [{bar}] {100 * share:5.1f}%  run {self.index}/{self.count} {planned.name} "
                f"{100 * fraction:3.0f}%  elapsed {_clock(elapsed)}  ETA {_clock(eta)}")

    def update(self, planned, fraction, force=False):
        if self._due(force):
            self._write(self.line(planned, fraction))

    def pool_line(self, active):
        """The line with several runs under way: `active` is [(planned, fraction), ...]."""
        done = self.done + sum(r.cost * f for r, f in active)
        elapsed = time.time() - self.t0
        share = done / self.total
        eta = elapsed * (1 - share) / share if share > 0 else float("nan")
        bar = "#" * int(30 * share) + "." * (30 - int(30 * share))
        running = ", ".join(f"{r.name} {100 * f:.0f}%" for r, f in active) or "-"
        return (f"{self.label} [{bar}] {100 * share:5.1f}%  {self.index}/{self.count} done, running {running}  "
                f"elapsed {_clock(elapsed)}  ETA {_clock(eta)}")

    def update_pool(self, active, force=False):
        if self._due(force):
            self._write(self.pool_line(active))

    def finish_pool_run(self, planned, active):
        """A pool run ended (ok or failed): count it, and print the line at once."""
        self.index += 1
        self.done += planned.cost
        self._write(self.pool_line(active))

    def _due(self, force):
        now = time.time()
        if not force and now - self.last_print < (1.0 if self.tty else 30.0):
            return False
        self.last_print = now
        return True

    def _write(self, text):
        pad = " " * max(0, self._width - len(text)) if self.tty else ""
        self._width = len(text)
        self.stream.write(("\r" + text + pad) if self.tty else text + "\n")
        self.stream.flush()

    def finish_run(self, planned):
        self.update(planned, 1.0, force=True)
        if self.tty:
            self.stream.write("\n")
        self.done += planned.cost


def _clock(seconds):
    if not math.isfinite(seconds):
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def progress_callback(progress, planned):
    import tf_keras as keras  # pylint: disable=import-outside-toplevel

    class _Callback(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            progress.update(planned, step / planned.num_steps)

    return _Callback()
