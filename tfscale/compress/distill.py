"""Knowledge distillation through the accumulating trainer.

The student's loss per example is `alpha * hard + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T)`
(Hinton et al. 2015): `hard` is the usual loss against the labels, p^T the softmax of logits / T,
and T^2 keeps the soft gradients' scale independent of T. For a language model the KL is taken
per token and averaged over the example, like the hard loss. The teacher runs in inference mode,
outside the gradient tape's variables, and is never updated.
"""
from absl import logging
import tensorflow as tf
import tf_keras as keras

from tfscale import io, models, trainer
from tfscale.errors import ConfigError


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
        hard = self._per_example_loss(y, y_pred)
        t = self.temperature
        teacher_logits = tf.stop_gradient(tf.cast(self.teacher(x, training=False), tf.float32))
        soft = keras.losses.kl_divergence(tf.nn.softmax(teacher_logits / t),
                                          tf.nn.softmax(y_pred / t))
        if soft.shape.rank > 1:  # per token: mean over the example, as the hard loss
            soft = tf.reduce_mean(soft, axis=list(range(1, soft.shape.rank)))
        return self.alpha * hard + (1.0 - self.alpha) * t * t * soft
