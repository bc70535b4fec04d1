"""MLP on the embedded handwritten digits (scikit-learn's 8x8 images).

Variants: `--config=experiments/configs/digits_mlp.py` (default, ~0.97 test accuracy in under a
minute on 2 CPU cores) and `...:tiny` for smoke runs and tests.
"""
from tfscale.config import ConfigError, defaults


def get_config(arg=None):
    c = defaults()
    c.data.name = "digits"
    c.model.name = "mlp"
    c.model.width = 256
    c.model.depth = 2
    c.model.dropout = 0.0
    c.train.batch_size = 128
    c.train.num_steps = 600
    c.train.log_every_steps = 50
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.weight_decay = 1e-4
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_steps = 30
    c.checkpoint.every_steps = 200
    if arg == "tiny":
        c.model.width = 32
        c.model.depth = 1
        c.train.batch_size = 32
        c.train.num_steps = 20
        c.train.log_every_steps = 5
        c.schedule.warmup_steps = 2
        c.checkpoint.every_steps = 10
    elif arg:
        raise ConfigError(f"unknown variant {arg!r} of digits_mlp; variants: tiny")
    return c.lock()
