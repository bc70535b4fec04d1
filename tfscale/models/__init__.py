"""Model registry: every model is built from a config's `model` section and the data's shape.

A builder is `build(info, **knobs) -> keras.Model`, where `info` is the data set's `DataInfo`
(input shape, number of classes, input scale) and the knobs are the rest of `config.model`.
Models take raw inputs (their preprocessing is inside) and return float32 logits, whatever the
precision policy, so losses and exports see float32. `describe(network, model_config)` gives a
built network's `ModelCard`: its parameter and FLOP counts in both conventions (`card.py`).
"""
import inspect

from tfscale.errors import ConfigError
from tfscale.models import cnn, mlp, transformer_lm
from tfscale.models.card import CONVENTIONS, ModelCard, describe

MODELS = {
    "mlp": mlp.build,
    "cnn": cnn.build,
    "transformer_lm": transformer_lm.build,
}


def _knobs(model_config):
    return {k: v for k, v in model_config.items() if k != "name"}


def check_knobs(model_config):
    """Every key of `config.model` must be a knob of the chosen model."""
    params = inspect.signature(MODELS[model_config.name]).parameters
    for key in _knobs(model_config):
        if key not in params or key == "info":
            known = ", ".join(p for p in params if p != "info")
            raise ConfigError(f"model {model_config.name!r} has no knob model.{key}; its knobs: {known}")


def build(model_config, info):
    """Builds the named model for data described by `info` (call inside the strategy scope)."""
    return MODELS[model_config.name](info, **_knobs(model_config))


def num_params(model):
    """Trainable parameters."""
    return int(sum(v.shape.num_elements() for v in model.trainable_variables))


def training_flops_per_example(model, model_config=None):
    """Training FLOPs per example, all of them counted (convention "total", `card.py`)."""
    return describe(model, model_config).flops_per_example


__all__ = ["CONVENTIONS", "MODELS", "ModelCard", "build", "check_knobs", "describe", "num_params",
           "training_flops_per_example"]
