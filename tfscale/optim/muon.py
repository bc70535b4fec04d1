"""Muon: MomentUm Orthogonalized by Newton–Schulz.

Jordan et al. 2024 (https://kellerjordan.github.io/posts/muon/), with the update-RMS matching of
Liu et al. 2025 ("Muon is Scalable for LLM Training", arXiv:2502.16982) so one learning rate and
one schedule serve both parameter groups. tf_keras 2.21 has no Muon.

Hidden weight matrices take the Nesterov momentum of their gradient, viewed as the 2-D
(fan_in, fan_out) matrix of the linear map (`set_matrix_shapes`; by default
(prod(shape[:-1]), shape[-1]), right for Dense and conv kernels), replace it by the nearest
semi-orthogonal matrix (quintic Newton–Schulz iterations), and step by
lr * 0.2 * sqrt(max(fan_in, fan_out)) times that: an update RMS of about 0.2, like AdamW's.
Vectors and what `exclude_from_muon` names get AdamW; the framework gives Muon only the
variables whose role (`tfscale.optim.roles`) is "matrix", with their shapes. Weight decay is
decoupled (w -= lr * wd * w) for both groups and honours `exclude_from_weight_decay`.
"""
import math
import re

import tensorflow as tf
import tf_keras as keras

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(matrix, steps=5):
    """Roughly U V^T of the SVD U S V^T of a 2-D matrix: all singular values pulled near 1.

    The quintic's coefficients trade exactness (singular values end up roughly in [0.6, 1.2]) for
    fast growth of the small ones. It runs on the wide orientation, where the Gram matrix is
    the smaller one, and in float32 whatever the input's dtype.
    """
    a, b, c = NS_COEFFICIENTS
    transpose = matrix.shape[0] > matrix.shape[1]
    x = tf.cast(tf.transpose(matrix) if transpose else matrix, tf.float32)
    x = x / (tf.norm(x) + 1e-7)  # spectral norm <= Frobenius norm <= 1: inside the basin
    for _ in range(steps):
        gram = tf.matmul(x, x, transpose_b=True)
        x = a * x + tf.matmul(b * gram + c * tf.matmul(gram, gram), x)
    return tf.transpose(x) if transpose else x


class Muon(keras.optimizers.Optimizer):
    """Muon for hidden matrices, AdamW (beta_1, beta_2, epsilon) for the rest, one learning rate
    and one `weight_decay`; the base keyword arguments (clipnorm, global_clipnorm, jit_compile,
    ...) pass through."""

    def __init__(self, learning_rate=0.02, momentum=0.95, nesterov=True, ns_steps=5, beta_1=0.9,
                 beta_2=0.95, epsilon=1e-8, weight_decay=0.0, name="Muon", **kwargs):
        super().__init__(name=name, weight_decay=weight_decay or 0.0, **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.momentum, self.nesterov, self.ns_steps = momentum, nesterov, ns_steps
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def exclude_from_muon(self, var_list=None, var_names=None):
        """Matrices that get AdamW instead (by variable, or by regex on the name), like
        `exclude_from_weight_decay`; call before build, as slots depend on it."""
        if getattr(self, "_built", False):
            raise ValueError("`exclude_from_muon()` can only be configured before the optimizer is built.")
        self._exclude_from_muon = [self._var_key(v) for v in var_list or []]
        self._exclude_from_muon_names = list(var_names or [])

    def set_matrix_shapes(self, var_list, shapes):
        """The (fan_in, fan_out) matrix each variable of `var_list` is orthogonalised as (its
        elements in row-major order); call before build."""
        if getattr(self, "_built", False):
            raise ValueError("`set_matrix_shapes()` can only be configured before the optimizer is built.")
        self._matrix_shapes = {}
        for v, (rows, cols) in zip(var_list, shapes):
            if rows * cols != v.shape.num_elements():
                raise ValueError(f"{v.name} of shape {v.shape} is no ({rows}, {cols}) matrix")
            self._matrix_shapes[self._var_key(v)] = (int(rows), int(cols))

    def matrix_shape(self, variable):
        """The 2-D view of `variable` that Muon orthogonalises."""
        shape = variable.shape.as_list()
        default = (math.prod(shape[:-1]), shape[-1])
        return getattr(self, "_matrix_shapes", {}).get(self._var_key(variable), default)

    def uses_muon(self, variable):
        """Whether `variable` takes the Muon update (else AdamW)."""
        names = getattr(self, "_exclude_from_muon_names", [])
        return (variable.shape.rank >= 2
                and self._var_key(variable) not in getattr(self, "_exclude_from_muon", [])
                and not any(re.search(n, variable.name) for n in names))

    def build(self, var_list):
        super().build(var_list)
        if getattr(self, "_built", False):
            return
        self._built = True
        # Slot lists aligned with var_list, as in Adam (stable checkpoint names); None where a
        # variable needs no such slot: a momentum buffer for Muon, m and v for AdamW.
        self._momentums, self._m, self._v = [], [], []
        for var in var_list:
            muon = self.uses_muon(var)
            self._momentums.append(self.add_variable_from_reference(var, "momentum") if muon else None)
            self._m.append(None if muon else self.add_variable_from_reference(var, "m"))
            self._v.append(None if muon else self.add_variable_from_reference(var, "v"))

    def _apply_weight_decay(self, variables):
        """Decay is applied in `update_step`, with the same learning rate as the update."""

    def update_step(self, gradient, variable):
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        grad = tf.cast(tf.convert_to_tensor(gradient), dtype)
        index = self._index_dict[self._var_key(variable)]
        if self.weight_decay and self._use_weight_decay(variable):
            variable.assign_sub(lr * tf.cast(self.weight_decay, dtype) * variable)
        if self.uses_muon(variable):
            direction = self._muon_direction(grad, self._momentums[index], self.matrix_shape(variable))
            variable.assign_sub(lr * direction)
        else:
            variable.assign_sub(lr * self._adam_direction(grad, self._m[index], self._v[index]))

    def _muon_direction(self, grad, buf, matrix_shape):
        momentum = tf.cast(self.momentum, grad.dtype)
        buf.assign(momentum * buf + grad)
        direction = grad + momentum * buf if self.nesterov else tf.convert_to_tensor(buf)
        matrix = tf.reshape(direction, matrix_shape)
        scale = 0.2 * max(matrix_shape) ** 0.5
        orthogonal = newton_schulz(matrix, self.ns_steps) * scale
        return tf.cast(tf.reshape(orthogonal, tf.shape(grad)), grad.dtype)

    def _adam_direction(self, grad, m, v):
        dtype = grad.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        m.assign_add((grad - m) * (1 - beta_1))
        v.assign_add((tf.square(grad) - v) * (1 - beta_2))
        m_hat = m / (1 - tf.pow(beta_1, step))
        v_hat = v / (1 - tf.pow(beta_2, step))
        return m_hat / (tf.sqrt(v_hat) + self.epsilon)

    def get_config(self):
        config = super().get_config()  # has weight_decay
        config.update(learning_rate=self._serialize_hyperparameter(self._learning_rate),
                      momentum=self.momentum, nesterov=self.nesterov, ns_steps=self.ns_steps,
                      beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return config
