"""`synthetic`: a learnable classification task for smoke tests and benchmarks.

Gaussian inputs labelled by a fixed random linear teacher (argmax of x W), so a model can fit
it. The data depends only on its size knobs, not on `config.seed`, like a real data set.
"""
import numpy as np

from tfscale.data.info import DataInfo
from tfscale.data.source import InMemorySource

EVAL_FRACTION = 0.2


def load(data_config):
    rng = np.random.default_rng(0)
    n, d, k = data_config.num_examples, data_config.num_features, data_config.num_classes
    x = rng.standard_normal((n, d)).astype(np.float32)
    teacher = rng.standard_normal((d, k)).astype(np.float32)
    y = np.argmax(x @ teacher, axis=1).astype(np.int32)
    n_eval = int(n * EVAL_FRACTION)
    info = DataInfo("synthetic", (d,), k, 1.0, n - n_eval, n_eval)
    return InMemorySource(info, (x[n_eval:], y[n_eval:]), (x[:n_eval], y[:n_eval]))
