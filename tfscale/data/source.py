"""What every consumer of a data set asks of it: the `DataSource` interface.

The trainer, evaluation, export, compression and sweeps go through these methods and never
reach into arrays, so a source may hold its splits in memory (`InMemorySource`) or read them
by index from files (`array_record.ArrayRecordSource`). Both give the same training order,
a pure function of (seed, step): resume is exact and N replicas match one device whatever the
source.

Held-out subsets are read into memory (`eval_arrays`): they are what each evaluation measures
and, as `eval.max_examples` evenly spaced examples, small next to a training split.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from tfscale.data import batches


UNREADABLE = "tfscale: data cannot be read: "  # marks a read error raised inside the input pipeline


def unreadable(error):
    """The one line a source raised as `UNREADABLE + line` from inside tf.data (where any
    exception becomes a TensorFlow op error), or None for any other error."""
    text = str(getattr(error, "message", error))
    return text.split(UNREADABLE, 1)[1].splitlines()[0] if UNREADABLE in text else None


class DataSource:
    """A data set of fixed-shape (input, label) examples in a training and a held-out split.

    Subclasses give `info`, `read(split, indices) -> (inputs, labels)` (numpy; split "train" or
    "eval") and `_make_gather()` for the training stream; the rest follows from those.
    """

    info = None  # DataInfo: shapes, classes, split sizes and the task
    origin = None  # where the examples are, as errors name it (a file); None: the data set's name

    @property
    def task(self):
        """"classifier" (one label per example) or "lm" (one target per input position)."""
        return self.info.task

    def train_dataset_fn(self, global_batch_size, seed, start_step, num_steps):
        """`dataset_fn(input_context)` of per-replica batches for updates start_step .. num_steps-1."""
        return batches.index_dataset_fn(self.info.num_train, self._make_gather, global_batch_size, seed,
                                        start_step, num_steps)

    def eval_indices(self, count=0):
        """`count` held-out examples spread evenly over the split (0, or more than there are: all)."""
        return batches.evenly_spaced_indices(self.info.num_eval, count)

    def eval_arrays(self, count=0):
        """(inputs, labels) of the `count` evenly spaced held-out examples, in memory."""
        return self.read("eval", self.eval_indices(count))

    def eval_dataset(self, batch_size, count=0):
        """The evenly spaced held-out examples as (inputs, labels, weight) batches of one shape."""
        return batches.eval_dataset(self.eval_arrays(count), batch_size)

    def sample(self, count):
        """The first `count` held-out inputs: what an export is traced and checked with."""
        return self.read("eval", np.arange(min(count, self.info.num_eval)))[0]

    def train_sample(self, count, seed=0):
        """`count` training inputs drawn at random (fixed by `seed`): a calibration set."""
        return self.read("train", np.random.default_rng(seed).permutation(self.info.num_train)[:count])[0]

    def read(self, split, indices):
        """(inputs, labels) numpy arrays of the examples at `indices` of `split`."""
        raise NotImplementedError

    def tokenizer(self):
        """The `tokenizers.Tokenizer` text data was cut with (None for other data): stored in the
        run's workdir and in its export, which then takes raw strings."""
        return None

    def _make_gather(self):
        raise NotImplementedError


class InMemorySource(DataSource):
    """Both splits as (inputs, labels) numpy arrays: the embedded and small tfds data sets."""

    def __init__(self, info, train, eval, tokenizer=None):  # pylint: disable=redefined-builtin
        self.info, self.train, self.eval = info, tuple(train), tuple(eval)
        self._tokenizer = tokenizer

    def tokenizer(self):
        return self._tokenizer

    def _make_gather(self):
        return batches.array_gather(self.train)

    def read(self, split, indices):
        arrays = self.train if split == "train" else self.eval
        return tuple(a[np.asarray(indices, np.int64)] for a in arrays)


class TrainSubset(DataSource):
    """`source` with a training split of `count` of its examples, evenly spaced over it
    (`data.train_examples`): the labelled set of a data-efficiency study or of a fine-tuning
    task with few labels. Classes and files laid out in runs keep their shares; the held-out
    split is the source's own, whole."""

    def __init__(self, source, count):
        self.source = source
        self.indices = batches.evenly_spaced_indices(source.info.num_train, count)
        self.info = dataclasses.replace(source.info, num_train=len(self.indices))

    def tokenizer(self):
        return self.source.tokenizer()

    def read(self, split, indices):
        indices = np.asarray(indices, np.int64)
        return self.source.read(split, self.indices[indices] if split == "train" else indices)

    def _make_gather(self):
        inner = self.source._make_gather()  # pylint: disable=protected-access  (the source it narrows)
        table = tf.constant(self.indices)
        return lambda indices, positions: inner(tf.gather(table, indices), positions)
