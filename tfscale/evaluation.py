"""Evaluation of an exported model: a classifier's report (scikit-learn metrics, a confusion-matrix
plot, TensorBoard) or a byte-level language model's (loss, bits per byte, perplexity, accuracy).

The reports are pure functions over arrays (labels and softmax probabilities), so the same
report can be computed after training, from a saved model, or in a test. The report holds plain
Python numbers and lists only, so it can be written with `json.dump` as it is.
"""
import io
import sys

import numpy as np
from sklearn import metrics


def classification_report(labels, probabilities, class_names=None):
    """Returns the evaluation report of `probabilities` (n, num_classes) against int `labels` (n,).

    Predictions are the argmax of `probabilities`. The report has `num_examples`, `accuracy`,
    `per_class` (one dict per class: `class`, `name`, `precision`, `recall`, `f1`, `support`,
    `roc_auc`), `macro` and `weighted` (`precision`, `recall`, `f1`, `roc_auc`), `roc_auc_ovr`,
    `confusion_matrix` (rows = true class, columns = predicted class) and `log_loss`.

    ROC-AUC of a class is one-vs-rest and undefined when `labels` holds no example of it (or only
    examples of it): that class's `roc_auc` is then None, and the macro and weighted ROC-AUC (and
    `roc_auc_ovr`) average over the classes where it is defined; None if there are none.
    Precision, recall and F1 that divide by zero (a class never predicted or never present) are 0.
    """
    labels, probabilities = _check_inputs(labels, probabilities)
    num_classes = probabilities.shape[1]
    names = _class_names(class_names, num_classes)
    classes = list(range(num_classes))
    predictions = np.argmax(probabilities, axis=1)

    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0
    )
    aucs = [_one_vs_rest_auc(labels, probabilities, k) for k in classes]
    per_class = [
        {
            "class": k,
            "name": names[k],
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
            "roc_auc": aucs[k],
        }
        for k in classes
    ]
    roc_auc_ovr = _roc_auc_ovr(labels, probabilities, aucs)
    return {
        "num_examples": int(labels.shape[0]),
        "accuracy": float(metrics.accuracy_score(labels, predictions)),
        "per_class": per_class,
        "macro": dict(_averaged(labels, predictions, classes, "macro"), roc_auc=roc_auc_ovr),
        "weighted": dict(
            _averaged(labels, predictions, classes, "weighted"),
            roc_auc=_weighted_auc(aucs, support),
        ),
        "roc_auc_ovr": roc_auc_ovr,
        "confusion_matrix": metrics.confusion_matrix(labels, predictions, labels=classes).tolist(),
        "log_loss": float(metrics.log_loss(labels, probabilities, labels=classes)),
    }


def _check_inputs(labels, probabilities):
    """Turns bad shapes or labels into one clear error instead of a deep scikit-learn one."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be (n, num_classes), got shape {probabilities.shape}")
    if labels.ndim != 1 or labels.shape[0] != probabilities.shape[0]:
        raise ValueError(
            f"labels must be ({probabilities.shape[0]},) to match probabilities, "
            f"got shape {labels.shape}"
        )
    if labels.shape[0] == 0:
        raise ValueError("cannot evaluate zero examples")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    num_classes = probabilities.shape[1]
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels must be in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
    # Softmax outputs in float32 sum to 1 only up to rounding, which scikit-learn warns about.
    return labels.astype(np.int64), probabilities / probabilities.sum(axis=1, keepdims=True)


def _class_names(class_names, num_classes):
    """Names shown in the report and the plot; the class index when none are given."""
    if class_names is None:
        return [str(k) for k in range(num_classes)]
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise ValueError(f"got {len(names)} class names for {num_classes} classes")
    return names


def _averaged(labels, predictions, classes, average):
    """Precision, recall and F1 averaged the scikit-learn way (`macro` or `weighted`)."""
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        labels, predictions, labels=classes, average=average, zero_division=0
    )
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def _one_vs_rest_auc(labels, probabilities, k):
    """ROC-AUC of class `k` against the rest; None where it is undefined (only one side present).

    Checked before calling scikit-learn, which warns and returns NaN (or raises, in older versions)
    and NaN is not valid JSON.
    """
    positives = labels == k
    if positives.all() or not positives.any():
        return None
    return float(metrics.roc_auc_score(positives, probabilities[:, k]))


def _roc_auc_ovr(labels, probabilities, aucs):
    """Macro one-vs-rest ROC-AUC: scikit-learn's if every class has one, else over those that do."""
    defined = [auc for auc in aucs if auc is not None]
    if not defined:
        return None
    if len(defined) < len(aucs):
        return float(np.mean(defined))
    if len(aucs) == 2:  # binary: scikit-learn takes the positive class's score (both AUCs are equal)
        return float(metrics.roc_auc_score(labels, probabilities[:, 1]))
    return float(
        metrics.roc_auc_score(
            labels, probabilities, multi_class="ovr", labels=list(range(len(aucs)))
        )
    )


