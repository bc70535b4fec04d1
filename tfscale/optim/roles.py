"""What each trainable variable of a model is, from the layer that owns it.

Optimizers treat variables by role, not by rank or layer order: Muon orthogonalises hidden
matrices only, weight decay skips biases and norms. Roles:

- "matrix": the kernel of a hidden Dense, EinsumDense or Conv layer, with the 2-D
  (fan_in, fan_out) view of the linear map it applies (an EinsumDense inside
  MultiHeadAttention: query/key/value [d, heads*head_dim], output [heads*head_dim, d]; a conv:
  [kh*kw*cin, cout]);
- "output": the kernel of a layer that produces the model's outputs;
- "embedding": Embedding layers' tables and any weight named or held as `embeddings` (learned
  positions; a tied output layer reuses the token table, which stays an embedding);
- "bias": any layer's `bias`, whatever its rank (MultiHeadAttention's are [heads, head_dim]);
- "norm": the weights of normalisation layers;
- "other": anything else (e.g. a custom layer's weight, a grouped conv): never guessed at.
"""
import math
from typing import NamedTuple, Optional, Tuple

import tf_keras as keras

NORMS = (keras.layers.LayerNormalization, keras.layers.BatchNormalization,
         keras.layers.experimental.SyncBatchNormalization, keras.layers.GroupNormalization)
LINEAR = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv1D, keras.layers.Conv2D,
          keras.layers.Conv3D)  # the transposed convs subclass these


class Role(NamedTuple):
    kind: str  # matrix, output, embedding, bias, norm or other
    matrix: Optional[Tuple[int, int]] = None  # (fan_in, fan_out), for kind "matrix"


def key(variable):
    """The identity the tf_keras optimizers key variables by (the same under a strategy)."""
    return variable._unique_id  # pylint: disable=protected-access


def decays(role, variable):
    """Weight decay skips biases and norms; an unknown vector is treated like one, as before."""
    return role.kind not in ("bias", "norm") and not (role.kind == "other" and variable.shape.rank <= 1)


def _einsum_matrix(equation, shape):
    """(fan_in, fan_out) of an EinsumDense kernel: its axes summed with the input, then its axes
    that reach the output, in that order; None where the kernel is not one such matrix."""
    inputs, rest = equation.split(",")
    kernel, output = rest.split("->")
    inputs, output = inputs.replace("...", ""), output.replace("...", "")
    if len(kernel) != len(shape):
        return None
    summed = [a in inputs and a not in output for a in kernel]
    kept = [a in output and a not in inputs for a in kernel]
    n = sum(summed)
    if not all(s or k for s, k in zip(summed, kept)) or summed != [True] * n + [False] * (len(shape) - n):
        return None
    return (math.prod(shape[:n]), math.prod(shape[n:])) if 0 < n < len(shape) else None


def _matrix(layer, shape):
    shape = [int(d) for d in shape]
    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_matrix(layer.equation, shape)
    if isinstance(layer, keras.layers.Dense):
        return tuple(shape) if len(shape) == 2 else None
    if getattr(layer, "groups", 1) != 1 or len(shape) < 3:  # grouped: block-diagonal
        return None
    return (math.prod(shape[:-1]), shape[-1])  # (k..., cin, cout); transposed: (k..., cout, cin)


def output_layers(model):
    """The layers whose results are the model's outputs, looking back through weightless
    single-input layers (activations, casts, reshapes). A model without a graph (subclassed):
    its last layer with a kernel."""
    if not getattr(model, "outputs", None):
        with_kernel = [l for l in model._flatten_layers() if getattr(l, "kernel", None) is not None]  # pylint: disable=protected-access
        return with_kernel[-1:]
    found = []
    for tensor in model.outputs:
        while True:
            layer, node_index, _ = tensor._keras_history  # pylint: disable=protected-access
            if isinstance(layer, keras.Model) and getattr(layer, "outputs", None):
                found += output_layers(layer)
                break
            inputs = layer._inbound_nodes[node_index].keras_inputs  # pylint: disable=protected-access
            if layer.weights or len(inputs) != 1:
                found.append(layer)
                break
            tensor = inputs[0]
    return found


def _role(layer, variable, is_output):
    name = variable.name.split("/")[-1].split(":")[0]
    if isinstance(layer, NORMS):
        return Role("norm")
    if name == "bias" or variable is getattr(layer, "bias", None):
        return Role("bias")
    if (isinstance(layer, keras.layers.Embedding) or name == "embeddings"
            or variable is getattr(layer, "embeddings", None)):
        return Role("embedding")
    if isinstance(layer, LINEAR) and variable is getattr(layer, "kernel", None):
        matrix = _matrix(layer, variable.shape)
        if matrix is not None:
            return Role("output") if is_output else Role("matrix", matrix)
    return Role("other")


def variable_roles(model):
    """{key(variable): Role} for every trainable variable of a built `model`."""
    outputs = output_layers(model)
    roles = {}
    for layer in model._flatten_layers(include_self=True):  # pylint: disable=protected-access
        is_output = any(layer is o for o in outputs)
        for variable in layer._trainable_weights:  # pylint: disable=protected-access
            roles.setdefault(key(variable), _role(layer, variable, is_output))
    return {key(v): roles.get(key(v), Role("other")) for v in model.trainable_variables}
