"""Knowledge distillation through the accumulating trainer.

The student's loss per example is `alpha * hard + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T)`
(Hinton et al. 2015): `hard` is the usual loss against the labels, p^T the softmax of logits / T,
and T^2 keeps the soft gradients' scale independent of T. For a language model the KL is taken
per token and averaged over the example, like the hard loss. The teacher runs in inference mode,
outside the gradient tape's variables, and is never updated.

A transfer set (`compress.distill.transfer_data`, the unlabelled-data distillation of
Tang et al. 2019 and TinyBERT) adds to every update `transfer_batch_size` inputs of another data
set that only the teacher labels: their label is UNLABELLED, so they carry the soft term alone.
The labelled batches stay exactly those the student trained alone sees.
"""
from absl import logging
import tensorflow as tf
import tf_keras as keras

from tfscale import data, io, models, trainer
from tfscale.errors import ConfigError

UNLABELLED = -2  # the label of a transfer-set example: the teacher's soft targets only
# (not trainer.IGNORED, -1, which marks the positions of a masked-LM example that count nothing)


def load_teacher(teacher_workdir, tconfig, run):
    """The trained network of another workdir (same data set; `tconfig` its config, from
    `workdir.load_config`), in the run's strategy scope."""
    if tconfig.data.name != run.config.data.name:
        raise ConfigError(f"teacher in {teacher_workdir} was trained on {tconfig.data.name!r}, "
                          f"not {run.config.data.name!r}")
    path = tf.train.latest_checkpoint(io.join(teacher_workdir, "checkpoints"))
    if path is None:
        raise ConfigError(f"teacher workdir {teacher_workdir} has no checkpoint")
    with run.strategy.scope():
        teacher = models.build(tconfig.model, run.data.info)
    tf.train.Checkpoint(network=teacher).restore(path).expect_partial()
    logging.info("teacher: %s (%d params) from %s", tconfig.model.name, models.num_params(teacher), path)
    return teacher


class DistillationModel(trainer.AccumulatingModel):
    """Trains `network` (the student) against labels and `teacher`'s logits."""

    def __init__(self, network, teacher, accum_steps=1, temperature=4.0, alpha=0.1, **kwargs):
        super().__init__(network, accum_steps, name=kwargs.pop("name", "distillation"), **kwargs)
        teacher.trainable = False
        self.teacher = teacher
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def training_losses(self, x, y, y_pred):
        labelled = y != UNLABELLED
        hard = self._per_example_loss(tf.where(labelled, y, tf.zeros_like(y)), y_pred)
        if labelled.shape.rank > 1:  # per-token labels: a transfer example is UNLABELLED throughout
            labelled = tf.reduce_any(labelled, axis=list(range(1, labelled.shape.rank)))
        hard *= tf.cast(labelled, hard.dtype)
        t = self.temperature
        teacher_logits = tf.stop_gradient(tf.cast(self.teacher(x, training=False), tf.float32))
        soft = keras.losses.kl_divergence(tf.nn.softmax(teacher_logits / t),
                                          tf.nn.softmax(y_pred / t))
        if soft.shape.rank > 1:  # per token: mean over the example, as the hard loss
            soft = tf.reduce_mean(soft, axis=list(range(1, soft.shape.rank)))
        return self.alpha * hard + (1.0 - self.alpha) * t * t * soft


def transfer_dataset_fn(run, transfer_data, transfer_batch_size, steps):
    """(global batch, seed) -> `dataset_fn(input_context)` whose every batch is the run's labelled
    batch followed by `transfer_batch_size` (0 = the same number) inputs of the data set named
    `transfer_data`, labelled UNLABELLED. Its inputs must have the shape and scale of the run's."""
    c = run.config.data.copy_and_resolve_references()
    c.unlock()
    c.name, c.mask_rate, c.train_examples = transfer_data, 0.0, 0
    transfer = data.load(c, run.config.model.get("seq_len"), run.config.seed)
    have, want = transfer.info, run.data.info
    if tuple(have.input_shape) != tuple(want.input_shape) or have.input_scale != want.input_scale:
        raise ConfigError(f"compress.distill.transfer_data {transfer_data!r} has inputs of shape "
                          f"{list(have.input_shape)} (scale {have.input_scale}), the run's data "
                          f"{list(want.input_shape)} (scale {want.input_scale})")
    logging.info("distillation transfer set: %s (%d training inputs)", transfer_data, have.num_train)

    def make(global_batch, seed):
        labelled_fn = run.data.train_dataset_fn(global_batch, seed, 0, steps)
        transfer_fn = transfer.train_dataset_fn(transfer_batch_size or global_batch, seed + 7919, 0, steps)

        def dataset_fn(ctx):
            def join(labelled, unlabelled):
                x, y = labelled[0], labelled[1]
                xt = tf.cast(unlabelled[0], x.dtype)
                yt = tf.fill(tf.concat([tf.shape(xt)[:1], tf.shape(y)[1:]], 0), tf.constant(UNLABELLED, y.dtype))
                return tf.concat([x, xt], 0), tf.concat([y, yt], 0)

            return tf.data.Dataset.zip((labelled_fn(ctx), transfer_fn(ctx))).map(join)

        return dataset_fn

    return make