def _weighted_auc(aucs, support):
    """Support-weighted ROC-AUC over the classes where it is defined."""
    defined = [(auc, int(s)) for auc, s in zip(aucs, support) if auc is not None]
    if not defined:
        return None
    values, weights = zip(*defined)
    return float(np.average(values, weights=weights))


def plot_confusion_matrix(matrix, path, class_names=None, title=None):
    """Writes the confusion matrix as a PNG at `path`, atomically.

    The PNG is saved to a temporary file in the same folder and then renamed over `path`, so a
    reader (or a crash mid-write) never sees half a file.
    """
    from tfscale import io as io_lib  # pylint: disable=import-outside-toplevel

    io_lib.makedirs(io_lib.dirname(path))
    io_lib.write_bytes(path, _render_png(matrix, class_names, title))


def confusion_matrix_image(matrix, class_names=None):
    """Returns the confusion-matrix figure as a uint8 RGB array (H, W, 3), e.g. for TensorBoard."""
    from PIL import Image  # pylint: disable=import-outside-toplevel  (a matplotlib dependency)

    with Image.open(io.BytesIO(_render_png(matrix, class_names, None))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _render_png(matrix, class_names, title):
    """Draws the figure and returns it as PNG bytes."""
    figure = _confusion_figure(matrix, class_names, title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _confusion_figure(matrix, class_names, title):
    """Counts in each cell, coloured by the row-normalised rate so small classes stay readable.

    Built on `matplotlib.figure.Figure` rather than pyplot: no global figure state, and it works
    whatever backend the caller's pyplot uses.
    """
    import matplotlib  # pylint: disable=import-outside-toplevel

    if "matplotlib.pyplot" not in sys.modules:
        # Switching backends after pyplot is loaded would close the caller's figures.
        matplotlib.use("Agg")
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    counts = np.asarray(matrix, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {counts.shape}")
    num_classes = counts.shape[0]
    names = _class_names(class_names, num_classes)
    rates = _row_normalised(counts)

    size = max(4.0, 0.6 * num_classes + 2.0)
    figure = Figure(figsize=(size, size), layout="constrained")
    axes = figure.add_subplot()
    shown = axes.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="fraction of true class")
    for row in range(num_classes):
        for col in range(num_classes):
            colour = "white" if rates[row, col] > 0.5 else "black"
            axes.text(col, row, str(counts[row, col]), ha="center", va="center", color=colour)
    ticks = list(range(num_classes))
    axes.set_xticks(ticks, labels=names, rotation=45, ha="right")
    axes.set_yticks(ticks, labels=names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if title:
        axes.set_title(title)
    return figure


def _row_normalised(counts):
    """Each row divided by its total; rows of a class with no examples stay 0."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)


def write_tensorboard(report, logdir, step, class_names=None):
    """Writes the report's headline scalars and confusion-matrix image to TensorBoard at `step`.

    Scalars: `eval/accuracy`, `eval/macro_f1`, `eval/roc_auc_ovr` (skipped when undefined) and
    `eval/log_loss`; image: `eval/confusion_matrix`. Class names default to the report's.
    """
    if class_names is None:
        class_names = [entry["name"] for entry in report["per_class"]]
    scalars = {
        "eval/accuracy": report["accuracy"],
        "eval/macro_f1": report["macro"]["f1"],
        "eval/roc_auc_ovr": report["roc_auc_ovr"],
        "eval/log_loss": report["log_loss"],
    }
    _write_scalars(scalars, logdir, step, confusion_matrix_image(report["confusion_matrix"], class_names))


def _write_scalars(scalars, logdir, step, image=None):
    """Scalars (None ones skipped) and an optional `eval/confusion_matrix` image at `step`."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel  (slow; only when used)

    writer = tf.summary.create_file_writer(str(logdir))
    try:
        with writer.as_default(step=step):
            for tag, value in scalars.items():
                if value is not None:
                    tf.summary.scalar(tag, value)
            if image is not None:
                tf.summary.image("eval/confusion_matrix", image[None])
        writer.flush()
    finally:
        writer.close()


def load_serving(path):
    """The `serving_default` signature of the SavedModel at `path`; a one-line ConfigError if
    the export is missing, incomplete or unreadable."""
    from tfscale import export, io  # pylint: disable=import-outside-toplevel
    from tfscale.errors import ConfigError  # pylint: disable=import-outside-toplevel

    if not io.gfile.isdir(path):
        raise ConfigError(f"no exported model at {path}; train the run with export.saved_model=True")
    try:
        return export.load_saved_model(path).signatures["serving_default"]  # text ops registered first
    except Exception as e:  # pylint: disable=broad-except  (a missing file: OSError, OpError, ...)
        lines = str(e).strip().splitlines() or [type(e).__name__]
        raise ConfigError(f"the exported model at {path} cannot be loaded (files missing or "
                          f"damaged; export it again): {lines[0][:300]}") from e


def _serve_batches(serve, inputs, batch_size):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    dtype = serve.structured_input_signature[1]["inputs"].dtype
    for i in range(0, len(inputs), batch_size):
        yield serve(inputs=tf.constant(inputs[i:i + batch_size], dtype))


def predict_saved_model(path, inputs, batch_size=512):
    """Class probabilities from an exported SavedModel's serving signature (the deployed model)."""
    serve = load_serving(path)
    return np.concatenate([out["probabilities"].numpy() for out in _serve_batches(serve, inputs, batch_size)])


def language_model_report(serve, inputs, labels, batch_size=512, bytes_per_token=1.0):
    """Next-token figures of an LM's serving signature on (windows, next tokens): `loss` (mean
    cross-entropy in nats per token), `bits_per_byte` (the loss over the held-out text's bytes per
    token, as the run's own summary computes it), `perplexity`, `accuracy` (per token),
    `num_examples` (windows) and `num_tokens`."""
    from scipy.special import log_softmax  # pylint: disable=import-outside-toplevel

    nll = correct = 0.0
    for i, out in enumerate(_serve_batches(serve, inputs, batch_size)):
        logits = out["logits"].numpy().astype(np.float64)
        y = labels[i * batch_size:(i + 1) * batch_size].astype(np.int64)
        nll -= float(np.sum(np.take_along_axis(log_softmax(logits, axis=-1), y[..., None], -1)))
        correct += float(np.sum(logits.argmax(-1) == y))
    tokens = int(labels.size)
    loss = nll / tokens
    return {"num_examples": int(len(labels)), "num_tokens": tokens, "loss": loss,
            "bits_per_byte": float(loss / np.log(2) / bytes_per_token), "perplexity": float(np.exp(loss)),
            "accuracy": correct / tokens}


def evaluate_workdir(workdir, data=None, step=None):
    """Evaluates a finished run's exported model on its held-out split.

    The examples are those of the run's own evaluation (`eval.max_examples` evenly spaced ones,
    or all). A classifier gets the classification report, `confusion_matrix.png` and TensorBoard
    summaries; a language model `language_model_report` and its scalars. Either is written to
    `eval.json` (with the step) and returned; nothing is written if the export cannot be loaded.
    `data` may be passed to avoid reloading.
    """
    from tfscale import data as data_lib, io, workdir as workdir_lib  # pylint: disable=import-outside-toplevel

    config = workdir_lib.load_config(workdir)
    model_path = io.join(workdir, "export", "saved_model")
    serve = load_serving(model_path)
    data = data or data_lib.load(config.data, config.model.get("seq_len"), config.seed)
    inputs, labels = data.eval_arrays(config.eval.max_examples)
    classifier = data.task == "classifier"
    if classifier:
        probabilities = np.concatenate([out["probabilities"].numpy() for out in
                                        _serve_batches(serve, inputs, config.eval.batch_size)])
        report = classification_report(labels, probabilities)
    else:
        report = language_model_report(serve, inputs, labels, config.eval.batch_size,
                                       data.info.bytes_per_token)
    summary_path = io.join(workdir, "summary.json")
    if step is None:
        step = io.read_json(summary_path)["steps"] if io.exists(summary_path) else 0
    report["step"] = step
    report["model_path"] = model_path
    io.write_json(io.join(workdir, "eval.json"), report)
    if classifier:
        plot_confusion_matrix(report["confusion_matrix"], io.join(workdir, "confusion_matrix.png"),
                              title=f"{config.data.name}: accuracy {report['accuracy']:.4f}")
        write_tensorboard(report, io.join(workdir, "tensorboard"), step)
    else:
        _write_scalars({f"eval/{k}": report[k] for k in ("loss", "bits_per_byte", "perplexity", "accuracy")},
                       io.join(workdir, "tensorboard"), step)
    return report
