"""Magnitude pruning on a schedule counted in optimizer updates, 2:4 sparsity, strip, report.

tfmot's `PruneLowMagnitude` advances its `pruning_step` once per training forward pass, so with
k accumulated micro-batches its polynomial-decay schedule would run k times too fast (and its
`UpdatePruningStep` callback counts Keras batches, not updates). `PruningModel` drives the step
from the optimizer instead: before every micro-batch it sets each wrapper's step to the number of
updates done, so every micro-batch of update u prunes as tfmot's step u (1-based) says, and after
the update it re-applies the masks, so the weights are sparse after every update.
"""
import numpy as np
import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfscale import trainer
from tfscale.values import names
from tfscale.errors import ConfigError

PRUNABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
M_BY_N = (2, 4)


def copy(network):
    """A new network with the same architecture and weights (call in the strategy scope)."""
    clone = keras.models.clone_model(network)
    clone.set_weights(network.get_weights())
    return clone


def schedule(prune_config):
    p = prune_config
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=p.target_sparsity, begin_step=p.begin_step,
        end_step=p.end_step, frequency=p.frequency)


def expected_sparsity(prune_config, update):
    """The sparsity tfmot's schedule asks for after `update` optimizer updates (before rounding)."""
    p = prune_config
    if update < p.begin_step + p.frequency:
        return 0.0
    last = p.begin_step + (min(update, p.end_step) - p.begin_step) // p.frequency * p.frequency
    return float(schedule(p)(tf.constant(last, tf.int64))[1])


def _input_channels(layer):
    return int(layer.kernel.shape[-2])


def apply(network, prune_config, structured=False):
    """A copy of `network` with its Dense/Conv layers wrapped for pruning (not `exclude`).

    `structured`: 2:4 sparsity (2 of every 4 consecutive input-channel weights are zero), set
    at the first update and kept; layers whose input channels do not divide by 4 stay dense.
    """
    excluded = names(prune_config.exclude)
    layer_names = [l.name for l in network.layers]
    for name in excluded:
        if name not in layer_names:
            raise ConfigError(f"compress.prune.exclude names no layer {name!r}; the layers: "
                              f"{', '.join(layer_names)}")

    def wrap(layer):
        if not isinstance(layer, PRUNABLE) or layer.name in excluded:
            return layer
        if structured:
            if _input_channels(layer) % M_BY_N[1]:
                return layer
            return tfmot.sparsity.keras.prune_low_magnitude(layer, sparsity_m_by_n=M_BY_N)
        return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule(prune_config))

    # Wrapping a copy's layers keeps their trained weights and leaves `network` untouched.
    return keras.models.clone_model(copy(network), clone_function=wrap)


def wrappers(network):
    return [l for l in network.layers if isinstance(l, pruning_wrapper.PruneLowMagnitude)]


class PruningModel(trainer.AccumulatingModel):
    """The accumulating trainer for a network with pruning wrappers (see the module doc)."""

    unroll_micro_batches = True  # the wrappers synchronise replicas in their forward pass

    def __init__(self, network, accum_steps=1, **kwargs):
        super().__init__(network, accum_steps, **kwargs)
        self.wrappers = wrappers(network)
        if not self.wrappers:
            raise ConfigError(f"{network.name} has no layer left to prune (Dense/Conv layers "
                              "not in compress.prune.exclude)")

    def _micro_step(self, *args):
        step = tf.cast(self.optimizer.iterations, tf.int64)
        for layer in self.wrappers:  # the forward pass adds 1: this update's step, 1-based
            layer.pruning_step.assign(step)
        return super()._micro_step(*args)

    def train_step(self, data):
        logs = super().train_step(data)
        for layer in self.wrappers:
            layer.pruning_obj.weight_mask_op()
        return logs


def strip(network):
    """The network without pruning wrappers, with the sparse weights (for export)."""
    return tfmot.sparsity.keras.strip_pruning(network)


def _kernels(network):
    for layer in network.layers:
        inner = layer.layer if isinstance(layer, pruning_wrapper.PruneLowMagnitude) else layer
        if isinstance(inner, PRUNABLE):
            yield inner.name, inner.kernel.numpy()


def is_2x4(kernel):
    """Whether every 4 consecutive input-channel weights (per output and position) hold <= 2
    non-zeros: the layout sparse tensor cores and XNNPack's 2:4 kernels use."""
    k = np.moveaxis(kernel, -2, -1)  # input channels last
    if k.shape[-1] % M_BY_N[1]:
        return False
    groups = k.reshape(-1, M_BY_N[1])
    return bool(np.all(np.count_nonzero(groups, axis=1) <= M_BY_N[0]))


def sparsity_report(network):
    """Per layer: weights, zeros, sparsity, 2:4 pattern; plus the total over those layers."""
    layers = []
    for name, kernel in _kernels(network):
        zeros = int(kernel.size - np.count_nonzero(kernel))
        layers.append({"layer": name, "weights": int(kernel.size), "zeros": zeros,
                       "sparsity": zeros / kernel.size, "is_2x4": is_2x4(kernel)})
    total = sum(l["weights"] for l in layers)
    zeros = sum(l["zeros"] for l in layers)
    return {"layers": layers, "sparsity": zeros / total if total else 0.0}
