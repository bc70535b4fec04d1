"""TFRecord shards of `tf.train.Example`s, read sequentially: the files many users already have.

`data.name=tfrecord`, `data.path` the training files (a glob, local or `gs://`), `data.eval_path`
the held-out ones, `data.input_key` / `data.label_key` the features (int64, float or one
bytes value of raw uint8 each, of one length in every record: the shapes are read from the
first record). A label of one value makes a classifier; one per input position, a language
model.

The training stream is a pure function of (seed, input pipeline): epoch e reads this
pipeline's files (file i goes to pipeline i mod P: per-host file sharding, so a host reads
only its own files) in an order drawn from (seed, e), interleaved deterministically, through a
shuffle buffer seeded by the seed. Resume recovers the position from the update count alone:
whole epochs are skipped by their record counts (counted once when the source opens), the
rest of the resumed epoch is read through and dropped. So a run killed outright resumes
exactly where a checkpoint left it, at the cost of re-reading at most one epoch of one host's
files. (A checkpointed tf.data iterator would avoid that re-read, but the iterators
tf.distribute makes for Keras' `fit` cannot be saved.) With one input pipeline (one host, any
number of replicas) every replica sees what one device would; with P hosts each global batch
is made of the hosts' own files, so it differs from a one-host run.
"""
import os

from absl import logging
import numpy as np
import tensorflow as tf

from tfscale import io
from tfscale.data.info import DataInfo
from tfscale.data.source import DataSource
from tfscale.errors import ConfigError

SPLITS = {"train": "path", "eval": "eval_path"}
_KINDS = {"int64_list": (tf.int64, np.int32), "float_list": (tf.float32, np.float32), "bytes_list": (tf.string, np.uint8)}


def _files(pattern, what):
    if not pattern:
        raise ConfigError(f"data.name tfrecord needs data.{what}: a glob of TFRecord files")
    files = sorted(io.gfile.glob(pattern))
    if not files:
        raise ConfigError(f"data.{what} {pattern} matches no file")
    for path in files:
        if io.gfile.stat(path).length == 0:
            raise ConfigError(f"TFRecord file {path} is empty")
    return files


def _first_example(path):
    try:
        record = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as e:
        raise ConfigError(f"TFRecord file {path} cannot be read ({e.message.splitlines()[0]})") from None
    if record is None:
        raise ConfigError(f"TFRecord file {path} holds no record")
    try:
        return tf.train.Example.FromString(record.numpy())
    except Exception:  # pylint: disable=broad-except  (a DecodeError: not an Example)
        raise ConfigError(f"TFRecord file {path}: its records are not tf.train.Example protos") from None


def feature_spec(path, keys):
    """{key: (kind, length)} of the features `keys` of the first record of `path`."""
    features = _first_example(path).features.feature
    spec = {}
    for key in keys:
        if key not in features:
            raise ConfigError(f"TFRecord file {path} has no feature {key!r}; its features: "
                              f"{', '.join(sorted(features))} (set data.input_key and data.label_key)")
        kind = features[key].WhichOneof("kind")
        values = getattr(features[key], kind).value
        length = len(values[0]) if kind == "bytes_list" else len(values)
        if kind == "bytes_list" and len(values) != 1:
            raise ConfigError(f"TFRecord file {path}: feature {key!r} holds {len(values)} byte strings; "
                              "one (raw uint8 bytes) is what can be read")
        spec[key] = (kind, length)
    return spec


def _lengths(values, kind):
    """Values per record of a parsed VarLenFeature batch (bytes: the length of its one string)."""
    if kind == "bytes_list":
        return tf.cast(tf.strings.length(tf.sparse.to_dense(values, default_value=""))[:, 0], tf.int64)
    return tf.math.bincount(tf.cast(values.indices[:, 0], tf.int32), minlength=tf.cast(values.dense_shape[0], tf.int32),
                            dtype=tf.int64)


