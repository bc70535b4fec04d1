"""The accumulating trainer: the batch you ask for is the batch the optimizer sees.

`AccumulatingModel` wraps any tf_keras network ("customize what happens in fit"). Its
`train_step` cuts each replica's batch into k micro-batches, runs them one after another with
`tf.while_loop` (autograph does not convert Python loops under tf_keras), and sums their
gradients in float32. Each micro-loss is the sum of its per-example losses divided by the
*global* batch size, so the accumulated gradient is the gradient of the mean loss over the whole
global batch, for any k and any number of replicas. The optimizer then applies it once: one
all-reduce and one step of the optimizer (and of its schedule and weight decay) per update.

Under mixed_float16 each micro-loss is scaled by the `LossScaleOptimizer`'s current scale and
its gradients unscaled before they are added up; the optimizer checks the aggregated gradient
and, if any value is not finite, skips the whole update and lowers the scale.
"""
import tensorflow as tf
import tf_keras as keras

LOSSES = {
    "sparse_categorical_crossentropy":
        lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "mse": lambda: keras.losses.MeanSquaredError(),
}


def per_example_loss_fn(loss):
    """A function (y_true, y_pred) -> one loss per example, from a Keras loss or callable.

    Keras `Loss` objects reduce over the batch; their `call` does not. Losses with more than
    one value per example (per token, per pixel) are averaged within the example.
    """
    if isinstance(loss, str):
        loss = LOSSES[loss]() if loss in LOSSES else keras.losses.get(loss)
    fn = loss.call if isinstance(loss, keras.losses.Loss) else loss

    def per_example(y_true, y_pred):
        values = tf.cast(fn(y_true, y_pred), tf.float32)
        if values.shape.rank and values.shape.rank > 1:
            values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
        return values

    return per_example


def _split(tensor, k):
    """[b, ...] -> [k, b/k, ...]."""
    return tf.reshape(tensor, tf.concat([[k, -1], tf.shape(tensor)[1:]], axis=0))


def _dense(grad, variable):
    if grad is None:
        return tf.zeros(variable.shape, tf.float32)
    return tf.cast(tf.convert_to_tensor(grad), tf.float32)  # IndexedSlices -> dense


class AccumulatingModel(keras.Model):
    """Trains `network` with `accum_steps` micro-batches per optimizer update.

    Compile it like any Keras model; `loss` may be a Keras loss, a callable returning one loss
    per example, or a name from `LOSSES`. `test_step` and `predict` behave as usual.
    """

    unroll_micro_batches = False  # True: a Python loop over the k micro-batches (see train_step)

    def __init__(self, network, accum_steps=1, **kwargs):
        super().__init__(name=kwargs.pop("name", "accumulating"), **kwargs)
        if accum_steps < 1:
            raise ValueError(f"accum_steps must be >= 1, got {accum_steps}")
        self.network = network
        self.accum_steps = int(accum_steps)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self._per_example_loss = None

    def compile(self, optimizer="sgd", loss=None, metrics=None, **kwargs):
        if loss is None:
            raise ValueError("AccumulatingModel.compile needs a loss")
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self._per_example_loss = per_example_loss_fn(loss)

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    @property
    def metrics(self):
        compiled = getattr(self, "compiled_metrics", None)
        return [self.loss_tracker] + (compiled.metrics if compiled is not None else [])

    def _loss_scaling(self):
        return isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer)

    def _regularization(self):
        return tf.add_n(self.network.losses) if self.network.losses else tf.constant(0.0)

    def training_losses(self, x, y, y_pred):
        """One training loss per example; subclasses (e.g. distillation) may also look at `x`."""
        del x
        return self._per_example_loss(y, y_pred)

    def _micro_step(self, x, y, sample_weight, global_batch, reg_share):
        """Gradients (float32, unscaled) of one micro-batch's share of the update's loss."""
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            y_pred = self.network(x, training=True)
            per_example = self.training_losses(x, y, tf.cast(y_pred, tf.float32))
            if sample_weight is not None:
                per_example = per_example * tf.cast(sample_weight, tf.float32)
            reg = tf.cast(self._regularization(), tf.float32)
            loss = tf.reduce_sum(per_example) / global_batch + reg * reg_share
            if self._loss_scaling():
                loss = self.optimizer.get_scaled_loss(loss)
        grads = tape.gradient(loss, variables)
        if self._loss_scaling():
            grads = self.optimizer.get_unscaled_gradients(grads)
        rows = tf.cast(tf.shape(per_example)[0], tf.float32)
        self.loss_tracker.update_state(tf.reduce_sum(per_example) / rows + reg, sample_weight=rows)
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return [_dense(g, v) for g, v in zip(grads, variables)]

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        k = self.accum_steps
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        rows = tf.shape(tf.nest.flatten(x)[0])[0]
        global_batch = tf.cast(rows * replicas, tf.float32)
        reg_share = 1.0 / (k * replicas)  # the regularizer counts once per update
        micro = tf.nest.map_structure(lambda t: _split(t, k), (x, y))
        micro_weight = None if sample_weight is None else _split(sample_weight, k)

        def step(i):
            xi, yi = tf.nest.map_structure(lambda t: t[i], micro)
            swi = None if micro_weight is None else micro_weight[i]
            return self._micro_step(xi, yi, swi, global_batch, reg_share)

        if k == 1:
            grads = step(0)
        elif self.unroll_micro_batches:
            # Layers that synchronise replicas in their forward pass (tfmot's pruning and
            # quantization wrappers) cannot run inside a loop under a multi-replica strategy.
            grads = step(0)
            for i in range(1, k):
                grads = [a + g for a, g in zip(grads, step(i))]
        else:
            # All k micro-batches run inside one loop: a first one peeled off before it would be
            # a second graph region whose buffers the loop cannot reuse (~1.3x peak memory).
            zeros = [tf.zeros(v.shape, tf.float32) for v in self.network.trainable_variables]
            _, grads = tf.while_loop(
                lambda i, _: i < k,
                lambda i, acc: (i + 1, [a + g for a, g in zip(acc, step(i))]),
                (tf.constant(0), zeros),
                parallel_iterations=1,  # one micro-batch in memory at a time
            )
        self.optimizer.apply_gradients(zip(grads, self.network.trainable_variables))
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self.network(x, training=False)
        per_example = self._per_example_loss(y, tf.cast(y_pred, tf.float32))
        reg = tf.cast(self._regularization(), tf.float32)
        self.loss_tracker.update_state(per_example + reg, sample_weight=sample_weight)
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return {m.name: m.result() for m in self.metrics}
