"""Examples checked against what their source claims and what the model gives, before training.

A source's declared values (a manifest's dtypes, shapes and class count; a TFRecord file's
features) and the network built from them can disagree with the records themselves: a manifest
edited by hand, LM windows given to a classifier, labels outside 0..num_classes-1, a user's model
with fewer logits than classes. TensorFlow finds each of these deep inside the first update,
after the run has written its files. `check_examples` finds them on a few real examples when the
source opens, and names the source (its file) and the field.
"""
import numpy as np

from tfscale.data.info import IGNORED
from tfscale.errors import ConfigError

SPARSE_LOSSES = ("sparse_categorical_crossentropy", "masked_lm")


def origin(source):
    """Where a source's examples come from, as a user would look for it (a file, a data name)."""
    while getattr(source, "origin", None) is None and getattr(source, "source", None) is not None:
        source = source.source  # a wrapper (a training subset, masking): the source it reads
    return getattr(source, "origin", None) or f"data {source.info.name!r}"


def check_examples(source, split, inputs, labels, loss, output_shape=None):
    """One line naming `source`, `split` and the field when (inputs, labels) read from it do not
    fit its `info` or a network whose output is `output_shape` ((None, ...), or None if unknown)."""
    info, where = source.info, f"{origin(source)}: {split} examples"
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    if tuple(inputs.shape[1:]) != tuple(info.input_shape):
        raise ConfigError(f"{where}: inputs of shape {list(inputs.shape[1:])}, the data set declares "
                          f"{list(info.input_shape)}")
    expected = tuple(info.input_shape) if info.task != "classifier" else ()
    if tuple(labels.shape[1:]) not in (expected, (1,) if not expected else expected):
        kind = "one label per example" if info.task == "classifier" else "a target per input position"
        raise ConfigError(f"{where}: labels of shape {list(labels.shape[1:])}, where a {info.task} has {kind} "
                          f"({list(expected)})")
    if loss not in SPARSE_LOSSES:
        return
    if not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"{where}: labels are {labels.dtype}, not integer classes (train.loss {loss})")
    _check_label_range(where, labels, info.num_classes, allow_ignored=loss == "masked_lm")
    if output_shape is not None:
        _check_output(where, output_shape, labels.shape[1:], info)


def _check_label_range(where, labels, num_classes, allow_ignored):
    counted = labels[labels != IGNORED] if allow_ignored else labels
    if counted.size and (counted.min() < 0 or counted.max() >= num_classes):
        bad = counted.min() if counted.min() < 0 else counted.max()
        raise ConfigError(f"{where}: a label {int(bad)} is outside 0..{num_classes - 1} "
                          f"(num_classes {num_classes})")


def _check_output(where, output_shape, label_shape, info):
    """Sparse cross-entropy needs a logit for every class at each labelled position (more is
    allowed: a masked LM also scores its mask token)."""
    shape = tuple(output_shape[1:])
    positions = tuple(d for d in label_shape if label_shape != (1,))
    fits = (len(shape) == len(positions) + 1 and all(s is None or s == p for s, p in zip(shape, positions))
            and (shape[-1] is None or shape[-1] >= info.num_classes))
    if not fits:
        raise ConfigError(f"{where}: the model gives outputs of shape {list(shape)}, the labels need "
                          f"{list((*positions, info.num_classes))} (a logit per class, {info.num_classes} classes, "
                          "at each labelled position)")