def count_records(files, keys, spec):
    """(records per file, the largest label of each file), reading each file once. Every record must
    hold its features at the lengths of the first record (`spec`) and labels of 0 or more; a
    damaged file or a record that differs is a ConfigError naming the file and the feature. Every
    label is looked at, so classes found only in a later shard (shards sorted by class) still get
    an output."""
    counts, largest = [], []
    label_key = keys[1]
    feature = {k: tf.io.VarLenFeature(_KINDS[spec[k][0]][0]) for k in keys}

    def summary(records):
        parsed = tf.io.parse_example(records, feature)
        lengths = [_lengths(parsed[k], spec[k][0]) for k in keys]
        labels = parsed[label_key].values
        return (tf.shape(records, out_type=tf.int64)[0], tf.reduce_max(labels), tf.reduce_min(labels),
                *[tf.reduce_min(n) for n in lengths], *[tf.reduce_max(n) for n in lengths])

    big = np.iinfo(np.int64).max
    for path in files:
        ds = tf.data.TFRecordDataset(path).batch(1024).map(summary)
        start = tuple(np.int64(v) for v in (0, -1, big, big, big, -1, -1))
        try:
            n, top, low, *ranges = ds.reduce(start, lambda a, x: (
                a[0] + x[0], tf.maximum(a[1], x[1]), tf.minimum(a[2], x[2]), tf.minimum(a[3], x[3]),
                tf.minimum(a[4], x[4]), tf.maximum(a[5], x[5]), tf.maximum(a[6], x[6])))
        except tf.errors.OpError as e:
            raise ConfigError(f"TFRecord file {path} is damaged (truncated or corrupt: "
                              f"{e.message.splitlines()[0]})") from None
        for key, shortest, longest in zip(keys, ranges[:2], ranges[2:]):
            if int(n) and (int(shortest) != spec[key][1] or int(longest) != spec[key][1]):
                other = int(shortest) if int(shortest) != spec[key][1] else int(longest)
                raise ConfigError(f"TFRecord file {path}: feature {key!r} holds {other} values in some records, "
                                  f"{spec[key][1]} in the first: every record must hold the same number")
        if int(n) and int(low) < 0:
            raise ConfigError(f"TFRecord file {path}: feature {label_key!r} holds the label {int(low)}; labels "
                              "are classes 0, 1, ...")
        counts.append(int(n))
        largest.append(int(top))
    return counts, largest


def _seed(seed, epoch, salt):
    return tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + salt, tf.cast(epoch, tf.int64)])


