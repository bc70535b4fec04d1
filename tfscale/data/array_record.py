"""Data sets stored as ArrayRecord shards and read by index: nothing held in memory but the
batches in flight.

A prepared folder (`experiments.prepare`, `write`) holds `manifest.json` and, per split,
`SPLIT-IIIII-of-NNNNN.array_record` shards. Each record is one example: its input's bytes then
its label's, both of the fixed dtype and shape the manifest gives, so a batch of records
decodes with one `np.frombuffer`. Example i of a split is the i-th record across its shards in
order, so the training order stays the pure function of (seed, step) that every source uses
(`batches.index_dataset_fn`): each input pipeline reads only its own rows of each global batch,
with parallel reads and prefetching in tf.data.

Writing (`preparing`) holds the folder's workdir lock (the one training takes: one process at a
time), records the settings in `prepare.json` so a re-run with others is refused rather than
mixed in, and takes back what a prepare that failed before its first complete shard wrote.
"""
import contextlib
import datetime
import hashlib
import json
import os
import shutil

from absl import logging
import numpy as np
import tensorflow as tf

from tfscale import io
from tfscale.lock import WorkdirLock
from tfscale.data.info import DataInfo
from tfscale.data.source import UNREADABLE, DataSource
from tfscale.errors import ConfigError

FORMAT = "tfscale-array-record"
VERSION = 2  # 2: bytes and records of every shard, checked on every load (1: checksums only)
READABLE_VERSIONS = (1, 2)
# One record per chunk (random access reads one chunk), uncompressed: on 129-byte records,
# 4x faster to read by index than the default brotli, and no larger.
WRITER_OPTIONS = "group_size:1,uncompressed"
MANIFEST = "manifest.json"
SETTINGS = "prepare.json"  # what a folder was prepared with; a re-run must ask for the same
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
                          "`python -m experiments.prepare --config=... --workdir=DIR`")
    try:
        with open(path, "rb") as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError alike
        raise ConfigError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or manifest.get("version") not in READABLE_VERSIONS:
        raise ConfigError(f"{path} is not a {FORMAT} manifest of version {', '.join(map(str, READABLE_VERSIONS))}")
    _check_layout(path, manifest)
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


def _check_layout(path, manifest):
    """The keys every reader indexes, there and of the right kind: a manifest cut or edited by
    hand is one line naming it, not a KeyError."""
    try:
        for split in SPLITS:
            entry = manifest["splits"][split]
            if not isinstance(entry["files"], list) or not all(isinstance(n, str) for n in entry["files"]) \
                    or not isinstance(entry["num_examples"], int):
                raise TypeError(split)
            records = manifest.get("records", {})
            if not isinstance(records, dict) or ("records" in manifest and not all(
                    isinstance(records.get(n), int) for n in entry["files"])):
                raise TypeError("records")
        for key in ("sha256", "bytes", "tokenizer"):
            if not isinstance(manifest.get(key, {}), dict):
                raise TypeError(key)
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{path} is damaged (its {e.args[0] if e.args else ''} entry is missing or malformed): "
                          "prepare the folder again") from None


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
    """Reads every file the manifest hashes whole: each shard's SHA-256 and record count, and
    the tokenizer's model and spec (`_verify_tokenizer`). Returns the number of files checked;
    a ConfigError names the first that differs."""
    from array_record.python import array_record_data_source  # pylint: disable=import-outside-toplevel
    manifest = read_manifest(directory)
    names = [n for split in SPLITS for n in manifest["splits"][split]["files"]]
    for name in names:
        path = os.path.join(directory, name)
        if name not in manifest.get("sha256", {}):
            raise ConfigError(f"{os.path.join(directory, MANIFEST)} records no SHA-256 of shard {name}: "
                              "prepare the folder again")
        if _sha256(path) != manifest["sha256"][name]:
            raise ConfigError(f"shard {path} does not match its manifest's SHA-256: delete it and prepare again")
        if "records" in manifest:
            try:
                count = len(array_record_data_source.ArrayRecordDataSource([path]))
            except Exception as e:  # pylint: disable=broad-except  (the reader's own wording, on one line)
                raise ConfigError(f"shard {path} cannot be read ({str(e).splitlines()[0]})") from None
            if count != manifest["records"][name]:
                raise ConfigError(f"shard {path} holds {count} records, its manifest says {manifest['records'][name]}")
    return len(names) + (_verify_tokenizer(directory, manifest["tokenizer"]) if "tokenizer" in manifest else 0)


