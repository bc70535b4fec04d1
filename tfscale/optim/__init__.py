"""Optimizers and learning-rate schedules from a config.

sgd, adam, adamw, adafactor and lion are tf_keras's own; lamb and muon are small tf_keras
optimizers of ours (tf_keras 2.21 has neither). Variables are treated by their role in the model
(`roles.variable_roles`): for every optimizer, weight decay is decoupled and skips biases and
norm parameters (embeddings and matrices are decayed); Muon orthogonalises hidden matrices only.
`global_clipnorm` clips the aggregated gradient of one whole update.
"""
import tf_keras as keras

from tfscale.optim import roles as roles_lib
from tfscale.optim.schedules import SCHEDULES, WarmupSchedule, build_schedule


def _betas(o, names=("beta_1", "beta_2", "epsilon")):
    """The optional config hyper-parameters that are set, as keyword arguments."""
    return {k: getattr(o, k) for k in names if getattr(o, k) is not None}


def _ours(module, name):
    """Our own optimizers, imported when asked for."""
    import importlib  # pylint: disable=import-outside-toplevel
    return getattr(importlib.import_module(f"tfscale.optim.{module}"), name)


# config `optimizer.name` -> f(optimizer_config, learning_rate, **common) -> optimizer.
OPTIMIZERS = {
    "sgd": lambda o, lr, **kw: keras.optimizers.SGD(lr, momentum=o.momentum, nesterov=o.nesterov, **kw),
    "adam": lambda o, lr, **kw: keras.optimizers.Adam(lr, **_betas(o), **kw),
    "adamw": lambda o, lr, **kw: keras.optimizers.AdamW(lr, **_betas(o), **kw),
    # tf_keras's Adafactor multiplies its row and column factors before the square root; with
    # the paper's epsilon_1 = 1e-30 that product underflows to 0 for all-zero gradient rows
    # (inputs that are always 0, like the digits' border pixels) and 0 * inf gives NaN weights.
    # 1e-16 keeps the product representable in float32.
    "adafactor": lambda o, lr, **kw: keras.optimizers.Adafactor(lr, epsilon_1=1e-16, **kw),
    "lion": lambda o, lr, **kw: keras.optimizers.Lion(lr, **_betas(o, ("beta_1", "beta_2")), **kw),
    "lamb": lambda o, lr, **kw: _ours("lamb", "LAMB")(lr, **_betas(o), **kw),
    "muon": lambda o, lr, **kw: _ours("muon", "Muon")(lr, momentum=o.momentum, **_betas(o), **kw),
}


def build_optimizer(config, model, jit_compile=False):
    """The config's optimizer for `model` (call inside the strategy scope, after the model is built)."""
    o = config.optimizer
    lr = build_schedule(o, config.schedule, config.train.num_steps)
    kw = {
        "weight_decay": o.weight_decay or None,
        "global_clipnorm": o.global_clipnorm or None,
        "jit_compile": jit_compile,
    }
    if o.name == "adam":
        kw.pop("weight_decay")  # plain Adam (config.validate refuses a decay); adamw decouples it
    optimizer = OPTIMIZERS[o.name](o, lr, **kw)
    roles = roles_lib.variable_roles(model)
    pairs = [(v, roles[roles_lib.key(v)]) for v in model.trainable_variables]
    # Biases and norm parameters: no decay (and, for LAMB, no layer adaptation).
    optimizer.exclude_from_weight_decay(var_list=[v for v, r in pairs if not roles_lib.decays(r, v)])
    if hasattr(optimizer, "exclude_from_muon"):  # Muon for hidden matrices, AdamW for the rest
        matrices = [(v, r.matrix) for v, r in pairs if r.kind == "matrix"]
        optimizer.exclude_from_muon(var_list=[v for v, r in pairs if r.kind != "matrix"])
        optimizer.set_matrix_shapes([v for v, _ in matrices], [m for _, m in matrices])
    return optimizer


__all__ = ["OPTIMIZERS", "SCHEDULES", "WarmupSchedule", "build_optimizer",
           "build_schedule"]
