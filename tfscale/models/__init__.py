"""Model registry: every model is built from a config's `model` section and the data's shape.

A builder is `build(info, **knobs) -> keras.Model`, where `info` is the data set's `DataInfo`
(input shape, number of classes, input scale, task) and the knobs are the rest of
`config.model`. `model.name` is a registry name or, for a user's own model, an importable
"package.module:function" builder with the same signature.
Models take raw inputs (their preprocessing is inside) and return float32 logits, whatever the
precision policy, so losses and exports see float32. `describe(network, model_config)` gives a
built network's `ModelCard`: its parameter and FLOP counts in both conventions (`card.py`).
"""
import inspect

import tf_keras as keras

from tfscale import importing
from tfscale.errors import ConfigError
from tfscale.models import cnn, mlp, text_cnn, transformer_encoder, transformer_lm
from tfscale.models.card import CONVENTIONS, ModelCard, describe

MODELS = {
    "mlp": mlp.build,
    "cnn": cnn.build,
    "transformer_lm": transformer_lm.build,
    "transformer_encoder": transformer_encoder.build,
    "text_cnn": text_cnn.build,
}


# model.* keys that are not knobs of the builder: its name, and what fine-tuning starts from
# (`tfscale/warm_start.py`).
NOT_KNOBS = ("name", "init_from", "init_fresh")


def _knobs(model_config):
    return {k: v for k, v in model_config.items() if k not in NOT_KNOBS}


def builder(name):
    """The builder a `model.name` names: a registry entry, or "module:function"; ConfigError if neither."""
    if name in MODELS:
        return MODELS[name]
    if not importing.is_importable_name(name):
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}, "
                          "or name your own builder as package.module:function")
    return importing.function_by_name(name, "model")


def check_knobs(model_config):
    """Every key of `config.model` must be a knob of the chosen model (a builder taking
    **kwargs takes any)."""
    params = inspect.signature(builder(model_config.name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in _knobs(model_config):
        if key not in params or key == "info":
            known = ", ".join(p for p in params if p != "info")
            raise ConfigError(f"model {model_config.name!r} has no knob model.{key}; its knobs: {known}")


def build(model_config, info):
    """Builds the named model for data described by `info` (call inside the strategy scope)."""
    name = model_config.name
    if importing.is_importable_name(name):  # the user's own: its errors point at the user's file
        network = importing.call_user(builder(name), name, "model", info, **_knobs(model_config))
    else:
        network = builder(name)(info, **_knobs(model_config))
    if not isinstance(network, keras.Model):
        raise ConfigError(f"model {model_config.name!r} returned {type(network).__name__}, not a tf_keras Model "
                          "(build it with `import tf_keras as keras`)")
    return network


def num_params(model):
    """Trainable parameters."""
    return int(sum(v.shape.num_elements() for v in model.trainable_variables))


def training_flops_per_example(model, model_config=None):
    """Training FLOPs per example, all of them counted (convention "total", `card.py`)."""
    return describe(model, model_config).flops_per_example


__all__ = ["CONVENTIONS", "MODELS", "ModelCard", "build", "builder", "check_knobs", "describe", "num_params",
           "training_flops_per_example"]
