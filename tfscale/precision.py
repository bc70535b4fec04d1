"""Mixed-precision policy from the config and the device, and loss scaling under float16.

`auto` means mixed_float16 on GPU, mixed_bfloat16 on TPU and float32 on CPU. Variables stay
float32 under every policy; models end in a float32 layer so losses see float32 logits. Under
float16 the optimizer is wrapped in a dynamic `LossScaleOptimizer`: the trainer scales each
micro-batch loss, and an update whose gradients are not all finite is skipped while the scale
drops (bfloat16 has float32's range and needs no scaling).
"""
import tf_keras as keras

AUTO = {"GPU": "mixed_float16", "TPU": "mixed_bfloat16", "CPU": "float32"}


def resolve(name, device_kind):
    """The policy name for config value `name` on `device_kind` ('CPU', 'GPU' or 'TPU')."""
    return AUTO[device_kind] if name == "auto" else name


def set_policy(name):
    """Sets the global Keras policy (before models are built) and returns it."""
    keras.mixed_precision.set_global_policy(name)
    return keras.mixed_precision.global_policy()


def uses_loss_scaling(policy_name):
    return policy_name == "mixed_float16"


def wrap_optimizer(optimizer, policy_name):
    """Adds dynamic loss scaling where the policy needs it."""
    if uses_loss_scaling(policy_name):
        return keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def inner_optimizer(optimizer):
    """The optimizer that holds the update rule and the step counter."""
    if isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer
