"""What the digits configs share: the training recipe and the `tiny` variant's run length."""
from tfscale.config import defaults
from tfscale.errors import ConfigError

VARIANTS = ("tiny",)


def digits(model_name, arg):
    """Defaults for a digits classifier: AdamW + warmup-cosine, 600 updates of 128 examples."""
    if arg and arg not in VARIANTS:
        raise ConfigError(f"unknown variant {arg!r}; variants: {', '.join(VARIANTS)}")
    c = defaults()
    c.data.name = "digits"
    c.model.name = model_name
    c.train.batch_size = 128
    c.train.num_steps = 600
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.weight_decay = 1e-4
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_steps = 30
    c.checkpoint.every_steps = 200
    if arg == "tiny":  # seconds, for smoke runs and tests
        c.train.batch_size = 32
        c.train.num_steps = 20
        c.train.log_every_steps = 5
        c.schedule.warmup_steps = 2
        c.checkpoint.every_steps = 10
    return c
