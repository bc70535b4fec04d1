"""Hyperparameter tuning on Optuna: every trial an ordinary tfscale run, pruned on its periodic
evaluations, many machines on one study through a shared database (README: docs/tuning.md).

Modules, one job each: `section` (the `tune` config section), `space` (the search space),
`study` (storage, sampler, pruner, the loop and resuming), `trial` (one trial's run),
`pruning` (the Keras callback), `outputs` (best_config.py, report.md, plots, HParams).
Importing the package loads neither TensorFlow nor Optuna.
"""
import os
import sys

from tfscale.errors import ConfigError
from tfscale.tuning.section import defaults  # noqa: F401  (configs: `tuning.defaults()`)


def check(config):
    """Every check that needs no study and no data: the section, the space against the config,
    the config at each end of each range, best_config_overrides. Returns the space's Params."""
    from tfscale import config as config_lib  # pylint: disable=import-outside-toplevel
    from tfscale.scaling.sweep_spec import apply_overrides  # pylint: disable=import-outside-toplevel
    from tfscale.tuning import outputs, section, space  # pylint: disable=import-outside-toplevel

    section.check(config)
    params = space.parse(config)
    space.check_extremes(config, params)
    overrides = outputs.best_config_overrides(config)
    if overrides:
        try:
            config_lib.validate(apply_overrides(space.trial_config(config, {}), overrides))
        except ConfigError as e:
            raise ConfigError(f"tune.best_config_overrides: {e}") from None
    return params


def _check_workdir(workdir):
    from tfscale import io  # pylint: disable=import-outside-toplevel
    if not str(workdir or "").strip():
        raise ConfigError("--workdir is empty (an unset shell variable?); name the folder of the study")
    if not io.is_remote(workdir) and os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"workdir {workdir} exists and is not a folder")
    if io.exists(io.join(workdir, "config.json")):
        raise ConfigError(f"workdir {workdir} holds a training run (config.json); a study needs a "
                          "folder of its own")


def _say(text):
    print(text, flush=True)


def tune(config, workdir, train_fn=None, say=_say):
    """Runs (or resumes) the study of `config.tune` in `workdir` and writes its outputs; returns
    {best, updates_trained, updates_unpruned, trials, files}. `train_fn(config, workdir,
    callbacks)` trains one trial (default `tfscale.train`)."""
    import optuna  # pylint: disable=import-outside-toplevel
    from tfscale.tuning import outputs, study as study_lib  # pylint: disable=import-outside-toplevel
    from tfscale.tuning.trial import Objective  # pylint: disable=import-outside-toplevel

    params = check(config)
    _check_workdir(workdir)
    t = config.tune
    num_trials = t.num_trials
    if t.sampler == "grid":
        import math  # pylint: disable=import-outside-toplevel
        size = math.prod(len(p.grid_values()) for p in params)
        if size < num_trials:
            say(f"tune: the grid has {size} points, so the study ends after {size} trials, not {num_trials}")
            num_trials = size
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = study_lib.open_study(config, workdir, params)
    url = study_lib.shown_url(study_lib.storage_url(t, workdir))
    done = sum(study_lib.is_done(x) for x in study.get_trials(deepcopy=False))
    say(f"tune: study {t.study_name!r} in {url}: {done} of {num_trials} trials done"
        + ("" if done else f"; trials in {os.path.join(workdir, 'trials')}"))

    def on_trial(study, trial):
        say(outputs.progress_line(study, trial, num_trials, t.metric))
        outputs.write_report(workdir, config, study, params, url=url)

    objective = Objective(config, workdir, params, train_fn)
    try:
        # A grid sampler keeps its seed: it numbers its shuffled points by that seed, so a
        # sampler reseeded per trial would read another trial's point (and repeat it).
        study_lib.run(study, objective, num_trials, on_trial,
                      seed_sampler=None if t.sampler == "grid" else (
                          lambda number: study_lib.sampler(t, params, t.seed + number)))
    finally:
        outputs.write_report(workdir, config, study, params, url=url)
    best_path = outputs.write_best_config(workdir, config, study)
    notes = outputs.write_plots(workdir, study, params, seed=t.seed)
    outputs.write_hparams(workdir, study, params, t.metric)
    outputs.write_results(workdir, config, study)
    report = outputs.write_report(workdir, config, study, params, notes, url=url)
    trained, unpruned = outputs.update_counts(study)
    best = outputs.best_trial(study)
    for name, why in notes.items():
        say(f"tune: {name} not written: {why}")
    if best is not None:
        say(f"tune: best trial #{best.number}: {t.metric} {best.value:.6g} "
            + " ".join(f"{k}={outputs._fmt(v)}" for k, v in best.params.items())  # pylint: disable=protected-access
            + f"; {best_path}")
    if unpruned:
        say(f"tune: {trained:,} updates trained of {unpruned:,} unpruned ({100 * trained / unpruned:.1f} %); "
            f"{report}")
    sys.stdout.flush()
    return {"best": {"number": best.number, "value": best.value, "params": dict(best.params)} if best else None,
            "updates_trained": trained, "updates_unpruned": unpruned, "trials": outputs.rows(study),
            "best_config": best_path, "report": report}
