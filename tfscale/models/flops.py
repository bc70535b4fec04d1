"""FLOP counts from a built model's layers (mlp, cnn; the LM's are in `card.py`).

Convention (Kaplan et al. 2020): a multiply-add is 2 FLOPs and training costs 3x the forward
pass (forward + backward through activations and weights), i.e. ~6 FLOPs per parameter per
example for dense layers. Element-wise ops (activations, norms, pooling) are not counted.
"""
import numpy as np
import tf_keras as keras


def _shape(t):
    return [int(d) for d in t.shape[1:]]


def layer_forward_flops(layer):
    """Forward FLOPs per example of one layer (0 for layers without weights-times-activations)."""
    if isinstance(layer, keras.layers.Dense):
        rows = int(np.prod(_shape(layer.input)[:-1])) if len(_shape(layer.input)) > 1 else 1
        return 2 * rows * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        out_positions = int(np.prod(_shape(layer.output)[:-1]))
        macs_per_position = int(np.prod(layer.kernel.shape))  # k... x cin/groups x cout
        return 2 * out_positions * macs_per_position
    if isinstance(layer, keras.Model):
        return sum(layer_forward_flops(l) for l in layer.layers)
    return 0


def forward_flops_per_example(model):
    return sum(layer_forward_flops(l) for l in model.layers)


def training_flops(model):
    """Training FLOPs per example of a model made of the layers above: 3x forward."""
    return 3 * forward_flops_per_example(model)
