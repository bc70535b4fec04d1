"""Byte-level transformer LM on `pycode` (the Python standard library's source).

Variants: default (4 layers, d_model 128, context 128; minutes on 2 CPU cores) and `tiny`
(seconds; smoke runs and tests).
"""
from tfscale.config import ConfigError, defaults


def get_config(arg=None):
    if arg not in (None, "", "tiny"):
        raise ConfigError(f"unknown variant {arg!r}; variants: tiny")
    c = defaults()
    c.data.name = "pycode"
    c.data.eval_split = "validation"
    c.model.name = "transformer_lm"
    c.model.num_layers = 4
    c.model.d_model = 128
    c.model.num_heads = 4
    c.model.d_ff = 512
    c.model.seq_len = 128
    c.model.dropout = 0.0
    c.model.tie_embeddings = True
    c.train.batch_size = 32
    c.train.num_steps = 600
    c.train.log_every_steps = 50
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.weight_decay = 0.01
    c.optimizer.beta_2 = 0.99
    c.optimizer.global_clipnorm = 1.0
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_steps = 50
    c.schedule.end_factor = 0.1
    c.checkpoint.every_steps = 200
    c.eval.batch_size = 256
    if arg == "tiny":
        c.model.num_layers = 1
        c.model.d_model = 32
        c.model.num_heads = 2
        c.model.d_ff = 64
        c.model.seq_len = 32
        c.train.batch_size = 16
        c.train.num_steps = 20
        c.train.log_every_steps = 5
        c.schedule.warmup_steps = 2
        c.checkpoint.every_steps = 10
    return c.lock()
