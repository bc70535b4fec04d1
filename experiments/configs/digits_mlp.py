"""MLP on the embedded handwritten digits (scikit-learn's 8x8 images).

`--config=experiments/configs/digits_mlp.py` (~0.97 test accuracy in seconds on 2 CPU cores);
`...:tiny` for smoke runs and tests.
"""
from experiments.configs import common


def get_config(arg=None):
    c = common.digits("mlp", arg)
    c.model.width = 32 if arg == "tiny" else 256
    c.model.depth = 1 if arg == "tiny" else 2
    c.model.dropout = 0.0
    return c.lock()
