"""Export of a trained network, verified against Keras and written atomically through
`tfscale.io` (local folders and `gs://` alike).

TFLite files (`tfscale.compress.tflite.save`) are checked the same way (`verify`), then written.
The SavedModel takes raw inputs of the network's full shape (preprocessing is inside the
network; only the batch dimension is free) and has a `serving_default` signature returning
`logits` (and `probabilities` for classifiers). An export that differs from Keras by more than
its bound raises ConfigError and leaves nothing at its path.

A language model exported with its tokenizer (`tfscale.data.tokenizers`) also has a
`serving_text` signature taking raw strings (`text_serving_function`); loading a SavedModel
with a SentencePiece tokenizer needs `import tensorflow_text` first (it registers the op;
`load_saved_model` does it).
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


def text_serving_function(network, tokenizer):
    """`serving_text(text: tf.string [batch])`: the next-token logits after each text.

    Each text is taken as the start of a document, as in the corpus: the tokenizer's separator,
    then the text's tokens (`tf_tokenize`, in the graph), of which the last `seq_len` are kept
    (the separator and the start go first when the text is longer), padded at the end with the
    separator (the model is causal: padding after a position does not change its logits).
    Outputs: `logits` [batch, vocab] (float32) at the last kept position, `tokens`
    [batch, seq_len] (the window the model saw; `text_windows` computes it in NumPy) and
    `length` [batch] (how many of them are the text's).
    """
    seq_len = network.input_shape[1]
    separator = tokenizer.separator_id
    input_dtype = network.inputs[0].dtype

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve_text(text):
        ids = tokenizer.tf_tokenize(text)
        starts = tf.RaggedTensor.from_tensor(tf.fill([ids.nrows(), 1], tf.cast(separator, ids.dtype)))
        window = tf.concat([starts, ids], axis=1)[:, -seq_len:]
        length = tf.cast(window.row_lengths(), tf.int32)
        tokens = window.to_tensor(default_value=separator, shape=[None, seq_len])
        logits = tf.cast(network(tf.cast(tokens, input_dtype), training=False), tf.float32)
        return {"logits": tf.gather(logits, length - 1, batch_dims=1), "tokens": tokens, "length": length}

    return serve_text


def text_windows(tokenizer, texts, seq_len):
    """(tokens [n, seq_len], length [n]): what `serving_text` feeds the model, from `encode`."""
    tokens = np.full([len(texts), seq_len], tokenizer.separator_id, np.int32)
    lengths = np.zeros([len(texts)], np.int32)
    for row, text in enumerate(texts):
        ids = np.concatenate([[tokenizer.separator_id], tokenizer.encode(text)])[-seq_len:]
        tokens[row, :len(ids)], lengths[row] = ids, len(ids)
    return tokens, lengths


def next_token_logits(network, tokenizer, texts, seq_len=None):
    """The Keras network's `serving_text` logits for `texts`: the reference an export is checked by."""
    tokens, lengths = text_windows(tokenizer, texts, seq_len or network.input_shape[1])
    logits = network.predict(tokens, verbose=0)
    return np.asarray(logits, np.float32)[np.arange(len(texts)), lengths - 1]


def load_saved_model(path):
    """`tf.saved_model.load(path)`, with tensorflow-text's ops registered first when it is
    installed: an export with a SentencePiece `serving_text` cannot load without them."""
    try:
        import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        pass
    return tf.saved_model.load(path)


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


def save_saved_model(network, path, sample_inputs, classifier=True, tokenizer=None):
    """Writes `network` as a SavedModel at `path` and checks it against Keras on `sample_inputs`.

    The model is written to a temporary folder next to `path`, loaded back with
    `tf.saved_model.load` and compared there; only then is it renamed into place.
    Returns the comparison (`max_abs_diff`, `rel_diff`, `argmax_agreement`). With a
    `tokenizer` (language models), the SavedModel also has `serving_text`, checked on the
    sample decoded to text; its comparison is under "serving_text".
    """
    io.remove_leftovers(path)  # one run owns its workdir: any such folder is from a dead export
    tmp = f"{path}.tmp-{os.getpid()}"
    io.makedirs(io.dirname(path))
    try:
        signatures = {"serving_default": serving_function(network, classifier)}
        if tokenizer is not None:
            signatures["serving_text"] = text_serving_function(network, tokenizer)
        with _tracking(network, tokenizer):
            network.save(tmp, save_format="tf", include_optimizer=False, signatures=signatures)
        loaded_model = load_saved_model(tmp)
        loaded = loaded_model.signatures["serving_default"]
        sample_inputs = tf.cast(sample_inputs, loaded.structured_input_signature[1]["inputs"].dtype)
        check = verify(network, sample_inputs, lambda x: loaded(inputs=x)["logits"].numpy(),
                       f"SavedModel {path}", _max_rel_diff(network))
        if tokenizer is not None:
            check["serving_text"] = _verify_text(network, tokenizer, sample_inputs, loaded_model, path)
        io.replace_dir(tmp, path)
    finally:  # a failed or interrupted export leaves neither `path` nor the temporary folder
        io.rmtree(tmp)
    return check


@contextlib.contextmanager
def _tracking(network, tokenizer):
    """The tokenizer's in-graph part (a SentencePiece model resource) attached to `network`
    while it is saved: a signature may only use resources the SavedModel holds."""
    module = getattr(tokenizer, "tf_module", None)
    if module is None:
        yield
        return
    network.text_tokenizer = module
    try:
        yield
    finally:
        del network.text_tokenizer


def _verify_text(network, tokenizer, sample_inputs, loaded_model, path):
    """`serving_text` of the loaded export against Keras on the sample's windows as text."""
    texts = [tokenizer.decode(row) for row in np.asarray(sample_inputs)]
    serve = loaded_model.signatures["serving_text"]
    with full_float32():
        reference = next_token_logits(network, tokenizer, texts)
        candidate = serve(text=tf.constant(texts, tf.string))["logits"].numpy()
    check = compare(reference, candidate)
    require(check, f"SavedModel {path} (serving_text)", _max_rel_diff(network))
    return check
