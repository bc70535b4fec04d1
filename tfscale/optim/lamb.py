"""LAMB: layer-wise adaptive moments for large batches.

You et al. 2019, "Large Batch Optimization for Deep Learning: Training BERT in 76 Minutes"
(arXiv:1904.00962). Adam's bias-corrected step r = m_hat / (sqrt(v_hat) + eps) + wd * w is
rescaled per variable by the trust ratio ||w|| / ||r||, so every layer moves by a similar
fraction of its norm whatever the batch size. That is why it pairs with gradient accumulation:
large effective batches without retuning per layer. tf_keras 2.21 has no LAMB.

Weight decay is part of r (it enters the trust ratio), so the base class's decoupled decay is
switched off. Variables excluded from decay with `exclude_from_weight_decay` (the framework
excludes biases and norm parameters) are also excluded from layer adaptation (trust ratio 1),
as in the BERT reference implementation.
"""
import tensorflow as tf
import tf_keras as keras


class LAMB(keras.optimizers.Optimizer):
    """Adam's arguments plus `weight_decay` (inside the trust ratio); the base keyword arguments
    (clipnorm, global_clipnorm, jit_compile, use_ema, ...) pass through."""

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-6, weight_decay=0.0,
                 name="LAMB", **kwargs):
        super().__init__(name=name, weight_decay=weight_decay or 0.0, **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def build(self, var_list):
        super().build(var_list)
        if getattr(self, "_built", False):
            return
        self._built = True
        self._momentums = [self.add_variable_from_reference(v, "m") for v in var_list]
        self._velocities = [self.add_variable_from_reference(v, "v") for v in var_list]

    def _apply_weight_decay(self, variables):
        """Decay is applied inside `update_step`, where it enters the trust ratio."""

    def update_step(self, gradient, variable):
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]
        grad = tf.cast(tf.convert_to_tensor(gradient), dtype)  # sparse (embedding) grads: dense
        m.assign_add((grad - m) * (1 - beta_1))
        v.assign_add((tf.square(grad) - v) * (1 - beta_2))
        m_hat = m / (1 - tf.pow(beta_1, step))
        v_hat = v / (1 - tf.pow(beta_2, step))
        update = m_hat / (tf.sqrt(v_hat) + self.epsilon)
        if self._use_weight_decay(variable):
            if self.weight_decay:
                update += tf.cast(self.weight_decay, dtype) * variable
            w_norm, u_norm = tf.norm(variable), tf.norm(update)
            trust = tf.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, tf.ones_like(w_norm))
            update *= trust
        variable.assign_sub(lr * update)

    def get_config(self):
        config = super().get_config()  # has weight_decay
        config.update(learning_rate=self._serialize_hyperparameter(self._learning_rate),
                      beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return config
