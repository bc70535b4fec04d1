"""Config defaults and validation: the one place where user mistakes become one-line errors.

Every experiment config starts from `defaults()` and sets what it needs; `validate()` checks a
config before anything is written, so a bad run never touches a workdir. Errors are raised as
`ConfigError`, which the scripts print as one line and exit 2 (no traceback).
"""
import math

import ml_collections

from tfscale.errors import ConfigError, require  # noqa: F401  (ConfigError re-exported: `tfscale.config.ConfigError`)
from tfscale.values import init_from_parts

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def defaults():
    """The keys every training config has, with their defaults (not locked: callers lock)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.deterministic = False  # tf.config.experimental.enable_op_determinism()

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # digits | pycode | site_packages | synthetic | array_record | any tfds name | package.module:function
    c.data.data_dir = ""  # tfds data dir; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.data.mask_rate = 0.0  # > 0: masked-LM data (BERT: 0.15) from a token data set; loss masked_lm
    c.data.path = ""  # array_record: the folder `experiments.prepare` wrote; tfrecord: a glob of training files
    c.data.eval_path = ""  # tfrecord: a glob of held-out files
    c.data.shuffle_buffer = 10_000  # tfrecord: records in the seeded shuffle buffer of each input pipeline
    c.data.service = ""  # a tf.data service dispatcher (grpc://HOST:PORT) that runs the training input pipeline
    c.data.train_split = "train"
    c.data.train_examples = 0  # > 0: train on this many of the split's examples, evenly spaced (a labelled subset)
    c.data.eval_split = "test"
    c.data.input_key = ""  # tfds feature names; "" = the data set's supervised keys
    c.data.label_key = ""
    # `synthetic` only: a learnable classification task from a random linear teacher.
    c.data.num_examples = 2048
    c.data.num_features = 32
    c.data.num_classes = 10

    c.model = ml_collections.ConfigDict()
    c.model.name = "mlp"

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 128  # global batch of one optimizer update
    c.train.accum_steps = 1  # micro-batches per update
    c.train.num_steps = 500  # optimizer updates
    c.train.steps_per_execution = 0  # updates per tf.function call; 0 = auto (1, TPU: 32)
    c.train.jit_compile = "auto"  # auto | true | false
    c.train.log_every_steps = 50
    c.train.loss = "sparse_categorical_crossentropy"
    # "WORKDIR_OR_CHECKPOINT@STEP": a fresh run starts from that checkpoint at update STEP
    # (network, optimizer) instead of from scratch; "" = from scratch. tfscale.branch.
    c.train.init_from = ""
    # Early stopping, from the evaluations of eval.every_steps (tfscale/periodic_eval.py).
    c.train.early_stopping = ml_collections.ConfigDict()
    c.train.early_stopping.monitor = "eval_loss"  # also what "best" means: eval_loss | eval_accuracy
    c.train.early_stopping.mode = "auto"  # auto (max for accuracies, else min) | min | max
    c.train.early_stopping.patience = 0  # evaluations without improvement before stopping; 0 = never stop
    c.train.early_stopping.min_delta = 0.0  # an improvement must beat the best by more than this
    c.train.early_stopping.restore_best = True  # evaluate and export the best weights, not the last
    # "START,STOP": a TensorFlow profile of updates START..STOP in DIR/tensorboard (profile tab).
    c.train.profile_steps = ""

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.weight_decay = 0.0  # decoupled; never applied to biases and norms
    c.optimizer.global_clipnorm = 0.0  # 0 = no clipping
    c.optimizer.momentum = 0.9  # sgd, muon
    c.optimizer.nesterov = False  # sgd
    # None = the optimizer's own default (e.g. Adam's beta_2 0.999, Lion's 0.99).
    c.optimizer.beta_1 = ml_collections.config_dict.placeholder(float)
    c.optimizer.beta_2 = ml_collections.config_dict.placeholder(float)
    c.optimizer.epsilon = ml_collections.config_dict.placeholder(float)

    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "warmup_cosine"  # constant | warmup_cosine | warmup_linear | inverse_sqrt | wsd
    c.schedule.warmup_steps = 0  # in optimizer updates
    c.schedule.end_factor = 0.0  # final learning rate / peak (cosine, linear, wsd; floor of inverse_sqrt)
    # wsd: the last cooldown_steps updates decay from the peak to end_factor; 0 = constant after
    # warmup. In updates, not a fraction: a branch point must be the same update in every run.
    c.schedule.cooldown_steps = 0
    c.schedule.cooldown_shape = "1-sqrt"  # 1-sqrt | linear

    c.precision = "auto"  # auto | float32 | mixed_float16 | mixed_bfloat16

    c.distribute = ml_collections.ConfigDict()
    c.distribute.strategy = "auto"
    c.distribute.cpu_devices = 0  # >0: split the CPU into this many logical devices
    c.distribute.tpu = "local"  # TPU name or grpc:// address; local = this TPU VM (or $TPU_NAME)

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 100
    c.checkpoint.keep = 3
    # Updates whose checkpoints are also written to checkpoints/keep/ and never rotated away
    # (the branch points of a wsd run).
    c.checkpoint.keep_steps = ()

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 512
    c.eval.max_examples = 0  # held-out examples the run's eval_loss is measured on; 0 = all
    c.eval.every_steps = 0  # also evaluate every so many updates (metrics.jsonl, TensorBoard); 0 = at the end only

    c.export = ml_collections.ConfigDict()
    c.export.saved_model = True

    from tfscale.compress import section  # pylint: disable=import-outside-toplevel  (owns its section)
    c.compress = section.defaults()
    return c


def profile_range(text):
    """`train.profile_steps` "START,STOP" as (START, STOP), or None when empty."""
    if not str(text).strip():
        return None
    parts = str(text).split(",")
    try:
        start, stop = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"train.profile_steps must be \"START,STOP\" (two updates), got {text!r}") from None
    return start, stop


def _validate_periodic_eval(config):
    t, every = config.train, config.eval.every_steps
    require(every >= 0, f"eval.every_steps must be >= 0, got {every}")
    require(not every or not t.steps_per_execution or every % t.steps_per_execution == 0,
            f"eval.every_steps {every} must be a multiple of train.steps_per_execution {t.steps_per_execution}: "
            "callbacks run once per execution")
    e = t.early_stopping
    require(e.mode in ("auto", "min", "max"), f"train.early_stopping.mode must be auto, min or max, got {e.mode!r}")
    require(e.patience >= 0, f"train.early_stopping.patience must be >= 0, got {e.patience}")
    require(e.min_delta >= 0, f"train.early_stopping.min_delta must be >= 0, got {e.min_delta}")
    require(str(e.monitor).startswith("eval_"),
            f"train.early_stopping.monitor must be a held-out figure (eval_loss, eval_accuracy), got {e.monitor!r}")
    require(not e.patience or every, "train.early_stopping.patience needs eval.every_steps > 0: "
            "it counts the periodic evaluations")
    if every:
        from tfscale import trainer  # pylint: disable=import-outside-toplevel  (what a loss's evaluation gives)
        given = [f"eval_{name}" for name in trainer.measured(t.loss)]
        require(e.monitor in given, f"train.early_stopping.monitor {e.monitor!r} is not measured; the evaluation "
                f"gives {', '.join(given)}")
    profile = profile_range(t.profile_steps)
    if profile is not None:
        require(0 <= profile[0] < profile[1] <= t.num_steps,
                f"train.profile_steps {t.profile_steps!r} must be START,STOP with 0 <= START < STOP <= "
                f"train.num_steps {t.num_steps}")


def _choice(value, choices, what):
    require(value in choices, f"unknown {what} {value!r}; choose one of {', '.join(sorted(choices))}")


def validate(config):
    """Checks everything that can be checked without devices or data; raises ConfigError."""
    # Imported here: the registries import TensorFlow, this module must stay light.
    from tfscale import data, models, optim  # pylint: disable=import-outside-toplevel
    from tfscale import distribute  # pylint: disable=import-outside-toplevel

    models.builder(config.model.name)  # a registry name, or an importable module:function
    _choice(config.optimizer.name, optim.OPTIMIZERS, "optimizer")
    _choice(config.schedule.name, optim.SCHEDULES, "schedule")
    _choice(config.precision, PRECISIONS, "precision")
    _choice(config.distribute.strategy, distribute.STRATEGIES, "distribute.strategy")
    _check_finite(config)
    require(0 <= config.seed < 2**32, f"seed must be in [0, 2**32), got {config.seed}")
    data.check_name(config.data)
    models.check_knobs(config.model)

    t = config.train
    require(t.accum_steps >= 1, f"train.accum_steps must be >= 1, got {t.accum_steps}")
    require(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    require(t.batch_size % t.accum_steps == 0,
           f"train.batch_size {t.batch_size} is not divisible by train.accum_steps {t.accum_steps}")
    require(t.num_steps >= 1, f"train.num_steps must be >= 1, got {t.num_steps}")
    require(t.steps_per_execution >= 0,
           f"train.steps_per_execution must be >= 0 (0 = auto), got {t.steps_per_execution}")
    require(t.log_every_steps >= 1, f"train.log_every_steps must be >= 1, got {t.log_every_steps}")
    require(str(t.jit_compile).lower() in ("auto", "true", "false"),
           f"train.jit_compile must be auto, true or false, got {t.jit_compile!r}")
    o = config.optimizer
    require(o.learning_rate >= 0, f"optimizer.learning_rate must be >= 0, got {o.learning_rate}")
    require(o.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {o.weight_decay}")
    require(not (o.name == "adam" and o.weight_decay),
           "optimizer adam has no weight decay; use optimizer.name=adamw")
    require(o.global_clipnorm >= 0, f"optimizer.global_clipnorm must be >= 0, got {o.global_clipnorm}")
    s = config.schedule
    require(0 <= s.warmup_steps <= t.num_steps,
           f"schedule.warmup_steps {s.warmup_steps} must be between 0 and train.num_steps {t.num_steps}")
    require(0 <= s.end_factor <= 1, f"schedule.end_factor must be in [0, 1], got {s.end_factor}")
    _validate_wsd(s, t.num_steps)
    _validate_init_from(t)
    require(config.distribute.cpu_devices >= 0,
           f"distribute.cpu_devices must be >= 0, got {config.distribute.cpu_devices}")
    require(config.checkpoint.every_steps >= 1,
           f"checkpoint.every_steps must be >= 1, got {config.checkpoint.every_steps}")
    require(config.checkpoint.keep >= 1, f"checkpoint.keep must be >= 1, got {config.checkpoint.keep}")
    _validate_keep_steps(config.checkpoint.keep_steps, t)
    _validate_periodic_eval(config)
    require(config.data.train_examples >= 0,
            f"data.train_examples must be >= 0 (0 = all), got {config.data.train_examples}")
    require(0 <= config.data.mask_rate < 1, f"data.mask_rate must be in [0, 1), got {config.data.mask_rate}")
    require(bool(config.data.mask_rate) == (config.train.loss == "masked_lm"),
            "masked-LM training needs both data.mask_rate > 0 (BERT: 0.15) and train.loss=masked_lm")
    require(config.eval.batch_size >= 1, f"eval.batch_size must be >= 1, got {config.eval.batch_size}")
    require(config.eval.max_examples >= 0,
           f"eval.max_examples must be >= 0 (0 = all), got {config.eval.max_examples}")


def _validate_wsd(s, num_steps):
    from tfscale.optim.schedules import COOLDOWN_SHAPES  # pylint: disable=import-outside-toplevel
    _choice(s.cooldown_shape, COOLDOWN_SHAPES, "schedule.cooldown_shape")
    require(s.cooldown_steps >= 0, f"schedule.cooldown_steps must be >= 0, got {s.cooldown_steps}")
    require(s.name == "wsd" or not s.cooldown_steps,
           f"schedule.cooldown_steps {s.cooldown_steps} is for schedule wsd only (schedule.name={s.name})")
    require(s.warmup_steps + s.cooldown_steps <= num_steps,
           f"schedule.cooldown_steps {s.cooldown_steps} must fit in train.num_steps {num_steps} after "
           f"schedule.warmup_steps {s.warmup_steps} (cooldown would start at update "
           f"{num_steps - s.cooldown_steps}, before warmup ends)")


def _validate_init_from(t):
    if str(t.init_from).strip():
        _, step = init_from_parts(t.init_from)
        require(step < t.num_steps, f"train.init_from starts at update {step}, not before "
                                   f"train.num_steps {t.num_steps}: nothing would be trained")


def _validate_keep_steps(keep_steps, t):
    require(isinstance(keep_steps, (tuple, list))
           and all(isinstance(k, int) and not isinstance(k, bool) for k in keep_steps),
           f"checkpoint.keep_steps must be a tuple of update counts, got {keep_steps!r}")
    for k in keep_steps:
        require(1 <= k <= t.num_steps,
               f"checkpoint.keep_steps {k} must be between 1 and train.num_steps {t.num_steps}")
        # Callbacks (and so checkpoints) run once per execution of steps_per_execution updates.
        require(k == t.num_steps or not t.steps_per_execution or k % t.steps_per_execution == 0,
               f"checkpoint.keep_steps {k} is not a multiple of train.steps_per_execution "
               f"{t.steps_per_execution}: no checkpoint can be taken there")


INT64_MAX = 2**63 - 1


def _check_finite(config, prefix=""):
    """No key may be nan or inf (`learning_rate=inf` would train to NaN weights, not fail), nor an
    integer TensorFlow cannot hold (`num_steps=1e20` would fail inside the input pipeline)."""
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            _check_finite(value, f"{prefix}{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{key} must be a finite number, got {value}")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
            raise ConfigError(f"{prefix}{key} {value} is out of range: integers must fit 64 bits "
                              f"(|value| <= {INT64_MAX})")


def check_replicas(config, num_replicas):
    """The global batch must split into accum_steps micro-batches on every replica."""
    t = config.train
    parts = t.accum_steps * num_replicas
    require(t.batch_size % parts == 0,
           f"train.batch_size {t.batch_size} is not divisible by train.accum_steps {t.accum_steps} "
           f"x replicas {num_replicas} = {parts}")
