"""Small CNN on the embedded handwritten digits. Variants: default, `tiny`."""
from experiments.configs import common


def get_config(arg=None):
    c = common.digits("cnn", arg)
    c.model.filters = 8 if arg == "tiny" else 32
    c.model.depth = 1 if arg == "tiny" else 2
    c.model.width = 16 if arg == "tiny" else 128
    c.model.dropout = 0.0
    return c.lock()
