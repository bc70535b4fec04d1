r"""Trains `examples/my_model.py` on `examples/my_data.py`'s shards with everything tfscale does
(strategies, accumulation, checkpoints and resume, periodic validation, early stopping, export).

  python -m examples.my_data --out=runs/my_data
  python -m experiments.train --config=examples/my_config.py:runs/my_data --workdir=runs/my_model
"""
from tfscale.config import defaults


def get_config(arg=None):
    c = defaults()
    c.data.name = "array_record"
    c.data.path = arg or "runs/my_data"
    c.model.name = "examples.my_model:build"
    c.model.width = 64
    c.model.blocks = 2
    c.model.dropout = 0.1
    c.train.batch_size = 64
    c.train.num_steps = 600
    c.train.log_every_steps = 50
    c.optimizer.learning_rate = 1e-3
    c.optimizer.weight_decay = 1e-4
    c.schedule.warmup_steps = 30
    c.eval.every_steps = 50
    c.train.early_stopping.patience = 4
    c.checkpoint.every_steps = 50
    return c.lock()
