"""Learning-rate schedules, all counted in optimizer updates (never in micro-batches).

The optimizer calls its schedule with `optimizer.iterations`, which advances once per applied
(or skipped) update, so accumulation over k micro-batches leaves every schedule unchanged.

`wsd` (warmup-stable-decay) is constant after warmup until its last `cooldown_steps` updates:
its value at an update does not depend on the run's length before the cooldown, so one
constant run can be branched into cooldowns of any length (tfscale.branch).
"""
import math

import tensorflow as tf
import tf_keras as keras


COOLDOWN_SHAPES = ("1-sqrt", "linear")


# tf_keras's CosineDecay has a warmup, but its linear and inverse-square-root decays do not;
# one class gives all of them the same warmup and the same meaning of `end_factor`.
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup over `warmup_steps` updates (the first uses peak / warmup_steps, the last
    one of warmup `peak`), then `decay` down to `end_factor * peak`: cosine and linear reach it
    at the run's last update (step total_steps - 1); inverse square root, sqrt(warmup / step)
    after warmup, never goes below it; constant stays at `peak`; wsd stays at `peak` until its
    last `cooldown_steps` updates, the k-th of which (k = 1..cooldown_steps, as warmup's k/warmup)
    uses end + (1 - end) * (1 - sqrt(k / cooldown_steps)) (`cooldown_shape` 1-sqrt, Hägele et al.
    2024) or (1 - k / cooldown_steps) (linear): the last update uses end_factor * peak."""

    def __init__(self, peak, total_steps, warmup_steps=0, decay="cosine", end_factor=0.0,
                 cooldown_steps=0, cooldown_shape="1-sqrt"):
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.end_factor = float(end_factor)
        self.cooldown_steps = int(cooldown_steps)
        self.cooldown_shape = cooldown_shape

    def __call__(self, step):
        # `step` counts the updates before this one: the optimizer's iterations.
        step = tf.cast(step, tf.float32)
        warmup = float(max(self.warmup_steps, 1))
        at_peak = float(max(self.warmup_steps - 1, 0))  # the update that uses the peak
        decay_steps = float(max(self.total_steps - 1 - at_peak, 1))
        progress = tf.clip_by_value((step - at_peak) / decay_steps, 0.0, 1.0)
        end = self.end_factor
        if self.decay == "constant":
            factor = tf.ones_like(progress)
        elif self.decay == "cosine":
            factor = end + (1.0 - end) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        elif self.decay == "linear":
            factor = 1.0 - (1.0 - end) * progress
        elif self.decay == "inverse_sqrt":  # 1 until the end of warmup, then sqrt(warmup / step)
            factor = tf.maximum(end, tf.math.rsqrt(tf.maximum(step, warmup) / warmup))
        elif self.decay == "wsd":
            factor = self._cooldown(step)
        else:
            raise ValueError(f"unknown decay {self.decay!r}")
        if self.warmup_steps > 0:
            factor = factor * tf.minimum(1.0, (step + 1.0) / warmup)
        return self.peak * factor

    def _cooldown(self, step):
        # A phase shorter than the cooldown (compress fine-tuning) cools down after its warmup.
        cooldown = min(self.cooldown_steps, max(self.total_steps - self.warmup_steps, 0))
        if cooldown == 0:
            return tf.ones_like(step)
        done = tf.clip_by_value((step + 1.0 - (self.total_steps - cooldown)) / cooldown, 0.0, 1.0)
        if self.cooldown_shape == "1-sqrt":
            left = 1.0 - tf.sqrt(done)
        elif self.cooldown_shape == "linear":
            left = 1.0 - done
        else:
            raise ValueError(f"unknown cooldown shape {self.cooldown_shape!r}")
        # Exactly 1 before the cooldown, so a branch's updates there equal its trunk's.
        return tf.where(done > 0.0, self.end_factor + (1.0 - self.end_factor) * left, 1.0)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "decay": self.decay,
                "end_factor": self.end_factor, "cooldown_steps": self.cooldown_steps,
                "cooldown_shape": self.cooldown_shape}


# config `schedule.name` -> decay after warmup.
SCHEDULES = {
    "constant": "constant",
    "warmup_cosine": "cosine",
    "warmup_linear": "linear",
    "inverse_sqrt": "inverse_sqrt",
    "wsd": "wsd",
}


def build_schedule(optimizer_config, schedule_config, total_steps):
    return WarmupSchedule(
        optimizer_config.learning_rate, total_steps, schedule_config.warmup_steps,
        SCHEDULES[schedule_config.name], schedule_config.end_factor,
        schedule_config.get("cooldown_steps", 0), schedule_config.get("cooldown_shape", "1-sqrt"))
