"""The accumulating trainer: the batch you ask for is the batch the optimizer sees.

`AccumulatingModel` wraps any tf_keras network ("customize what happens in fit"). Its
`train_step` cuts each replica's batch into k micro-batches, runs them one after another with
`tf.while_loop` (autograph does not convert Python loops under tf_keras), and sums their
gradients in float32. The loss of an update is the weighted mean over the whole global batch,
sum(w * loss) / sum(w) with w = 1 without sample weights, plus the regularization losses once;
sum(w) is all-reduced across replicas, so the summed gradient is that loss's gradient for any k,
any number of replicas and uneven replica batches (a partial last batch: rows that k does not
divide, or an empty replica, are filled with zero rows of weight 0, which only batch statistics
see). Keras' compiled losses divide by the number of rows instead. Evaluation reports the same weighted mean, and in every
metric a row of weight 0 does not count (unweighted metrics otherwise ignore sample weights).
The optimizer then applies the update once: one step of the optimizer (and of its schedule and
weight decay).

Metrics are updated once per update, after the loop, from the update's loss and the replica's
predictions of all k micro-batches, so any compiled metric sees what it would see for one batch;
inside the loop every metric update would be a cross-replica step on TPU (Keras metrics
aggregate on write there). The predictions are kept until the loop ends (float32, b x outputs
per replica; for a language model b x T x vocabulary).

Under mixed_float16 each micro-loss is scaled by the `LossScaleOptimizer`'s current scale and
its gradients unscaled before they are added up; the optimizer checks the aggregated gradient
and, if any value is not finite, skips the whole update and lowers the scale.

Divergence: an update whose loss or aggregated gradients are not finite is not applied, neither
is any later one, and `diverged_at` records its number (`diverged_step()`). Under dynamic loss
scaling this holds only once the scale is down to 1; above it, skipping and lowering the scale
is the optimizer's normal response to float16 overflow.

A network may carry `update_scale` (an `UpdateScale`, set by its builder, e.g. a fine-tuned
encoder's body): the update of those variables is multiplied by a factor, 0 for the first
`frozen_steps` updates. Applied after the optimizer's step as w_old + factor * (w_new - w_old),
which for SGD, Adam and AdamW (decoupled decay included) is exactly a learning rate times the
factor for those variables; their optimizer moments keep accumulating while frozen.
"""
import tensorflow as tf
import tf_keras as keras

from tfscale import precision
from tfscale.data.info import IGNORED  # a target that counts for nothing (masked-LM data)
from tfscale.errors import ConfigError



class UpdateScale:
    """The learning-rate factor of some of a network's layers: `factor` times the optimizer's,
    and 0 (frozen) for the first `frozen_steps` updates."""

    def __init__(self, layer_names, factor=1.0, frozen_steps=0):
        self.layer_names, self.factor, self.frozen_steps = tuple(layer_names), float(factor), int(frozen_steps)

    def active(self):
        return self.factor != 1.0 or self.frozen_steps > 0

    def variables(self, network):
        """The trainable variables of the scaled layers."""
        return [v for name in self.layer_names for v in network.get_layer(name).trainable_variables]

    def at(self, step):
        """The factor at optimizer update `step` (0-based), a float32 tensor."""
        return tf.where(tf.cast(step, tf.int64) < self.frozen_steps, 0.0, self.factor)


def masked_lm_loss(y_true, y_pred):
    """Cross-entropy per example, averaged over its positions whose target is not IGNORED (the
    masked ones); an example with none scores 0."""
    y_true = tf.cast(y_true, tf.int32)
    counted = tf.cast(y_true != IGNORED, tf.float32)
    losses = keras.losses.sparse_categorical_crossentropy(tf.maximum(y_true, 0), y_pred, from_logits=True)
    return tf.reduce_sum(losses * counted, axis=-1) / tf.maximum(tf.reduce_sum(counted, axis=-1), 1.0)


class MaskedAccuracy(keras.metrics.Mean):
    """Accuracy over the positions whose target is not IGNORED (and rows that count)."""

    def __init__(self, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):  # pylint: disable=arguments-differ
        y_true = tf.cast(y_true, tf.int32)
        counted = tf.cast(y_true != IGNORED, tf.float32)
        if sample_weight is not None:  # one weight per row (or per position): broadcast over positions
            w = tf.cast(sample_weight, tf.float32)
            counted *= tf.reshape(w, tf.concat([tf.shape(w), tf.ones([tf.rank(counted) - tf.rank(w)], tf.int32)], 0))
        correct = tf.cast(tf.equal(tf.argmax(y_pred, -1, output_type=tf.int32), y_true), tf.float32)
        return super().update_state(correct, sample_weight=counted)


