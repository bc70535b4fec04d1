"""One trial: an ordinary tfscale run in DIR/trials/NNNN with the trial's values as overrides.

The objective Optuna calls. A trial's workdir is kept in its user attrs (`workdir`), which
Optuna's retry of a killed trial copies, so the retry trains on in the same folder and resumes
from its checkpoint. What a trial trained is recorded whatever its end: `steps` (optimizer
updates, summary.json's `steps`), `num_steps` (what it would have trained unpruned),
`wall_seconds`, `value` (the metric at its end, pruned trials too), `pruned_at`, `error`.
"""
import time


from tfscale import io
from tfscale.tuning import section, space as space_lib
from tfscale.tuning.pruning import PruningCallback


class TrialFailed(Exception):
    """A trial's training raised: the trial is recorded as FAIL with its error, the study goes on."""


def one_line(error):
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def trial_workdir(trial):
    """DIR-relative folder of a trial: its own number's, or the original's for a retried trial."""
    return trial.user_attrs.get("workdir") or f"trials/{trial.number:04d}"


class Objective:
    """`objective(trial)` trains one trial; `current` is the number of the trial in flight."""

    def __init__(self, config, workdir, params, train_fn=None):
        self.config, self.workdir, self.params = config, workdir, params
        self.train_fn = train_fn
        self.current = None

    def __call__(self, trial):
        import optuna  # pylint: disable=import-outside-toplevel
        from tfscale.callbacks import Preempted  # pylint: disable=import-outside-toplevel
        import tf_keras as keras  # pylint: disable=import-outside-toplevel
        import tfscale  # pylint: disable=import-outside-toplevel

        self.current = trial.number
        tune = self.config.tune
        values = {p.key: p.suggest(trial) for p in self.params}
        rel = trial_workdir(trial)
        trial.set_user_attr("workdir", rel)
        callback = PruningCallback(trial, section.METRICS[tune.metric])
        t0 = time.time()
        try:
            run_config = space_lib.trial_config(self.config, values)
            trial.set_user_attr("num_steps", int(run_config.train.num_steps))
            summary = (self.train_fn or tfscale.train)(run_config, io.join(self.workdir, rel), (callback,))
        except (Preempted, KeyboardInterrupt) as e:
            trial.set_user_attr("interrupted", one_line(e))
            raise
        except Exception as e:  # pylint: disable=broad-except  (recorded; the study goes on)
            trial.set_user_attr("error", one_line(e))
            trial.set_user_attr("wall_seconds", time.time() - t0)
            if callback.last_step is not None:
                trial.set_user_attr("steps", callback.last_step)
            raise TrialFailed(one_line(e)) from e
        finally:
            keras.backend.clear_session()
        trial.set_user_attr("steps", int(summary["steps"]))
        trial.set_user_attr("wall_seconds", time.time() - t0)
        value = summary.get(tune.metric)
        if value is None:
            error = f"summary.json of {rel} has no {tune.metric} (it has {', '.join(sorted(summary))})"
            trial.set_user_attr("error", error)
            raise TrialFailed(error)
        trial.set_user_attr("value", float(value))
        if callback.pruned_at is not None:
            trial.set_user_attr("pruned_at", callback.pruned_at)
            raise optuna.TrialPruned(f"at update {callback.pruned_at} of {run_config.train.num_steps}")
        return float(value)
