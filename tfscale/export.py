"""Export of a trained network, verified against Keras and written atomically through
`tfscale.io` (local folders and `gs://` alike).

TFLite files (`tfscale.compress.tflite.save`) are checked the same way (`verify`), then written.
The SavedModel takes raw inputs of the network's full shape (preprocessing is inside the
network; only the batch dimension is free) and has a `serving_default` signature returning
`logits` (and `probabilities` for classifiers). An export that differs from Keras by more than
its bound raises ConfigError and leaves nothing at its path.
"""
import contextlib
import os

import numpy as np
import tensorflow as tf

from tfscale import io
from tfscale.errors import ConfigError

# Largest max |export - Keras| / max |Keras logits| a SavedModel may show: it runs the same
# graph (measured 0.0 on digits mlp/cnn and the tiny LM); a network computing in 16 bits gets
# the float16 file's bound, room for kernels that round differently.
SAVED_MODEL_MAX_REL_DIFF = 1e-4
HALF_MAX_REL_DIFF = 1e-2


def serving_function(network, classifier=True):
    dtype = tf.float32 if network.inputs[0].dtype.is_floating else network.inputs[0].dtype
    spec = tf.TensorSpec([None, *network.input_shape[1:]], dtype, name="inputs")

    @tf.function(input_signature=[spec])
    def serve(inputs):
        # A loaded signature does not check shapes itself: without this, a [4, 32] batch of
        # digits would be flattened into 2 images of 8x8.
        inputs = tf.ensure_shape(inputs, spec.shape)
        logits = tf.cast(network(inputs, training=False), tf.float32)
        outputs = {"logits": logits}
        if classifier:
            outputs["probabilities"] = tf.nn.softmax(logits)
        return outputs

    return serve


def compare(reference, candidate):
    """Max abs difference (also relative to the largest reference logit) and argmax agreement."""
    reference, candidate = np.asarray(reference, np.float32), np.asarray(candidate, np.float32)
    diff = float(np.max(np.abs(reference - candidate)))
    return {
        "max_abs_diff": diff,
        "rel_diff": diff / max(float(np.max(np.abs(reference))), 1e-12),
        "argmax_agreement": float(np.mean(reference.argmax(-1) == candidate.argmax(-1))),
    }


def verify(network, sample_inputs, exported, what, max_rel_diff, min_agreement=None):
    """Compares `network` with `exported` (the export, loaded back: inputs -> logits) on
    `sample_inputs` in full float32, raises ConfigError naming `what` outside the bounds, and
    returns the comparison."""
    with full_float32():
        check = compare(network.predict(sample_inputs, verbose=0), exported(sample_inputs))
    require(check, what, max_rel_diff, min_agreement)
    return check


def require(check, what, max_rel_diff, min_agreement=None):
    """Raises a one-line ConfigError naming `what` if `check` is outside the bounds."""
    if min_agreement is not None and check["argmax_agreement"] < min_agreement:
        raise ConfigError(f"{what} does not match its Keras network: argmax agreement "
                          f"{check['argmax_agreement']:.4f} < {min_agreement} (the bound)")
    if not check["rel_diff"] <= max_rel_diff:  # NaN fails too
        raise ConfigError(f"{what} does not match its Keras network: max abs diff "
                          f"{check['max_abs_diff']:.3g} is {check['rel_diff']:.3g} of the largest "
                          f"logit, > {max_rel_diff:g} (the bound)")


@contextlib.contextmanager
def full_float32():
    """TensorFloat-32 off (GPUs): its 10-bit matmuls would be counted as the export's error."""
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(before)


def _max_rel_diff(network):
    return SAVED_MODEL_MAX_REL_DIFF if network.compute_dtype == "float32" else HALF_MAX_REL_DIFF


def save_saved_model(network, path, sample_inputs, classifier=True):
    """Writes `network` as a SavedModel at `path` and checks it against Keras on `sample_inputs`.

    The model is written to a temporary folder next to `path`, loaded back with
    `tf.saved_model.load` and compared there; only then is it renamed into place.
    Returns the comparison (`max_abs_diff`, `rel_diff`, `argmax_agreement`).
    """
    io.remove_leftovers(path)  # one run owns its workdir: any such folder is from a dead export
    tmp = f"{path}.tmp-{os.getpid()}"
    io.makedirs(io.dirname(path))
    try:
        network.save(tmp, save_format="tf", include_optimizer=False,
                     signatures={"serving_default": serving_function(network, classifier)})
        loaded = tf.saved_model.load(tmp).signatures["serving_default"]
        sample_inputs = tf.cast(sample_inputs, loaded.structured_input_signature[1]["inputs"].dtype)
        check = verify(network, sample_inputs, lambda x: loaded(inputs=x)["logits"].numpy(),
                       f"SavedModel {path}", _max_rel_diff(network))
        io.replace_dir(tmp, path)
    finally:  # a failed or interrupted export leaves neither `path` nor the temporary folder
        io.rmtree(tmp)
    return check