def _verify_tokenizer(directory, spec):
    """The tokenizer stored with the shards: its model's SHA-256 against the manifest's (a
    flipped byte in `tokenizer.model` changes every id), and `tokenizer.json` naming the same
    tokenizer. Returns the number of files checked."""
    from tfscale.data import tokenizers  # pylint: disable=import-outside-toplevel
    again = f"delete {tokenizers.MODEL_FILE} and {tokenizers.SPEC_FILE} and prepare again (the same command " \
            "trains the same model)"
    checked = 1
    if spec.get("sha256"):
        path = os.path.join(directory, tokenizers.MODEL_FILE)
        if not os.path.isfile(path):
            raise ConfigError(f"{directory} is missing its tokenizer model {tokenizers.MODEL_FILE}: {again}")
        if _sha256(path) != spec["sha256"]:
            raise ConfigError(f"tokenizer model {path} does not match its manifest's SHA-256: {again}")
        checked += 1
    if not tokenizers.same(tokenizers.load(directory).spec(), spec):
        raise ConfigError(f"{os.path.join(directory, tokenizers.SPEC_FILE)} does not describe the tokenizer "
                          f"its manifest names: {again}")
    return checked


def _declared(manifest, key, directory):
    """(dtype, shape) of the manifest's field `key`; a ConfigError naming the field if either is
    not one numpy reads."""
    field = manifest.get(key) or {}
    try:
        dtype = np.dtype(field["dtype"])
        shape = tuple(int(d) for d in field["shape"])
        if any(d < 1 for d in shape):
            raise ValueError(f"a dimension below 1 in {shape}")
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{os.path.join(directory, MANIFEST)}: field {key!r} ({json.dumps(field)}) is not a "
                          f"numpy dtype and shape ({type(e).__name__}: {e}); prepare the folder again") from None
    return dtype, shape


