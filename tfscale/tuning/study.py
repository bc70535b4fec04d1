"""The study: opened (or created) in its storage, its trials run until `tune.num_trials` are done.

One study lives in one database, SQLite `DIR/study.db` by default or any database URL, so many
processes or machines run trials against it with Optuna's own distributed mode
(`create_study(load_if_exists=True)`), nothing home-made. A trial killed outright stops
heartbeating: after 2 x `tune.heartbeat_seconds` any process running the study fails it and
Optuna's `RetryHeartbeatStaleTrialCallback` enqueues it again with the same values and user attrs
(its workdir), so it resumes from its checkpoint. A trial stopped by SIGTERM or Ctrl-C saves a
checkpoint and is enqueued again at once.
"""
import json
import random
import time
import warnings

from absl import logging

from tfscale import io
from tfscale.errors import ConfigError
from tfscale.tuning import section

FINGERPRINT_ATTR = "tfscale_fingerprint"
OPEN_ATTEMPTS = 5


def storage_url(tune, workdir):
    """`tune.storage`, or SQLite in the tuning workdir."""
    if tune.storage:
        return tune.storage
    if io.is_remote(workdir):
        raise ConfigError(f"tune.storage is empty and the workdir {workdir} is remote, where SQLite "
                          "cannot live; set tune.storage to a database URL (postgresql://..., mysql://...)")
    import os  # pylint: disable=import-outside-toplevel
    return "sqlite:///" + os.path.abspath(io.join(workdir, "study.db"))


def _check_sqlite_folder(storage):
    """A SQLite file named by `tune.storage` must be in a folder that exists: SQLite does not make
    it, and the failure would come after five retries, with nothing to say which path."""
    import os  # pylint: disable=import-outside-toplevel
    if not storage.startswith("sqlite:///"):
        return
    folder = os.path.dirname(storage[len("sqlite:///"):]) or "."
    if not os.path.isdir(folder):
        raise ConfigError(f"tune.storage {storage}: the folder {folder} does not exist (SQLite makes the file, "
                          "not its folder)")


def shown_url(url):
    """The URL without its password, for messages and reports."""
    import re  # pylint: disable=import-outside-toplevel
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def sampler(tune, params, seed):
    """The sampler of `tune.sampler`. Samplers keep no state of their own beyond their random
    generator (the history is in the storage), so each trial gets one seeded with
    `tune.seed + its number`: reproducible, and different in every process sharing the study
    (one seed everywhere would draw the same values in every process). A grid sampler is the
    exception: it shuffles its points by its seed and records each trial's point by number in the
    storage, so every process must hold the same seed for the numbers to mean the same points."""
    import optuna  # pylint: disable=import-outside-toplevel
    from tfscale.tuning import space  # pylint: disable=import-outside-toplevel
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tune.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(params), seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune.sampler_startup_trials)


def _pruner(tune):
    import optuna  # pylint: disable=import-outside-toplevel
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.pruner_startup_trials,
                                           n_warmup_steps=tune.pruner_warmup_steps)
    if tune.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=tune.pruner_warmup_steps or "auto")
    return optuna.pruners.NopPruner()


def fingerprint(config):
    """What a study's trials must share: the training config (less what only changes speed) and
    the search. Runs of the same study must agree on it."""
    from tfscale import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
    from tfscale.tuning import space  # pylint: disable=import-outside-toplevel

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    run = flat(json.loads(space.trial_config(config, {}).to_json()))
    kept = {k: v for k, v in run.items() if not k.startswith(workdir_lib.RESUMABLE)}
    kept.update({"tune.space": list(config.tune.space), "tune.metric": config.tune.metric,
                 "tune.direction": section.direction(config.tune)})
    return kept


POSTGRES_DRIVERS = ("psycopg", "psycopg2")  # SQLAlchemy's default for postgresql:// first


def with_driver(url):
    """`url` naming the installed PostgreSQL driver when it names none: SQLAlchemy's default for a
    bare `postgresql://` changed from psycopg2 to psycopg (3) in 2.1, so the docs' `pip install
    psycopg2-binary` alone would not open it. Other URLs are returned as they are."""
    import importlib.util  # pylint: disable=import-outside-toplevel
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("postgresql", "postgres"):
        return url
    for driver in POSTGRES_DRIVERS:
        if importlib.util.find_spec(driver) is not None:
            return f"postgresql+{driver}://{rest}"
    raise ConfigError(f"tune.storage {shown_url(url)} needs a PostgreSQL driver: pip install psycopg2-binary "
                      "(or psycopg[binary])")


def _unopenable(url, error):
    text = " ".join(str(error).split())[:300]
    return ConfigError(f"tune.storage {shown_url(url)} cannot be opened: {type(error).__name__}: {text}")


