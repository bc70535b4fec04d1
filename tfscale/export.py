"""Export of a trained network, verified against Keras and written atomically.

TFLite files (`save_tflite`) are written and checked the same way, in LiteRT. The SavedModel
takes raw inputs (preprocessing is inside the network) and has a
`serving_default` signature returning `logits` (and `probabilities` for classifiers).
"""
import os
import shutil

import numpy as np
import tensorflow as tf

from tfscale import io


def serving_function(network, classifier=True):
    dtype = tf.float32 if network.inputs[0].dtype.is_floating else network.inputs[0].dtype
    spec = tf.TensorSpec([None, *network.input_shape[1:]], dtype, name="inputs")

    @tf.function(input_signature=[spec])
    def serve(inputs):
        logits = tf.cast(network(inputs, training=False), tf.float32)
        outputs = {"logits": logits}
        if classifier:
            outputs["probabilities"] = tf.nn.softmax(logits)
        return outputs

    return serve


def compare(reference, candidate):
    """Max abs difference and argmax agreement between two arrays of logits."""
    reference, candidate = np.asarray(reference, np.float32), np.asarray(candidate, np.float32)
    return {
        "max_abs_diff": float(np.max(np.abs(reference - candidate))),
        "argmax_agreement": float(np.mean(reference.argmax(-1) == candidate.argmax(-1))),
    }


def save_saved_model(network, path, sample_inputs, classifier=True):
    """Writes `network` as a SavedModel at `path` and checks it against Keras on `sample_inputs`.

    The model is written to a temporary folder next to `path`, loaded back with
    `tf.saved_model.load` and compared there; only then is it renamed into place.
    Returns the comparison (`max_abs_diff`, `argmax_agreement`).
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        network.save(tmp, save_format="tf", include_optimizer=False,
                     signatures={"serving_default": serving_function(network, classifier)})
        loaded = tf.saved_model.load(tmp).signatures["serving_default"]
        sample_inputs = tf.cast(sample_inputs, loaded.structured_input_signature[1]["inputs"].dtype)
        exported = loaded(inputs=sample_inputs)["logits"].numpy()
        check = compare(network.predict(sample_inputs, verbose=0), exported)
        io.replace_dir(tmp, path)
    finally:  # a failed or interrupted export leaves neither `path` nor the temporary folder
        shutil.rmtree(tmp, ignore_errors=True)
    return check


def save_tflite(network, path, mode, sample_inputs, representative=None, int8_io=False):
    """Converts `network` to TFLite (`mode`: float32, dynamic_range, int8, float16, qat) and
    writes it at `path` once the file, run in LiteRT, has been compared with Keras on
    `sample_inputs`; returns that comparison. See `tfscale.compress.tflite`."""
    from tfscale.compress import tflite  # pylint: disable=import-outside-toplevel  (tfmot-free)

    flatbuffer = tflite.convert(network, mode, representative, int8_io)
    return tflite.write(flatbuffer, path, network, sample_inputs)