class TFRecordSource(DataSource):
    """Training and held-out TFRecord files of tf.train.Examples (see the module docstring)."""

    def __init__(self, data_config):
        self.keys = (data_config.input_key or "inputs", data_config.label_key or "labels")
        self.shuffle_buffer = int(data_config.get("shuffle_buffer", 10_000))
        self.files = {split: _files(data_config.get(key, ""), key) for split, key in SPLITS.items()}
        self.spec = feature_spec(self.files["train"][0], self.keys)
        for split in self.files:  # every file must hold the same features
            for path in self.files[split][:1] + self.files[split][-1:]:
                if feature_spec(path, self.keys) != self.spec:
                    raise ConfigError(f"TFRecord file {path}: features {feature_spec(path, self.keys)} differ "
                                      f"from {self.files['train'][0]}'s {self.spec}")
        (in_kind, in_len), (label_kind, label_len) = (self.spec[k] for k in self.keys)
        if label_kind != "int64_list":
            raise ConfigError(f"TFRecord feature {self.keys[1]!r} of {self.files['train'][0]} holds "
                              f"{label_kind.split('_')[0]}s: labels must be integer classes (int64)")
        counted = {split: count_records(files, self.keys, self.spec) for split, files in self.files.items()}
        self.counts = {split: c for split, (c, _) in counted.items()}
        task = "classifier" if label_len == 1 else "lm"
        if task == "lm" and label_len != in_len:
            raise ConfigError(f"TFRecord features: {label_len} labels for {in_len} inputs; a label per example "
                              "(classifier) or per input position (language model)")
        self._eval = None
        self.origin = f"TFRecord files {data_config.path}"
        # Classes (or token ids): one more than the largest training label.
        num_classes = max(counted["train"][1]) + 1
        if task == "lm":
            num_classes = max(256, num_classes, max(counted["eval"][1]) + 1)
        else:  # a held-out class the model never saw would get a logit that nothing trained
            for path, top in zip(self.files["eval"], counted["eval"][1]):
                if top >= num_classes:
                    raise ConfigError(f"TFRecord file {path}: feature {self.keys[1]!r} holds the label {top}, which "
                                      f"no training file holds (their labels are 0..{num_classes - 1})")
        in_dtype = _KINDS[in_kind][1]
        self.info = DataInfo(os.path.basename(os.path.dirname(self.files["train"][0])) or "tfrecord", (in_len,),
                             num_classes, 1.0 / 255 if in_dtype == np.uint8 and task == "classifier" else 1.0,
                             sum(self.counts["train"]), sum(self.counts["eval"]), task=task)
        logging.info("tfrecord: %d training records in %d files, %d held out in %d", self.info.num_train,
                     len(self.files["train"]), self.info.num_eval, len(self.files["eval"]))

    # -- parsing -------------------------------------------------------------------------------
    def _parse(self, serialized):
        """A batch of serialized Examples -> (inputs, labels) of fixed shapes."""
        features = {k: tf.io.FixedLenFeature([] if self.spec[k][0] == "bytes_list" else [self.spec[k][1]],
                                             _KINDS[self.spec[k][0]][0]) for k in self.keys}
        parsed = tf.io.parse_example(serialized, features)
        out = []
        for key in self.keys:
            kind, length = self.spec[key]
            value = parsed[key]
            if kind == "bytes_list":
                value = tf.reshape(tf.io.decode_raw(value, tf.uint8), [-1, length])
            elif kind == "int64_list":
                value = tf.cast(value, tf.int32)
            out.append(value)
        inputs, labels = out
        return inputs, (labels[:, 0] if self.spec[self.keys[1]][1] == 1 else labels)

    def _parse_all(self, files):
        ds = tf.data.TFRecordDataset(files).batch(4096).map(self._parse)
        parts = [(x.numpy(), y.numpy()) for x, y in ds]
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(2))

    # -- DataSource ------------------------------------------------------------------------------
    def read(self, split, indices):
        indices = np.asarray(indices, np.int64).reshape(-1)
        if split == "eval":
            if self._eval is None:  # the held-out files, read once: what evaluations measure
                self._eval = self._parse_all(self.files["eval"])
            return tuple(a[indices] for a in self._eval)
        # Training records are never held whole: read in order up to the largest index asked for.
        wanted, found = np.sort(np.unique(indices)), {}
        ds = tf.data.TFRecordDataset(self.files["train"]).take(int(wanted[-1]) + 1 if len(wanted) else 0)
        for i, record in enumerate(ds.batch(4096)):
            begin = i * 4096
            rows = wanted[(wanted >= begin) & (wanted < begin + len(record))]
            if len(rows):
                x, y = self._parse(tf.gather(record, rows - begin))
                found.update({int(r): (a, b) for r, a, b in zip(rows, x.numpy(), y.numpy())})
        return tuple(np.stack([found[int(i)][k] for i in indices]) if len(indices) else
                     np.zeros((0,), np.int32) for k in range(2))

    def train_sample(self, count, seed=0):
        """`count` records from the start of a seeded shuffle of the first file's records."""
        ds = tf.data.TFRecordDataset(self.files["train"]).take(max(count * 4, self.shuffle_buffer))
        ds = ds.shuffle(max(count * 4, 1), seed=seed).take(count).batch(count).map(self._parse)
        return next(iter(ds))[0].numpy()

    def train_dataset_fn(self, global_batch_size, seed, start_step, num_steps):
        files = self.files["train"]

        def dataset_fn(ctx=None):
            ctx = ctx or tf.distribute.InputContext()
            pipes, pipe = ctx.num_input_pipelines, ctx.input_pipeline_id
            mine = files[pipe::pipes]
            if not mine:
                raise ConfigError(f"{len(files)} TFRecord training files cannot feed {pipes} input pipelines: "
                                  "write at least one file per host")
            per_epoch = sum(self.counts["train"][pipe::pipes])
            rows = global_batch_size // pipes
            per_replica = ctx.get_per_replica_batch_size(global_batch_size)
            skip_epochs, skip_rows = divmod(start_step * rows, per_epoch)
            names = tf.constant(mine)

            def epoch(e):
                order = tf.argsort(tf.random.stateless_uniform([len(mine)], seed=_seed(seed, e, 1)), stable=True)
                records = tf.data.Dataset.from_tensor_slices(tf.gather(names, order)).interleave(
                    tf.data.TFRecordDataset, cycle_length=min(4, len(mine)), block_length=1,
                    num_parallel_calls=min(4, len(mine)), deterministic=True)
                # tf.data takes only a Python seed here: the buffer's draws repeat each epoch, over
                # records that arrive in that epoch's own file order.
                return records.shuffle(self.shuffle_buffer, seed=int(seed) * 1_000_003 + 2,
                                       reshuffle_each_iteration=False)

            stream = tf.data.Dataset.range(skip_epochs, 2**62).flat_map(epoch).skip(skip_rows)
            ds = stream.batch(rows, drop_remainder=True).take(num_steps - start_step)
            ds = ds.map(lambda r: tuple(tf.reshape(t, [rows // per_replica, per_replica, *t.shape[1:]])
                                        for t in self._parse(r)), num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
            return ds.unbatch().map(lambda x, y: (tf.cast(x, tf.float32) if x.dtype == tf.uint8 else x, y)
                                    ).prefetch(tf.data.AUTOTUNE)

        return dataset_fn


def write(directory, source, shards=4, input_key="inputs", label_key="labels"):
    """Writes a DataSource's splits as `train-*.tfrecord` / `eval-*.tfrecord` Examples (int64
    features; uint8 inputs as one raw bytes value): test data, and a way to hand data to tools
    that read TFRecords."""
    io.makedirs(directory)

    def feature(array):
        if array.dtype == np.uint8:
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[array.tobytes()]))
        if np.issubdtype(array.dtype, np.floating):
            return tf.train.Feature(float_list=tf.train.FloatList(value=array.ravel().tolist()))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=array.ravel().tolist()))

    for split, num in (("train", source.info.num_train), ("eval", source.info.num_eval)):
        count = max(1, min(shards, num))
        bounds = np.linspace(0, num, count + 1).round().astype(np.int64)
        for i in range(count):
            inputs, labels = source.read(split, np.arange(bounds[i], bounds[i + 1]))
            with tf.io.TFRecordWriter(io.join(directory, f"{split}-{i:05d}-of-{count:05d}.tfrecord")) as w:
                for x, y in zip(inputs, labels):
                    w.write(tf.train.Example(features=tf.train.Features(feature={
                        input_key: feature(np.asarray(x)), label_key: feature(np.atleast_1d(y))})).SerializeToString())
