"""Small CNN on the embedded handwritten digits. Variants: default, `tiny`."""
from tfscale.config import ConfigError, defaults


def get_config(arg=None):
    c = defaults()
    c.data.name = "digits"
    c.model.name = "cnn"
    c.model.filters = 32
    c.model.depth = 2
    c.model.width = 128
    c.model.dropout = 0.0
    c.train.batch_size = 128
    c.train.num_steps = 600
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.weight_decay = 1e-4
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_steps = 30
    c.checkpoint.every_steps = 200
    if arg == "tiny":
        c.model.filters = 8
        c.model.depth = 1
        c.model.width = 16
        c.train.batch_size = 32
        c.train.num_steps = 20
        c.train.log_every_steps = 5
        c.schedule.warmup_steps = 2
        c.checkpoint.every_steps = 10
    elif arg:
        raise ConfigError(f"unknown variant {arg!r} of digits_cnn; variants: tiny")
    return c.lock()