class ArrayRecordSource(DataSource):
    """A prepared folder of ArrayRecord shards, read by index (see the module docstring)."""

    def __init__(self, directory):
        self.directory = directory
        m = self.manifest = read_manifest(directory)
        self.dtypes, self.shapes = zip(*(_declared(m, key, directory) for key in ("inputs", "labels")))
        self.window = m.get("window") if m.get("layout") == "window" else None  # LM windows, stored once
        if self.window is not None:
            _declared({"window": {**self.window, "shape": [self.window.get("length")]}}, "window", directory)
        self.widths = tuple(int(np.prod(s, dtype=np.int64)) * d.itemsize for s, d in zip(self.shapes, self.dtypes))
        self.info = DataInfo(m["name"], self.shapes[0], int(m["num_classes"]), float(m["input_scale"]),
                             int(m["splits"]["train"]["num_examples"]), int(m["splits"]["eval"]["num_examples"]),
                             task=m["task"], bytes_per_token=float(m.get("bytes_per_token", 1.0)))
        self.origin = os.path.join(directory, MANIFEST)
        self._readers = {}
        for split in SPLITS:  # a shard cut short at a record boundary still reads: count them
            count, expected = len(self._reader(split)), m["splits"][split]["num_examples"]
            if count != expected:
                raise ConfigError(f"{directory}'s {split} shards hold {count} records, its manifest says "
                                  f"{expected}: prepare it again")
            if count:
                self._check_record_size(split)

    def _check_record_size(self, split):
        """A record must be as long as the manifest's dtypes and shapes make it (an edited
        manifest would otherwise fail inside the first update, or decode garbage)."""
        size = len(self._reader(split).__getitems__([0])[0])
        if self.window is not None:
            fields = f"window ({self.window['dtype']} x {self.window['length']})"
            expected = np.dtype(self.window["dtype"]).itemsize * int(self.window["length"])
        else:
            fields = " + ".join(f"{k} ({d} {list(s)})" for k, d, s in zip(("inputs", "labels"), self.dtypes, self.shapes))
            expected = sum(self.widths)
        if size != expected:
            raise ConfigError(f"{self.origin}: its {fields} make records of {expected} bytes, the {split} shards "
                              f"hold records of {size}: the manifest was edited or the shards replaced; prepare "
                              "the folder again")

    def tokenizer(self):
        """The tokenizer stored with the shards (`experiments.prepare --files`), if any."""
        if "tokenizer" not in self.manifest:
            return None
        from tfscale.data import tokenizers  # pylint: disable=import-outside-toplevel
        tokenizer = tokenizers.load(self.directory)
        if not tokenizers.same(tokenizer.spec(), self.manifest["tokenizer"]):
            raise ConfigError(f"{self.directory}'s tokenizer files do not match its manifest: prepare it again")
        return tokenizer

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
        if self.window is not None:
            w = np.frombuffer(b"".join(records), self.window["dtype"]).reshape(n, self.window["length"]).astype(np.int32)
            return w[:, :-1], np.ascontiguousarray(w[:, 1:])
        raw = np.frombuffer(b"".join(records), np.uint8).reshape(n, sum(self.widths))
        a = self.widths[0]
        return tuple(np.ascontiguousarray(part).view(dtype).reshape(n, *shape)
                     for part, dtype, shape in zip((raw[:, :a], raw[:, a:]), self.dtypes, self.shapes))

    def read(self, split, indices):
        indices = [int(i) for i in np.asarray(indices).reshape(-1)]
        if not indices:
            return tuple(np.zeros((0, *s), d) for s, d in zip(self.shapes, self.dtypes))
        try:
            return self._decode(self._reader(split).__getitems__(indices))
        except Exception as e:  # pylint: disable=broad-except  (a damaged shard: name it)
            raise ConfigError(self._unreadable(split, indices, e)) from None

    def _unreadable(self, split, indices, error):
        """Which shard of `split` holds the first of `indices` that cannot be read, in one line."""
        reader, files = self._reader(split), self.manifest["splits"][split]["files"]
        ends = np.cumsum([self.manifest.get("records", {}).get(f, 0) for f in files])
        for i in indices:
            try:
                reader.__getitems__([i])
            except Exception as e:  # pylint: disable=broad-except
                error = e
                if ends[-1]:
                    files = [files[min(int(np.searchsorted(ends, i, side="right")), len(files) - 1)]]
                break
        where = os.path.join(self.directory, files[0]) if len(files) == 1 else f"a {split} shard of {self.directory}"
        return (f"{where} cannot be read ({str(error).splitlines()[0][:200]}): check the folder with `python -m "
                f"experiments.prepare --verify --workdir={self.directory}` and prepare it again (the same "
                "command writes damaged shards again)")

    def _make_gather(self):
        reader = self._reader("train")
        dtypes = [tf.as_dtype(d) for d in self.dtypes]

        def read(indices):
            try:
                return self._decode(reader.__getitems__(indices.tolist()))
            except Exception as e:  # pylint: disable=broad-except  (a damaged shard: name it)
                raise ValueError(UNREADABLE + self._unreadable("train", indices.tolist(), e)) from None

        def gather(indices, positions):  # pylint: disable=unused-argument
            inputs, labels = tf.numpy_function(read, [indices], dtypes, stateful=False)
            inputs.set_shape([None, *self.shapes[0]])
            labels.set_shape([None, *self.shapes[1]])
            return inputs, labels

        return gather


def _flat(settings, prefix=""):
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_settings(directory, settings, record=True):
    """Records `settings` (JSON data) in the folder's prepare.json (if `record`), or, if it holds
    one, refuses other settings: shards of two settings would mix in one folder and pass no
    `--verify`."""
    path = os.path.join(directory, SETTINGS)
    if not os.path.exists(path):
        if record:
            io.write_json(path, settings)
        return
    try:
        with open(path, "rb") as f:
            before = json.loads(f.read().decode("utf-8"))
    except ValueError as e:
        raise ConfigError(f"{path} is damaged ({e}): delete the folder and prepare it again") from None
    before, now = _flat(before) if isinstance(before, dict) else {}, _flat(json.loads(json.dumps(settings)))
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise ConfigError(f"{directory} was prepared with other settings ({shown} differ): "
                          "prepare into a new folder, or delete it")


