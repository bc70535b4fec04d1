"""tfscale: train Keras models at any scale, compress them, measure how loss scales.

Importing this package selects Keras 2 (`tf_keras`), which tensorflow-model-optimization needs,
before TensorFlow is imported anywhere.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from tfscale.errors import ConfigError  # noqa: E402


def train(config, workdir, callbacks=()):
    """Trains `config` into `workdir` and returns the summary; see `tfscale.training.train`."""
    from tfscale import training  # pylint: disable=import-outside-toplevel

    return training.train(config, workdir, callbacks)


__all__ = ["ConfigError", "train"]
