"""The pruning callback: a trial's periodic evaluations reported to Optuna, training stopped when
the pruner says so.

tfscale's evaluation callback puts `eval_loss` (and `eval_accuracy`) into the `logs` of
`on_train_batch_end` at every update where `eval.every_steps` evaluates, and callbacks given to
`train` run after it. The Optuna step is the optimizer update (`optimizer.iterations`), not Keras'
batch index, so a resumed trial reports at the same steps as an unbroken one.
"""
import math

import tf_keras as keras


class PruningCallback(keras.callbacks.Callback):
    """Reports `logs[monitor]` at each evaluation; stops training when `trial.should_prune()`.

    `pruned_at` is the update where it stopped (None if it did not); `last_step` the last update
    seen, so a trial that fails still says how many updates it trained.
    """

    def __init__(self, trial, monitor, eval_key="eval_loss"):
        super().__init__()
        self.trial, self.monitor, self.eval_key = trial, monitor, eval_key
        self.pruned_at = None
        self.last_step = None
        self.reported = 0

    def _step(self):
        return int(self.model.optimizer.iterations)

    def on_train_begin(self, logs=None):
        self.last_step = self._step()

    def on_train_batch_end(self, batch, logs=None):
        self.last_step = step = self._step()
        logs = logs or {}
        # Only at evaluations: training figures (`loss`) are in every update's logs.
        if self.eval_key not in logs or self.monitor not in logs or self.pruned_at is not None:
            return
        value = float(logs[self.monitor])
        if not math.isfinite(value):
            return
        self.trial.report(value, step)
        self.reported += 1
        if self.trial.should_prune():
            self.pruned_at = step
            self.model.stop_training = True