@contextlib.contextmanager
def preparing(directory, settings):
    """The block that writes a prepared folder: checked (`check_folder`), locked (the workdir
    lock of training: a second prepare is refused naming the holder), its settings recorded or
    compared (`check_settings`). If the block fails before the folder holds a complete shard,
    what it wrote goes again (a folder that was there stays, as it was), so the corrected
    command is not refused for settings that never produced anything; once a shard is
    complete, it stays and the same command resumes."""
    check_folder(directory)
    check_settings(directory, settings, record=False)  # refused before the lock touches the folder
    created = _missing_folders(directory)
    had_lock = os.path.exists(os.path.join(directory, ".lock"))
    lock = WorkdirLock(directory)
    try:
        lock.acquire()
    except ConfigError:
        raise
    except Exception as e:  # pylint: disable=broad-except  (the folder cannot be made: one line)
        raise ConfigError(f"--workdir {directory} cannot be written ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    before = set(os.listdir(directory)) - (set() if had_lock else {".lock"})
    taken_back = False
    try:
        check_settings(directory, settings)
        yield
    except BaseException:
        taken_back = _take_back(directory, before)
        raise
    finally:
        lock.release()
        for folder in created if taken_back else ():
            try:
                os.rmdir(folder)
            except OSError:  # not empty: something else is there now; leave it
                break


def check_folder(directory, purpose="to prepare into"):
    """A folder to prepare into or verify: named, local (shards are written and read with local
    file calls), and a folder or not there yet."""
    if not str(directory or "").strip():
        raise ConfigError(f"--workdir is empty (an unset shell variable?); name the folder {purpose}")
    if io.is_remote(directory):
        raise ConfigError(f"--workdir {directory} is not a local folder: prepare into a local one, then copy it")
    parent = directory
    while not os.path.exists(parent):
        parent = os.path.dirname(os.path.abspath(parent))
    if not os.path.isdir(parent):
        where = "" if os.path.abspath(parent) == os.path.abspath(directory) else f" ({parent} is a file)"
        raise ConfigError(f"--workdir {directory} is not a folder{where}: name the folder {purpose}")


def _missing_folders(directory):
    """The folders that making `directory` creates, deepest first."""
    missing, folder = [], os.path.abspath(directory)
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def _take_back(directory, before):
    """Removes what a failed prepare added to `directory` (not its entries in `before`) unless it
    holds a complete shard, which a re-run keeps. Returns whether it removed anything."""
    if any(name.endswith(".array_record") for name in os.listdir(directory)):
        return False
    for name in sorted(set(os.listdir(directory)) - before):
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    logging.info("prepare: failed before its first shard; %s is left as it was", directory)
    return True


def _manifest_head(name, task, num_classes, input_scale, inputs, labels, description, **extra):
    return {"format": FORMAT, "version": VERSION, "name": name, "task": task, "num_classes": int(num_classes),
            "input_scale": float(input_scale), "inputs": inputs, "labels": labels, **extra,
            "splits": {}, "sha256": {}, "bytes": {}, "records": {}, "source": description or {},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _kept_whole(path, name, records, directory):
    """Whether a shard a re-run finds can be kept: the size and SHA-256 the folder's manifest
    recorded for it (or, before any manifest, the records it should hold). A shard damaged since
    is written again (a warning names it) rather than recorded anew as if it were whole."""
    previous = io.read_cache_json(os.path.join(directory, MANIFEST)) or {}
    size, digest = previous.get("bytes", {}).get(name), previous.get("sha256", {}).get(name)
    if size is not None and digest is not None:
        whole = os.path.getsize(path) == size and _sha256(path) == digest
    else:
        from array_record.python import array_record_data_source  # pylint: disable=import-outside-toplevel
        try:
            whole = len(array_record_data_source.ArrayRecordDataSource([path])) == records
        except Exception:  # pylint: disable=broad-except  (unreadable: not whole)
            whole = False
    if not whole:
        logging.warning("prepare: shard %s is not as it was written (size, SHA-256 or records differ): "
                        "writing it again", path)
    return whole


def _write_split(directory, manifest, split, num, records, shards, progress=None):
    """Shards of `num` records of one split; `records(begin, end)` gives the bytes of records
    begin..end-1. A shard is written to a temporary name and renamed when complete; complete
    ones are kept, so an interrupted prepare resumes where it stopped."""
    from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
    count = max(1, min(shards, num))
    bounds = np.linspace(0, num, count + 1).round().astype(np.int64)
    files = []
    for i in range(count):
        name = shard_name(split, i, count)
        path = os.path.join(directory, name)
        files.append(name)
        if os.path.exists(path) and not _kept_whole(path, name, int(bounds[i + 1] - bounds[i]), directory):
            os.remove(path)
        if not os.path.exists(path):
            tmp = path + ".tmp"
            writer = array_record_module.ArrayRecordWriter(tmp, WRITER_OPTIONS)
            for begin in range(int(bounds[i]), int(bounds[i + 1]), 4096):
                for record in records(begin, min(begin + 4096, int(bounds[i + 1]))):
                    writer.write(record)
            writer.close()
            os.replace(tmp, path)
        manifest["sha256"][name] = _sha256(path)
        manifest["bytes"][name] = os.path.getsize(path)
        manifest["records"][name] = int(bounds[i + 1] - bounds[i])
        logging.info("prepare: %s shard %d/%d (%d records)", split, i + 1, count, bounds[i + 1] - bounds[i])
        if progress is not None:
            progress.update(1)
    manifest["splits"][split] = {"num_examples": int(num), "files": files,
                                 "bytes": int(sum(manifest["bytes"][f] for f in files))}


def write(directory, source, shards=4, description=None):
    """Writes both splits of `source` (any DataSource) as ArrayRecord shards under `directory`,
    with a manifest (counts, bytes, dtypes and shapes, SHA-256 per shard, what it came from).
    Resumable (`_write_split`). Returns the manifest.
    """
    os.makedirs(directory, exist_ok=True)
    x, y = source.sample(1), source.read("eval", [0])[1]
    info = source.info
    manifest = _manifest_head(info.name, info.task, info.num_classes, info.input_scale,
                              {"dtype": str(x.dtype), "shape": list(x.shape[1:])},
                              {"dtype": str(y.dtype), "shape": list(y.shape[1:])}, description)

    def records(split):
        def read(begin, end):
            inputs, labels = source.read(split, np.arange(begin, end))
            return [a.tobytes() + b.tobytes() for a, b in zip(inputs, labels)]
        return read

    for split in SPLITS:
        num = info.num_train if split == "train" else info.num_eval
        _write_split(directory, manifest, split, num, records(split), shards)
    io.write_json(os.path.join(directory, MANIFEST), manifest)
    return manifest


def token_dtype(vocab_size):
    """The smallest unsigned integer type that holds every token id."""
    return np.dtype(np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32)


def write_windows(directory, tokens, vocab_size, seq_len, shards=4, name="corpus", description=None, progress=None,
                  **extra):
    """Language-model windows: each split's token stream ({"train", "eval"}: 1-D arrays) cut
    into windows of seq_len + 1 tokens (the remainder dropped), one record each, stored in the
    smallest integer type of the vocabulary; read back as (inputs, targets) = (window[:-1],
    window[1:]) int32. `extra` goes into the manifest (tokenizer, split rule, counts)."""
    os.makedirs(directory, exist_ok=True)
    dtype, length = token_dtype(vocab_size), seq_len + 1
    shape = {"dtype": "int32", "shape": [seq_len]}
    manifest = _manifest_head(name, "lm", vocab_size, 1.0, shape, dict(shape), description,
                              layout="window", window={"dtype": dtype.name, "length": length}, **extra)
    for split in SPLITS:
        stream = np.asarray(tokens[split])
        windows = stream[:len(stream) // length * length].astype(dtype).reshape(-1, length)
        _write_split(directory, manifest, split, len(windows),
                     lambda begin, end, w=windows: [row.tobytes() for row in w[begin:end]], shards, progress)
    io.write_json(os.path.join(directory, MANIFEST), manifest)
    return manifest
