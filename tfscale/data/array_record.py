"""Data sets stored as ArrayRecord shards and read by index: nothing held in memory but the
batches in flight.

A prepared folder (`experiments.prepare`, `write`) holds `manifest.json` and, per split,
`SPLIT-IIIII-of-NNNNN.array_record` shards. Each record is one example: its input's bytes then
its label's, both of the fixed dtype and shape the manifest gives, so a batch of records
decodes with one `np.frombuffer`. Example i of a split is the i-th record across its shards in
order, so the training order stays the pure function of (seed, step) that every source uses
(`batches.index_dataset_fn`): each input pipeline reads only its own rows of each global batch,
with parallel reads and prefetching in tf.data.
"""
import datetime
import hashlib
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf

from tfscale import io
from tfscale.data.info import DataInfo
from tfscale.data.source import DataSource
from tfscale.errors import ConfigError

FORMAT = "tfscale-array-record"
VERSION = 2  # 2: bytes and records of every shard, checked on every load (1: checksums only)
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
SPLITS = ("train", "eval")


def shard_name(split, index, count):
    return f"{split}-{index:05d}-of-{count:05d}.array_record"


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory):
    """The manifest of a prepared folder; a ConfigError naming what is wrong with it."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        raise ConfigError(f"data.path {directory} holds no {MANIFEST}: prepare it with "
                          "`python -m experiments.prepare --config=... --out=DIR`")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") not in READABLE_VERSIONS:
        raise ConfigError(f"{path} is not a {FORMAT} manifest of version {', '.join(map(str, READABLE_VERSIONS))}")
    for split in SPLITS:
        for name in manifest["splits"][split]["files"]:
            _check_shard(directory, name, manifest)
        records = manifest.get("records")
        if records is not None:
            counted = sum(records[name] for name in manifest["splits"][split]["files"])
            if counted != manifest["splits"][split]["num_examples"]:
                raise ConfigError(f"{path} does not match its files: its {split} shards hold {counted} "
                                  f"records, it says {manifest['splits'][split]['num_examples']}")
    return manifest


def _check_shard(directory, name, manifest):
    """A shard must be there, whole: the size the manifest recorded (cheap, every load; the
    SHA-256 is for `experiments.prepare --verify`, which reads every byte)."""
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        raise ConfigError(f"{directory} is missing its shard {name}: prepare it again "
                          "(the same command resumes)")
    size = os.path.getsize(path)
    if size == 0:
        raise ConfigError(f"shard {path} is empty: prepare it again (delete it; the same command rewrites it)")
    expected = manifest.get("bytes", {}).get(name)
    if expected is not None and size != expected:
        raise ConfigError(f"shard {path} is {size} bytes, its manifest says {expected}: truncated or "
                          "replaced; delete it and prepare again (the same command rewrites it)")


def verify(directory):
    """Reads every shard whole: its SHA-256 and its record count against the manifest. Returns
    the number of shards checked; a ConfigError names the first that differs."""
    from array_record.python import array_record_data_source  # pylint: disable=import-outside-toplevel
    manifest = read_manifest(directory)
    names = [n for split in SPLITS for n in manifest["splits"][split]["files"]]
    for name in names:
        path = os.path.join(directory, name)
        if _sha256(path) != manifest["sha256"][name]:
            raise ConfigError(f"shard {path} does not match its manifest's SHA-256: delete it and prepare again")
        if "records" in manifest:
            try:
                count = len(array_record_data_source.ArrayRecordDataSource([path]))
            except Exception as e:  # pylint: disable=broad-except  (the reader's own wording, on one line)
                raise ConfigError(f"shard {path} cannot be read ({str(e).splitlines()[0]})") from None
            if count != manifest["records"][name]:
                raise ConfigError(f"shard {path} holds {count} records, its manifest says {manifest['records'][name]}")
    return len(names)


class ArrayRecordSource(DataSource):
    """A prepared folder of ArrayRecord shards, read by index (see the module docstring)."""

    def __init__(self, directory):
        self.directory = directory
        m = self.manifest = read_manifest(directory)
        self.dtypes = (np.dtype(m["inputs"]["dtype"]), np.dtype(m["labels"]["dtype"]))
        self.shapes = (tuple(m["inputs"]["shape"]), tuple(m["labels"]["shape"]))
        self.widths = tuple(int(np.prod(s, dtype=np.int64)) * d.itemsize for s, d in zip(self.shapes, self.dtypes))
        self.info = DataInfo(m["name"], self.shapes[0], int(m["num_classes"]), float(m["input_scale"]),
                             int(m["splits"]["train"]["num_examples"]), int(m["splits"]["eval"]["num_examples"]),
                             task=m["task"])
        self._readers = {}
        for split in SPLITS:  # a shard cut short at a record boundary still reads: count them
            count, expected = len(self._reader(split)), m["splits"][split]["num_examples"]
            if count != expected:
                raise ConfigError(f"{directory}'s {split} shards hold {count} records, its manifest says "
                                  f"{expected}: prepare it again")

    def _paths(self, split):
        return [os.path.join(self.directory, name) for name in self.manifest["splits"][split]["files"]]

    def _reader(self, split):
        from array_record.python import array_record_data_source  # pylint: disable=import-outside-toplevel
        if split not in self._readers:
            try:
                self._readers[split] = array_record_data_source.ArrayRecordDataSource(self._paths(split))
            except Exception as e:  # pylint: disable=broad-except  (the reader's own wording, on one line)
                raise ConfigError(f"{self.directory}: a {split} shard cannot be read ({str(e).splitlines()[0]}); "
                                  "`python -m experiments.prepare --verify --workdir=DIR` names it") from None
        return self._readers[split]

    def _decode(self, records):
        n = len(records)
        raw = np.frombuffer(b"".join(records), np.uint8).reshape(n, sum(self.widths))
        a = self.widths[0]
        return tuple(np.ascontiguousarray(part).view(dtype).reshape(n, *shape)
                     for part, dtype, shape in zip((raw[:, :a], raw[:, a:]), self.dtypes, self.shapes))

    def read(self, split, indices):
        indices = [int(i) for i in np.asarray(indices).reshape(-1)]
        if not indices:
            return tuple(np.zeros((0, *s), d) for s, d in zip(self.shapes, self.dtypes))
        return self._decode(self._reader(split).__getitems__(indices))

    def _make_gather(self):
        reader = self._reader("train")
        dtypes = [tf.as_dtype(d) for d in self.dtypes]

        def read(indices):
            return self._decode(reader.__getitems__(indices.tolist()))

        def gather(indices, positions):  # pylint: disable=unused-argument
            inputs, labels = tf.numpy_function(read, [indices], dtypes, stateful=False)
            inputs.set_shape([None, *self.shapes[0]])
            labels.set_shape([None, *self.shapes[1]])
            return inputs, labels

        return gather


def write(directory, source, shards=4, description=None):
    """Writes both splits of `source` (any DataSource) as ArrayRecord shards under `directory`,
    with a manifest (counts, bytes, dtypes and shapes, SHA-256 per shard, what it came from).

    Resumable: a shard is written to a temporary name and renamed when complete, and complete
    shards are kept when the same command runs again. Returns the manifest.
    """
    from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel

    os.makedirs(directory, exist_ok=True)
    x, y = source.sample(1), source.read("eval", [0])[1]
    manifest = {
        "format": FORMAT, "version": VERSION, "name": source.info.name, "task": source.info.task,
        "num_classes": source.info.num_classes, "input_scale": source.info.input_scale,
        "inputs": {"dtype": str(x.dtype), "shape": list(x.shape[1:])},
        "labels": {"dtype": str(y.dtype), "shape": list(y.shape[1:])},
        "splits": {}, "sha256": {}, "bytes": {}, "records": {}, "source": description or {},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for split in SPLITS:
        num = source.info.num_train if split == "train" else source.info.num_eval
        count = max(1, min(shards, num))
        bounds = np.linspace(0, num, count + 1).round().astype(np.int64)
        files = []
        for i in range(count):
            name = shard_name(split, i, count)
            path = os.path.join(directory, name)
            files.append(name)
            if not os.path.exists(path):
                tmp = path + ".tmp"
                writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
                for begin in range(int(bounds[i]), int(bounds[i + 1]), 4096):
                    end = min(begin + 4096, int(bounds[i + 1]))
                    inputs, labels = source.read(split, np.arange(begin, end))
                    for a, b in zip(inputs, labels):
                        writer.write(a.tobytes() + b.tobytes())
                writer.close()
                os.replace(tmp, path)
            manifest["sha256"][name] = _sha256(path)
            manifest["bytes"][name] = os.path.getsize(path)
            manifest["records"][name] = int(bounds[i + 1] - bounds[i])
            logging.info("prepare: %s %d/%d (%d examples)", split, i + 1, count, bounds[i + 1] - bounds[i])
        manifest["splits"][split] = {"num_examples": int(num), "files": files,
                                     "bytes": int(sum(os.path.getsize(os.path.join(directory, f)) for f in files))}
    io.write_json(os.path.join(directory, MANIFEST), manifest)
    return manifest
