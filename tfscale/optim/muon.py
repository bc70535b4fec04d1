"""Muon: momentum orthogonalised by Newton–Schulz (Jordan et al. 2024,
https://kellerjordan.github.io/posts/muon/), with the update-RMS matching of Liu et al. 2025
("Muon is Scalable for LLM Training", arXiv:2502.16982) so one learning rate and one schedule
serve both parameter groups. tf_keras 2.21 has no Muon.

Hidden weight matrices (rank >= 2; conv kernels flattened to (k*k*cin, cout)) take the Nesterov
momentum of their gradient, replace it by the nearest semi-orthogonal matrix (5 quintic
Newton–Schulz iterations), and step by lr * 0.2 * sqrt(max(rows, cols)) times that. Everything
else (biases, norms, and what `exclude_from_muon` names: embeddings and the output layer) gets
AdamW. Weight decay is decoupled for both groups and honours `exclude_from_weight_decay`.
"""
import tensorflow as tf
import tf_keras as keras

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(matrix, steps=5):
    """Approximately U V^T of the SVD U S V^T of a 2-D float32 matrix (singular values ~1)."""
    a, b, c = NS_COEFFICIENTS
    transpose = matrix.shape[0] > matrix.shape[1]
    x = tf.transpose(matrix) if transpose else matrix
    x = x / (tf.norm(x) + 1e-7)
    for _ in range(steps):
        gram = tf.matmul(x, x, transpose_b=True)
        x = a * x + tf.matmul(b * gram + c * tf.matmul(gram, gram), x)
    return tf.transpose(x) if transpose else x


class Muon(keras.optimizers.Optimizer):

    def __init__(self, learning_rate=0.02, momentum=0.95, nesterov=True, ns_steps=5, beta_1=0.9,
                 beta_2=0.95, epsilon=1e-8, weight_decay=0.0, name="Muon", **kwargs):
        super().__init__(name=name, weight_decay=None, **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.momentum, self.nesterov, self.ns_steps = momentum, nesterov, ns_steps
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.decay_rate = weight_decay or 0.0
        self._exclude_from_muon, self._exclude_from_muon_names = set(), []

    def exclude_from_muon(self, var_list=None, var_names=None):
        """Variables (or name fragments) that get AdamW although they are matrices; call before build."""
        if getattr(self, "_built", False):
            raise ValueError("exclude_from_muon() must be called before the optimizer is built")
        self._exclude_from_muon = {self._var_key(v) for v in var_list or []}
        self._exclude_from_muon_names = list(var_names or [])

    def uses_muon(self, variable):
        return (variable.shape.rank >= 2
                and self._var_key(variable) not in self._exclude_from_muon
                and not any(n in variable.name for n in self._exclude_from_muon_names))

    def build(self, var_list):
        super().build(var_list)
        if getattr(self, "_built", False):
            return
        self._built = True
        self._slots = {}
        for v in var_list:
            names = ("momentum",) if self.uses_muon(v) else ("m", "v")
            self._slots[self._var_key(v)] = [self.add_variable_from_reference(v, n) for n in names]

    def _apply_weight_decay(self, variables):
        """Decay is applied in `update_step`, with the same learning rate as the update."""

    def update_step(self, gradient, variable):
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        grad = tf.cast(tf.convert_to_tensor(gradient), dtype)
        if self.decay_rate and self._use_weight_decay(variable):
            variable.assign_sub(lr * tf.cast(self.decay_rate, dtype) * variable)
        slots = self._slots[self._var_key(variable)]
        if self.uses_muon(variable):
            variable.assign_sub(lr * self._muon_direction(grad, slots[0]))
        else:
            variable.assign_sub(lr * self._adam_direction(grad, *slots))

    def _muon_direction(self, grad, buf):
        buf.assign(self.momentum * buf + grad)
        direction = grad + self.momentum * buf if self.nesterov else tf.identity(buf)
        shape = direction.shape
        matrix = tf.reshape(tf.cast(direction, tf.float32), [-1, shape[-1]])
        rows, cols = matrix.shape
        orthogonal = newton_schulz(matrix, self.ns_steps) * (0.2 * max(rows, cols) ** 0.5)
        return tf.cast(tf.reshape(orthogonal, shape), direction.dtype)

    def _adam_direction(self, grad, m, v):
        step = tf.cast(self.iterations + 1, grad.dtype)
        m.assign(self.beta_1 * m + (1 - self.beta_1) * grad)
        v.assign(self.beta_2 * v + (1 - self.beta_2) * tf.square(grad))
        m_hat = m / (1 - tf.pow(tf.cast(self.beta_1, grad.dtype), step))
        v_hat = v / (1 - tf.pow(tf.cast(self.beta_2, grad.dtype), step))
        return m_hat / (tf.sqrt(v_hat) + self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update(learning_rate=self._serialize_hyperparameter(self._learning_rate),
                      momentum=self.momentum, nesterov=self.nesterov, ns_steps=self.ns_steps,
                      beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon,
                      weight_decay=self.decay_rate)
        return config