def open_study(config, workdir, params):
    """The study of `config.tune` in its storage, created on first use; a ConfigError if the
    storage cannot be opened or holds a study of that name made from another config."""
    import optuna  # pylint: disable=import-outside-toplevel
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback  # pylint: disable=import-outside-toplevel

    tune = config.tune
    url = storage_url(tune, workdir)
    driver_url = with_driver(url)
    _check_sqlite_folder(tune.storage)
    if not tune.storage and not io.is_remote(workdir):  # the default: SQLite inside the workdir
        io.makedirs(workdir)
    import sqlalchemy.exc  # pylint: disable=import-outside-toplevel
    for attempt in range(OPEN_ATTEMPTS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                storage = RDBStorage(
                    driver_url, engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
                    heartbeat_interval=tune.heartbeat_seconds, grace_period=2 * tune.heartbeat_seconds,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                        inherit_intermediate_values=True))
                study = optuna.create_study(storage=storage, study_name=tune.study_name,
                                            direction=section.direction(tune), sampler=sampler(tune, params, tune.seed),
                                            pruner=_pruner(tune), load_if_exists=True)
                break
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as e:
                # Processes starting together on a new database race to create its tables (the
                # loser's insert fails), or find it locked: the next attempt finds it made.
                if attempt + 1 < OPEN_ATTEMPTS:
                    logging.info("tune.storage: %s; trying again", type(e).__name__)
                    time.sleep(0.5 * 2 ** attempt + random.random())
                    continue
                raise _unopenable(url, e) from None
            except Exception as e:  # pylint: disable=broad-except  (a driver missing, a bad URL)
                raise _unopenable(url, e) from None
    mine = fingerprint(config)
    theirs = study.user_attrs.get(FINGERPRINT_ATTR)
    if theirs is None:
        study.set_user_attr(FINGERPRINT_ATTR, mine)
    elif theirs != json.loads(json.dumps(mine)):
        differ = sorted(k for k in set(mine) | set(theirs) if json.dumps(mine.get(k)) != json.dumps(theirs.get(k)))
        shown = ", ".join(f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}" for k in differ[:3])
        raise ConfigError(f"study {tune.study_name!r} in {shown_url(url)} was made from a different config "
                          f"({shown}{' ...' if len(differ) > 3 else ''}); use a new workdir or tune.study_name")
    return study


def is_done(trial):
    """Finished for good: complete, pruned, or failed by its own training (not killed: a killed
    trial is run again)."""
    from optuna.trial import TrialState  # pylint: disable=import-outside-toplevel
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "error" in trial.user_attrs)


def fail_stale_trials(study):
    import optuna  # pylint: disable=import-outside-toplevel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def retry(study, number):
    """Enqueues trial `number` again (same values, same workdir): it was stopped, not finished."""
    import optuna  # pylint: disable=import-outside-toplevel
    from optuna.storages import RetryHeartbeatStaleTrialCallback  # pylint: disable=import-outside-toplevel
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None or is_done(trial) or "workdir" not in trial.user_attrs:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)(study, trial)


def seeded(study, objective, seed_sampler):
    """`objective` behind a fresh sampler seeded for the trial's number (`sampler`): values are
    drawn when the objective suggests them, after the trial has its number."""
    def run_trial(trial):
        study.sampler = seed_sampler(trial.number)
        return objective(trial)
    return run_trial


def run(study, objective, num_trials, on_trial=None, poll_seconds=None, seed_sampler=None):
    """Runs trials until `num_trials` are done, resuming what a killed run left: a retry waiting
    in the queue runs first; trials still RUNNING (in another process, or killed and not yet
    stale) are waited for rather than duplicated. Several processes may run this on one study;
    together they may end a few trials beyond `num_trials` (one per process at most)."""
    import optuna  # pylint: disable=import-outside-toplevel
    from optuna.trial import TrialState  # pylint: disable=import-outside-toplevel
    from tfscale.callbacks import Preempted  # pylint: disable=import-outside-toplevel
    from tfscale.tuning.trial import TrialFailed  # pylint: disable=import-outside-toplevel

    poll = poll_seconds or study._storage.get_heartbeat_interval() or 10  # pylint: disable=protected-access
    waited_for = None
    while True:
        fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        done = sum(is_done(t) for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        if done >= num_trials:
            return
        if not waiting and done + len(running) >= num_trials:
            if waited_for != running:
                logging.info("waiting for trial(s) %s, still running in another process (or killed: "
                             "failed and re-run once their heartbeat is %ds old)", running,
                             2 * (study._storage.get_heartbeat_interval() or 0))  # pylint: disable=protected-access
                waited_for = running
            time.sleep(poll)
            continue
        waited_for = None
        objective.current = None
        try:
            study.optimize(seeded(study, objective, seed_sampler) if seed_sampler else objective,
                           n_trials=1, catch=(TrialFailed,),
                           callbacks=[on_trial] if on_trial else None, gc_after_trial=True)
        except (Preempted, KeyboardInterrupt):
            if objective.current is not None:
                retry(study, objective.current)
            raise
        if isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(study):
            return
