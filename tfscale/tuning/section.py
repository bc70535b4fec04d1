"""The `tune` config section: its defaults and its checks, without TensorFlow or Optuna.

A tuning config is a training config with a `tune` section (configs import `defaults()` from
here). `check()` turns every mistake in it into one `ConfigError` line before anything is written.
"""
import ml_collections

from tfscale.errors import require

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "successive_halving", "none")
DIRECTIONS = ("", "minimize", "maximize")
# Figures of summary.json a study may optimise; the pruning callback reads them from the Keras
# logs under these names (a training figure is logged without its `train_` prefix).
METRICS = {"eval_loss": "eval_loss", "eval_accuracy": "eval_accuracy", "train_loss": "loss",
           "train_accuracy": "accuracy"}


def defaults():
    """The `tune` section a tuning config adds to a training config."""
    t = ml_collections.ConfigDict()
    # "KEY=SPEC", KEY any config key, SPEC loguniform(lo, hi) | uniform(lo, hi) | int(lo, hi) |
    # int(lo, hi, log) | choice(a, b, ...).
    t.space = ()
    t.num_trials = 20  # finished trials (complete, pruned or failed) the study ends with
    t.sampler = "tpe"  # tpe | random | grid
    t.sampler_startup_trials = 10  # tpe: random trials before the model of good/bad regions is used
    t.pruner = "median"  # median | successive_halving | none (needs eval.every_steps > 0)
    t.pruner_startup_trials = 5  # median: trials that finish before any is pruned
    # median: updates before a trial may be pruned; successive_halving: the first rung
    # (min_resource, in updates; 0 = auto).
    t.pruner_warmup_steps = 0
    t.metric = "eval_loss"  # eval_loss | eval_accuracy | train_loss | train_accuracy
    t.direction = ""  # "" = minimize a loss, maximize an accuracy
    t.storage = ""  # "" = SQLite DIR/study.db; or a database URL shared by many machines
    t.study_name = "tune"
    t.seed = 0  # the sampler's draws
    # A trial that stopped heartbeating for 2x this long was killed: it is failed and re-run
    # from its checkpoint (Optuna's heartbeat, RetryHeartbeatStaleTrialCallback).
    t.heartbeat_seconds = 10
    # "key=value" overrides applied to the best trial's config in best_config.py, e.g. the final
    # training on the full train split: ("data.train_split=train", "data.eval_split=test").
    t.best_config_overrides = ()
    return t


def direction(tune):
    """`tune.direction`, or the metric's natural one: accuracies up, losses down."""
    return tune.direction or ("maximize" if "accuracy" in tune.metric else "minimize")


def check(config):
    """The `tune` section's own values; the space is checked against the config by `space.parse`."""
    require("tune" in config, "the config has no `tune` section (tfscale.tuning.section.defaults())")
    t = config.tune
    require(isinstance(t.space, (tuple, list)) and all(isinstance(s, str) for s in t.space),
            f"tune.space must be a tuple of \"KEY=SPEC\" strings, got {t.space!r}")
    require(len(t.space) > 0, "tune.space is empty: nothing to tune")
    require(t.num_trials >= 1, f"tune.num_trials must be >= 1, got {t.num_trials}")
    require(t.sampler in SAMPLERS, f"unknown tune.sampler {t.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    require(t.pruner in PRUNERS, f"unknown tune.pruner {t.pruner!r}; choose one of {', '.join(PRUNERS)}")
    require(t.sampler_startup_trials >= 0,
            f"tune.sampler_startup_trials must be >= 0, got {t.sampler_startup_trials}")
    require(t.pruner_startup_trials >= 0,
            f"tune.pruner_startup_trials must be >= 0, got {t.pruner_startup_trials}")
    require(t.pruner_warmup_steps >= 0, f"tune.pruner_warmup_steps must be >= 0, got {t.pruner_warmup_steps}")
    require(t.metric in METRICS, f"unknown tune.metric {t.metric!r}; choose one of {', '.join(METRICS)}")
    require(t.direction in DIRECTIONS,
            f"tune.direction must be minimize, maximize or \"\" (auto), got {t.direction!r}")
    require(str(t.study_name).strip(), "tune.study_name is empty")
    require(0 <= t.seed < 2**32, f"tune.seed must be in [0, 2**32), got {t.seed}")
    require(t.heartbeat_seconds >= 1, f"tune.heartbeat_seconds must be >= 1, got {t.heartbeat_seconds}")
    require(isinstance(t.best_config_overrides, (tuple, list)),
            f"tune.best_config_overrides must be a tuple of \"key=value\" strings, got {t.best_config_overrides!r}")
    if t.pruner != "none":
        every = config.eval.get("every_steps", 0) if "eval" in config else 0
        require(every and every > 0,
                f"tune.pruner={t.pruner} needs periodic evaluation to judge a trial before it ends: set "
                "eval.every_steps > 0 (e.g. a tenth of train.num_steps), or tune.pruner=none")
    if t.storage:
        require("://" in t.storage, f"tune.storage {t.storage!r} is not a database URL (e.g. "
                "postgresql://user:pass@host/db, mysql://..., sqlite:///path.db); \"\" = DIR/study.db")
