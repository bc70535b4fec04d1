"""TFLite conversion, atomic writing with verification, and measurement through LiteRT.

Every `.tflite` is converted from the Keras network, loaded in the LiteRT interpreter and
compared with the Keras network there (within its mode's `BOUNDS`), and only then written,
atomically through `tfscale.io`: the final path holds a verified file or nothing, on a local
disk or a `gs://` bucket alike (files are read through tf.io.gfile, never by path in LiteRT).
"""
import gzip
import time

import numpy as np
import tensorflow as tf

from tfscale import export, io
from tfscale.errors import ConfigError

# mode -> what the converter is told. `qat` converts a quantization-aware-trained network (its
# fake-quant ranges become the int8 parameters).
MODES = ("float32", "dynamic_range", "int8", "float16", "qat")


def convert(network, mode, representative=None, int8_io=False):
    """The network as TFLite flatbuffer bytes. `representative`: raw training inputs (int8)."""
    if mode not in MODES:
        raise ValueError(f"unknown TFLite mode {mode!r}; choose one of {', '.join(MODES)}")
    converter = tf.lite.TFLiteConverter.from_keras_model(network)
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode in ("int8", "qat") and representative is not None:
        dtype = network.inputs[0].dtype

        def examples():
            for row in representative:
                yield [tf.cast(row[None], dtype)]

        converter.representative_dataset = examples
    if mode == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if mode in ("int8", "qat") and int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as e:  # pylint: disable=broad-except  (the converter raises many types)
        first = next((l for l in str(e).splitlines() if "error" in l.lower()), str(e).splitlines()[0])
        raise ConfigError(f"{network.name} cannot be converted to TFLite as {mode}: {first.strip()[:300]}") from e


class TFLiteModel:
    """A `.tflite` file (any tf.io.gfile path), or its `content`, in the LiteRT interpreter:
    batched predictions and batch-1 latency.

    Inputs are raw model inputs and outputs float logits, whatever the file's input/output
    types: int8 ends are quantized and dequantized with the file's own scale and zero point.
    """

    def __init__(self, path=None, num_threads=1, content=None):
        from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel

        self.path = path
        self.content = io.read_bytes(path) if content is None else content
        self.interpreter = Interpreter(model_content=self.content, num_threads=num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batch = None

    def _resize(self, batch):
        if batch != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], [batch, *self.input["shape"][1:]])
            self.interpreter.allocate_tensors()
            self._batch = batch

    def _set(self, inputs):
        scale, zero = self.input["quantization"]
        dtype = self.input["dtype"]
        if np.issubdtype(dtype, np.integer) and scale:
            info = np.iinfo(dtype)
            inputs = np.clip(np.round(np.asarray(inputs, np.float32) / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], np.asarray(inputs).astype(dtype))

    def _get(self):
        out = self.interpreter.get_tensor(self.output["index"])
        scale, zero = self.output["quantization"]
        if np.issubdtype(out.dtype, np.integer) and scale:
            return (out.astype(np.float32) - zero) * scale
        return out.astype(np.float32)

    def batches(self, inputs, batch_size=256):
        """Yields the float logits of `inputs`, one batch at a time."""
        for i in range(0, len(inputs), batch_size):
            chunk = inputs[i:i + batch_size]
            self._resize(len(chunk))
            self._set(chunk)
            self.interpreter.invoke()
            yield self._get()

    def predict(self, inputs, batch_size=256):
        return np.concatenate(list(self.batches(inputs, batch_size)))

    def evaluate(self, inputs, labels, batch_size=256):
        """Accuracy (argmax; per token for sequences) and mean cross-entropy on held-out data;
        for one label per example also the macro F1 (classes weighted alike)."""
        from scipy.special import log_softmax  # pylint: disable=import-outside-toplevel
        from sklearn import metrics  # pylint: disable=import-outside-toplevel

        correct = loss = count = 0.0
        predicted = []
        for i, logits in enumerate(self.batches(inputs, batch_size)):
            y = labels[i * batch_size:(i + 1) * batch_size]
            predicted.append(logits.argmax(-1))
            correct += float(np.sum(predicted[-1] == y))
            logp = log_softmax(logits.astype(np.float64), axis=-1)
            loss -= float(np.sum(np.take_along_axis(logp, y[..., None].astype(np.int64), -1)))
            count += y.size
        out = {"accuracy": correct / count, "loss": loss / count}
        if np.ndim(labels) == 1:
            out["macro_f1"] = float(metrics.f1_score(labels, np.concatenate(predicted), average="macro"))
        return out

    def weight_sparsity(self):
        """Zeros among the file's weights (constants of rank >= 2; int8 zero = quantized 0)."""
        zeros = total = 0
        for values in self._constants():
            zeros += int(values.size - np.count_nonzero(values))
            total += int(values.size)
        return zeros / total if total else 0.0

    def latency_ms(self, example, runs=200, warmup=20):
        """Median wall time of one batch-1 invocation, in milliseconds."""
        self._resize(1)
        self._set(example[None])
        for _ in range(warmup):
            self.interpreter.invoke()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.interpreter.invoke()
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1e3)

    def weight_dtypes(self):
        """dtype name -> number of weight tensors (constants of rank >= 2) in the file."""
        counts = {}
        for values in self._constants():
            counts[values.dtype.name] = counts.get(values.dtype.name, 0) + 1
        return counts

    def _constants(self):
        from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel

        fresh = Interpreter(model_content=self.content)  # before allocation only constants have data
        for t in fresh.get_tensor_details():
            if len(t["shape"]) < 2:
                continue
            try:
                yield fresh.get_tensor(t["index"])
            except ValueError:
                continue