LOSSES = {
    "sparse_categorical_crossentropy":
        lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "masked_lm": lambda: masked_lm_loss,
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


_ACCURACY = {"sparse_categorical_crossentropy": lambda: keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
             "masked_lm": lambda: MaskedAccuracy()}  # pylint: disable=unnecessary-lambda


def measured(loss):
    """The figures an evaluation of a model compiled with `loss` reports, known before it runs."""
    return ("loss", "accuracy") if loss in _ACCURACY else ("loss",)


def compile_model(model, optimizer, loss, **kwargs):
    """Compiles `model` as every run and fine-tuning phase is: `loss`, plus accuracy (per token
    for LMs) when it is sparse categorical cross-entropy. `kwargs` go to `compile`."""
    metrics = [_ACCURACY[loss]()] if loss in _ACCURACY else []
    # weighted_metrics=[]: the sample weights reach the metrics as a mask (test_step), on purpose.
    model.compile(optimizer, loss=loss, metrics=metrics, weighted_metrics=[], **kwargs)


def _split(tensor, k):
    """[b, ...] -> [k, m, ...], m = max(ceil(b / k), 1): zero rows fill up a batch that k does
    not divide or that is empty (a partial last batch); `train_step` gives them weight 0."""
    rows = tf.shape(tensor)[0]
    pad = tf.maximum((rows + k - 1) // k, 1) * k - rows
    tensor = tf.pad(tensor, [[0, pad]] + [[0, 0]] * (tensor.shape.rank - 1))
    return tf.reshape(tensor, tf.concat([[k, -1], tf.shape(tensor)[1:]], axis=0))


def _row_weights(sample_weight, rows):
    """One float32 weight per example: the sample weights, or ones."""
    if sample_weight is None:
        return tf.ones([rows], tf.float32)
    return tf.reshape(tf.cast(sample_weight, tf.float32), [rows])


def _metric_mask(y_pred, weight):
    """1 where metrics count: rows of nonzero weight (padding has 0), within any Keras mask the
    network put on its output. Unweighted metrics ignore sample weights, but not this mask."""
    keep = tf.cast(weight > 0, tf.float32)
    mask = getattr(y_pred, "_keras_mask", None)
    if mask is None:
        return keep
    return tf.cast(mask, tf.float32) * tf.reshape(keep, [-1] + [1] * (mask.shape.rank - 1))


def _dense(grad, variable):
    if grad is None:
        return tf.zeros(variable.shape, tf.float32)
    return tf.cast(tf.convert_to_tensor(grad), tf.float32)  # IndexedSlices -> dense


def _on_every_replica_unless(skip, fn, *args):
    """fn(*args) on every replica unless `skip` (the same on all of them). Strategies that
    synchronise replicas through merge_call cannot do so inside a replica's tf.cond: there the
    cond runs in cross-replica context, as in Keras' LossScaleOptimizer."""
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(skip, lambda: None, lambda: fn(*args))
        return

    def cross_replica(strategy, skip, *args):
        tf.cond(strategy.experimental_local_results(skip)[0], lambda: None,
                lambda: strategy.extended.call_for_each_replica(fn, args=args))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(skip, *args))


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
        # Assigned the same value on every replica: the first replica's is kept.
        self.diverged_at = tf.Variable(-1, dtype=tf.int64, trainable=False, name="diverged_at",
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

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

    def diverged_step(self):
        """None, or the update (1-based) whose loss or gradients were not finite; neither it nor
        any later update was applied (assign -1 to `diverged_at` to train again)."""
        step = int(self.diverged_at.numpy())
        return None if step < 0 else step

    def _loss_scaling(self):
        return isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer)

    def _regularization(self):
        return tf.add_n(self.network.losses) if self.network.losses else tf.constant(0.0)

    def training_losses(self, x, y, y_pred):
        """One training loss per example; subclasses (e.g. distillation) may also look at `x`."""
        del x
        return self._per_example_loss(y, y_pred)

    def _micro_step(self, x, y, weight, total_weight, reg_share):
        """Gradients (float32, unscaled), loss, and (predictions, metric mask) of one
        micro-batch's share of the update."""
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            output = self.network(x, training=True)
            y_pred = tf.cast(output, tf.float32)
            weighted = tf.reduce_sum(self.training_losses(x, y, y_pred) * weight)
            reg = tf.cast(self._regularization(), tf.float32)
            loss = tf.math.divide_no_nan(weighted, total_weight) + reg * reg_share
            scaled = self.optimizer.get_scaled_loss(loss) if self._loss_scaling() else loss
        grads = tape.gradient(scaled, variables)
        if self._loss_scaling():
            grads = self.optimizer.get_unscaled_gradients(grads)
        grads = [_dense(g, v) for g, v in zip(grads, variables)]
        return grads, loss, (y_pred, _metric_mask(output, weight))

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        k, ctx = self.accum_steps, tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync
        rows = tf.shape(tf.nest.flatten(x)[0])[0]
        weight = _row_weights(sample_weight, rows)
        total_weight = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(weight))
        reg_share = 1.0 / (k * replicas)  # the regularizer counts once per update
        micro = tf.nest.map_structure(lambda t: _split(t, k), (x, y, weight))

        def add(i, grads, loss, outputs):
            xi, yi, wi = tf.nest.map_structure(lambda t: t[i], micro)
            g, l, out = self._micro_step(xi, yi, wi, total_weight, reg_share)
            grads = g if grads is None else [a + b for a, b in zip(grads, g)]
            return i + 1, grads, loss + l, [ta.write(i, t) for ta, t in zip(outputs, out)]

        state = (0, None, 0.0, [tf.TensorArray(tf.float32, size=k) for _ in range(2)])
        if k == 1 or self.unroll_micro_batches:
            # Layers that synchronise replicas in their forward pass (tfmot's pruning and
            # quantization wrappers) cannot run inside a loop under a multi-replica strategy.
            for _ in range(k):
                state = add(*state)
        else:
            # All k micro-batches run inside one loop: a first one peeled off before it would be
            # a second graph region whose buffers the loop cannot reuse (~1.3x peak memory).
            zeros = [tf.zeros(v.shape, tf.float32) for v in self.network.trainable_variables]
            state = tf.while_loop(lambda i, *_: i < k, add, (0, zeros, *state[2:]),
                                  parallel_iterations=1)  # one micro-batch in memory at a time
        _, grads, loss, outputs = state
        loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss)  # the update's, on every replica
        self._apply_unless_diverged(loss, grads)
        # Once per update, outside the loop; each replica adds 1/replicas of the update's weight.
        self.loss_tracker.update_state(loss, sample_weight=total_weight / replicas)
        y_pred, mask = [ta.concat()[:rows] for ta in outputs]
        y_pred._keras_mask = mask
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return {m.name: m.result() for m in self.metrics}

    def _apply_unless_diverged(self, loss, grads):
        """Applies the update unless it, or an earlier one, diverged (see the module doc).

        Gradients are all-reduced here, so the decision is the same on every replica.
        """
        variables = self.network.trainable_variables
        grads = [g for g, _ in precision.inner_optimizer(self.optimizer).aggregate_gradients(
            list(zip(grads, variables)))]
        finite = tf.reduce_all([tf.math.is_finite(loss)]
                               + [tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        diverges = tf.logical_not(finite)
        if self._loss_scaling() and self.optimizer.dynamic:  # it skips and lowers the scale
            diverges &= self.optimizer.loss_scale <= 1.0
        self.diverged_at.assign(tf.where(diverges & (self.diverged_at < 0),
                                         self.optimizer.iterations + 1, self.diverged_at))

        scale = getattr(self.network, "update_scale", None)
        scaled = scale.variables(self.network) if scale is not None and scale.active() else []
        if scaled and tf.distribute.get_replica_context().num_replicas_in_sync > 1:
            raise ConfigError("a network's update_scale (the encoder's body_learning_rate, frozen_body_steps) "
                              "trains on one replica only")

        def apply(grads):
            factor = scale.at(self.optimizer.iterations) if scaled else None
            before = [tf.identity(v) for v in scaled]
            self.optimizer.apply_gradients(zip(grads, variables), skip_gradients_aggregation=True)
            for v, old in zip(scaled, before):
                v.assign(old + tf.cast(factor, v.dtype) * (v - old))

        _on_every_replica_unless(self.diverged_at >= 0, apply, grads)

    def test_step(self, data):
        """The weighted mean loss of training; rows of weight 0 (padding) count for nothing."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self.network(x, training=False)
        per_example = self._per_example_loss(y, tf.cast(y_pred, tf.float32))
        reg = tf.cast(self._regularization(), tf.float32)
        weight = _row_weights(sample_weight, tf.shape(per_example)[0])
        self.loss_tracker.update_state(per_example + reg, sample_weight=weight)
        y_pred._keras_mask = _metric_mask(y_pred, weight)
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return {m.name: m.result() for m in self.metrics}
