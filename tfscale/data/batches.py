"""Input pipelines: one global batch per optimizer update, split across replicas.

The training order is a pure function of (seed, step): epoch e visits the examples in a
permutation drawn from the stateless seed (seed, e), and update s takes positions
[s*B, (s+1)*B) of that endless stream. So the order never depends on how often the data set
was iterated, and a resumed run starts exactly where the interrupted one stopped.

Each input pipeline (one per worker) gathers only its contiguous slice of the global batch and
hands consecutive per-replica slices to its replicas, so replica r always sees rows
[r*b, (r+1)*b) of the same global batch, whatever the number of replicas or workers.
"""
import numpy as np
import tensorflow as tf


def epoch_order(num_examples, seed, epoch):
    """The permutation of example indices for one epoch (stateless: same inputs, same order)."""
    keys = tf.random.stateless_uniform([num_examples], seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
    return tf.argsort(keys, stable=True)


def _as_model_input(x):
    """Raw uint8 pixels become float32 (the model rescales them); token ids stay integers."""
    return tf.cast(x, tf.float32) if x.dtype == tf.uint8 else x


def check_batch_size(num_examples, global_batch_size):
    """A global batch may not be larger than one epoch (it would repeat examples within a batch)."""
    if global_batch_size > num_examples:
        from tfscale.errors import ConfigError  # pylint: disable=import-outside-toplevel
        raise ConfigError(f"train.batch_size {global_batch_size} exceeds the {num_examples} "
                          "training examples of the data set")


def train_dataset_fn(arrays, global_batch_size, seed, start_step, num_steps):
    """A `dataset_fn(input_context)` for `strategy.distribute_datasets_from_function` over an
    (inputs, labels) pair of numpy arrays held in memory (`index_dataset_fn`)."""

    return index_dataset_fn(len(arrays[1]), lambda: array_gather(arrays), global_batch_size, seed, start_step,
                            num_steps)


def array_gather(arrays):
    """`gather(indices, positions)` over in-memory (inputs, labels) arrays, as constants of the
    calling tf.data graph."""
    tensors = tuple(tf.constant(a) for a in arrays)
    return lambda indices, positions: tuple(tf.gather(t, indices) for t in tensors)


def index_dataset_fn(num_examples, make_gather, global_batch_size, seed, start_step, num_steps):
    """A `dataset_fn(input_context)` yielding per-replica batches for updates start_step ..
    num_steps-1 of any random-access source.

    `make_gather()` is called once per input pipeline (inside the worker's own tf.data graph)
    and returns `gather(indices, positions) -> (inputs, labels)` for 1-D tensors of example
    indices and of their positions in the endless training stream (update * global batch +
    row: what a per-example random transform such as masking is seeded with, so it is the same
    on any number of replicas and after a resume); each pipeline gathers only its own rows of
    the global batch, so a host never reads the others'.
    """
    check_batch_size(num_examples, global_batch_size)
    first_epoch, offset = divmod(start_step * global_batch_size, num_examples)

    def dataset_fn(ctx=None):
        ctx = ctx or tf.distribute.InputContext()
        rows = global_batch_size // ctx.num_input_pipelines
        per_replica = ctx.get_per_replica_batch_size(global_batch_size)
        local_replicas = rows // per_replica
        begin = ctx.input_pipeline_id * rows
        gather_rows = make_gather()

        def gather(step, indices):
            positions = step * global_batch_size + begin + tf.range(rows, dtype=tf.int64)
            inputs, labels = gather_rows(indices[begin:begin + rows], positions)
            # Static shapes (a TPU compiles one program): a gather must give them per example.
            inputs, labels = (tf.reshape(t, [local_replicas, per_replica, *t.shape[1:]])
                              for t in (inputs, labels))
            return _as_model_input(inputs), labels

        order = tf.data.Dataset.range(first_epoch, 2**62).flat_map(
            lambda e: tf.data.Dataset.from_tensor_slices(epoch_order(num_examples, seed, e)))
        ds = order.skip(offset).batch(global_batch_size, drop_remainder=True)
        ds = ds.take(num_steps - start_step).enumerate(start_step)
        ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.unbatch().prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def evenly_spaced_indices(num, count):
    """`count` indices spread evenly over `num` examples (0 or more than there are: all of them).

    A prefix of a text split would come from its first few files only; a fixed stride keeps
    the subset as varied as the split, and the same for every run that asks for it.
    """
    if not count or count >= num:
        return np.arange(num, dtype=np.int64)
    return np.linspace(0, num - 1, count).round().astype(np.int64)


def evenly_spaced(arrays, count):
    """The `evenly_spaced_indices` rows of in-memory (inputs, labels) arrays."""
    if not count or count >= len(arrays[1]):
        return arrays
    rows = evenly_spaced_indices(len(arrays[1]), count)
    return tuple(a[rows] for a in arrays)


def eval_dataset(arrays, batch_size):
    """The held-out split in order as (inputs, labels, weight) batches of one static shape.

    The last batch is filled up with zero examples of weight 0 (real ones have weight 1), so a
    TPU compiles one program and every example counts exactly once; Keras distributes it under a
    strategy and `AccumulatingModel.test_step` weights the loss and metrics with it.
    """
    num = len(arrays[1])
    pad = -num % batch_size
    padded = tuple(np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) for a in arrays)
    weight = np.concatenate([np.ones(num, np.float32), np.zeros(pad, np.float32)])
    ds = tf.data.Dataset.from_tensor_slices((*padded, weight))
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.map(lambda x, y, w: (_as_model_input(x), y, w)).prefetch(tf.data.AUTOTUNE)
