"""The recipe's pretraining text: `pycode`'s training windows without the task's held-out text.

`pycode` splits the whole standard library by file, so its training split holds the files that
`pycode_package` holds out: 85 % of the task's held-out windows share a 64-byte span with it
(measured on Python 3.12's library). Masked-LM pretraining never sees a label, but an encoder
that has read the very windows it is later judged on is not judged on new text. This source
drops every training window (inputs and the next byte) that contains a 64-byte span of a
held-out `pycode_package` window; the held-out split of `pycode` is kept for the masked-LM
figures. Use it as `data.name = "tfscale.recipe.corpus:pycode_without_task_heldout"`.
`pycode_without_task_tuning_heldout` also drops the task's tuning carve (`tuning_validation`):
the pretraining of an encoder whose fine-tuning rate is chosen on that carve.

`task_training_text` is the narrower, in-domain choice (task-adaptive pretraining): every byte of
the task's own training files (the ten packages, not only the windows the task samples from
them), unlabelled, with the same check.
"""
import dataclasses
import functools

from absl import logging
import numpy as np

from tfscale import data
from tfscale.data import dedup, pycode_package, text as text_lib


def span_hashes(rows):
    """Sorted hashes of every 64-byte span inside each row of `rows` [n, L] (none across rows)."""
    rows = np.ascontiguousarray(rows, np.uint8)
    n, length = rows.shape
    if length < dedup.WINDOW:
        return np.zeros(0, np.uint64)
    flat = dedup.window_hashes(rows.ravel())
    padded = np.concatenate([flat, np.zeros(dedup.WINDOW - 1, np.uint64)]).reshape(n, length)
    return padded[:, :length - dedup.WINDOW + 1]


def rows_sharing_a_span(rows, reference):
    """Mask of the rows of `rows` that contain a span whose hash is in sorted `reference`."""
    hashes = span_hashes(rows)
    return dedup.shared_windows(hashes.ravel(), reference).reshape(hashes.shape).any(axis=1)


def _with(data_config, name):
    c = data_config.copy_and_resolve_references()
    c.unlock()
    c.name, c.mask_rate, c.train_examples = name, 0.0, 0
    return c


def _held_out_reference(data_config, splits=("validation",)):
    """Sorted hashes of every 64-byte span of the `pycode_package` windows of `splits`."""
    hashes = []
    for split in splits:
        c = _with(data_config, "pycode_package")
        c.eval_split = split
        hashes.append(span_hashes(data.load(c, None).eval_arrays()[0]).ravel())
    return np.sort(np.concatenate(hashes))


def _clean(inputs, targets, reference):
    """The (inputs, targets) windows without any that share a span with `reference`."""
    leaked = rows_sharing_a_span(np.concatenate([inputs, targets[:, -1:]], axis=1), reference)
    logging.info("pretraining corpus: %d of %d training windows share a 64-byte span with "
                 "held-out pycode_package windows and are dropped", int(leaked.sum()), len(leaked))
    return inputs[~leaked], targets[~leaked]


def _cached(build):
    """`build(data_config, seq_len)` made once per process for each (data_dir, seq_len): the
    recipe and every fine-tuning run that rebuilds the pretrained network ask again."""
    made = functools.lru_cache(maxsize=4)(lambda data_dir, seq_len: build(_with_dir(data_dir), seq_len))

    @functools.wraps(build)
    def factory(data_config, seq_len):
        return made(data_config.get("data_dir", ""), seq_len)

    return factory


def _with_dir(data_dir):
    from tfscale.config import defaults  # pylint: disable=import-outside-toplevel
    c = defaults().data
    c.data_dir, c.eval_split = data_dir, "validation"
    return c


@_cached
def task_training_text(data_config, seq_len):
    """The task's training files (all their bytes), cut into windows of `seq_len` + 1 bytes;
    held out: `pycode`'s held-out split."""
    text = data.load(_with(data_config, "pycode"), seq_len)
    pieces = pycode_package.split(pycode_package.labelled_files())["train"]
    stream = np.frombuffer(dedup.stream([t for t, _ in pieces]), np.uint8)
    examples = stream[:len(stream) // (seq_len + 1) * (seq_len + 1)].reshape(-1, seq_len + 1)
    inputs, targets = _clean(*text_lib.windows(examples, seq_len), _held_out_reference(data_config))
    info = dataclasses.replace(text.info, num_train=len(inputs))
    return data.InMemorySource(info, (inputs, targets), text.read("eval", np.arange(text.info.num_eval)))


def _pycode_without(data_config, seq_len, splits):
    text = data.load(_with(data_config, "pycode"), seq_len)
    reference = _held_out_reference(data_config, splits)
    inputs, targets = _clean(*text.read("train", np.arange(text.info.num_train)), reference)
    info = dataclasses.replace(text.info, num_train=len(inputs))
    return data.InMemorySource(info, (inputs, targets), text.read("eval", np.arange(text.info.num_eval)))


@_cached
def pycode_without_task_heldout(data_config, seq_len):
    """`pycode` (context `seq_len`) less its training windows that share a span with a held-out
    `pycode_package` window."""
    return _pycode_without(data_config, seq_len, ("validation",))


@_cached
def pycode_without_task_tuning_heldout(data_config, seq_len):
    """`pycode` less also the windows of `pycode_package`'s tuning carve held out
    (`tuning_validation`): the pretraining of the encoder whose fine-tuning rates are chosen there,
    so that it is judged on text it never read, as the recipe's teacher is."""
    return _pycode_without(data_config, seq_len, ("validation", "tuning_validation"))