# mode -> (largest max |TFLite - Keras| / max |Keras logits|, least argmax agreement) a correct
# file stays within. Measured on digits mlp/cnn and the tiny LM, trained or not (README,
# "Compression"): float32 <= 1e-6, float16 <= 7e-4, dynamic_range <= 0.035, int8 and QAT
# <= 0.2 with agreement >= 0.96; a file of another network: ~1.0 and agreement <= 0.08.
BOUNDS = {
    "float32": (1e-4, None),
    "float16": (1e-2, None),
    "dynamic_range": (0.1, None),
    "int8": (0.5, 0.9),
    "qat": (0.5, 0.9),
}


def write(flatbuffer, path, network, sample_inputs, max_rel_diff, min_agreement=None):
    """Writes `flatbuffer` at `path` once it runs in LiteRT; returns its check against `network`.

    The check (`export.verify` on `sample_inputs`) runs on the bytes themselves, before anything
    is written: outside the bounds (ConfigError), on any failure or an interruption `path` is
    left as it was. Temporary files of an earlier, killed write go first.
    """
    io.makedirs(io.dirname(path))
    io.remove_leftovers(path)
    check = export.verify(network, sample_inputs, TFLiteModel(content=flatbuffer).predict,
                          io.basename(path), max_rel_diff, min_agreement)
    io.write_bytes(path, flatbuffer)
    return check


def file_sizes(path):
    """(bytes, gzip bytes) of a file: gzip shows what zeros (pruning) save on the wire."""
    content = io.read_bytes(path)
    return len(content), len(gzip.compress(content, compresslevel=9, mtime=0))


def save(network, path, mode, sample_inputs, representative=None, int8_io=False):
    """Converts `network` to TFLite (`mode`: float32, dynamic_range, int8, float16, qat) and
    writes it at `path` once the file, run in LiteRT, has matched Keras on `sample_inputs`
    within the mode's bounds (`BOUNDS`); returns that comparison."""
    flatbuffer = convert(network, mode, representative, int8_io)
    return write(flatbuffer, path, network, sample_inputs, *BOUNDS[mode])
