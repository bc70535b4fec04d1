"""Files that are either whole or absent: write to a temporary name, then rename into place.

Every write goes through `tf.io.gfile`, so a workdir may be a local folder or a `gs://` bucket
path (Cloud TPU VMs) alike. Locally a rename is atomic; on GCS an object only appears once it is
completely written, so readers never see half a file either way. A JSON file damaged all the
same (a disk that filled, a hand edit) is read as a `DamagedFile` naming it, never a traceback.
"""
import json
import os
import posixpath
import uuid

from absl import logging

from tfscale.errors import ConfigError


class _LazyGfile:
    """`tf.io.gfile`, imported on first use: reading a results file need not load TensorFlow."""

    def __getattr__(self, name):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        return getattr(tf.io.gfile, name)


gfile = _LazyGfile()


def is_remote(path):
    """True for a path on a remote filesystem (gs://, s3://, ...), where `os` cannot look."""
    return "://" in str(path)


def join(*parts):
    return posixpath.join(*parts) if is_remote(parts[0]) else os.path.join(*parts)


def dirname(path):
    return posixpath.dirname(path) if is_remote(path) else os.path.dirname(os.path.abspath(path))


def basename(path):
    return posixpath.basename(path) if is_remote(path) else os.path.basename(path)


def exists(path):
    return gfile.exists(path)


def makedirs(path):
    gfile.makedirs(path)


def glob(pattern):
    return gfile.glob(pattern)


def rmtree(path):
    """Removes the folder `path` with everything in it, if it is there."""
    if gfile.exists(path):
        gfile.rmtree(path)


def read_bytes(path):
    with gfile.GFile(path, "rb") as f:
        return f.read()


def remove_leftovers(path):
    """Removes what a write of `path` killed midway left: `.tmp-*-NAME` files beside it
    (`write_bytes`) and `path.tmp-*` / `path.old-*` folders (`replace_dir`). Only for a path
    one process owns (a locked workdir): another writer's file in flight would go too."""
    for leftover in (glob(join(dirname(path), f".tmp-*-{basename(path)}"))
                     + glob(f"{path}.tmp-*") + glob(f"{path}.old-*")):
        if gfile.isdir(leftover):
            gfile.rmtree(leftover)
        else:
            gfile.remove(leftover)


def write_bytes(path, data):
    """Writes `data` (bytes or str) at `path` atomically."""
    tmp = join(dirname(path), f".tmp-{uuid.uuid4().hex}-{basename(path)}")
    try:
        with gfile.GFile(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if gfile.exists(tmp):
            gfile.remove(tmp)
        raise


def write_json(path, obj):
    """Writes `obj` as indented JSON at `path` atomically."""
    write_bytes(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_jsonl(path, obj):
    """Appends one JSON object as one line (a single write, flushed)."""
    with gfile.GFile(path, "a") as f:
        f.write(json.dumps(obj, sort_keys=True) + "\n")
        f.flush()


class DamagedFile(ConfigError):
    """A file that is there but is not JSON (cut short, overwritten): a ConfigError naming it, and
    a ValueError, as `json.load`'s error was, for callers that already expected one."""


def read_json(path):
    """The JSON in `path`; a damaged file is a `DamagedFile` naming it, never a JSONDecodeError.
    Callers add what to do: restore it, or redo the work it records (`read_cache_json`)."""
    data = read_bytes(path)
    try:
        return json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise DamagedFile(f"{path} is damaged (not JSON: {e.msg} at line {e.lineno} column {e.colno})") from None
    except UnicodeDecodeError:
        raise DamagedFile(f"{path} is damaged (not UTF-8 text)") from None


def read_cache_json(path):
    """The JSON object in `path`, or None when it is absent or damaged (a warning names it): for a
    file that only records work that can be redone, so damage means "redo it", not "stop"."""
    if not exists(path):
        return None
    try:
        obj = read_json(path)
    except DamagedFile as e:
        logging.warning("%s; redoing the work it records", e)
        return None
    if not isinstance(obj, dict):
        logging.warning("%s is damaged (not a JSON object); redoing the work it records", path)
        return None
    return obj


def replace_dir(tmp_path, path):
    """Moves the finished folder `tmp_path` to `path`, replacing what was there, never leaving
    `path` half-written: the old folder is only removed once the new one is in place."""
    old = None
    if gfile.exists(path):
        old = f"{path}.old-{os.getpid()}"
        gfile.rename(path, old)
    gfile.rename(tmp_path, path)
    if old:
        try:
            gfile.rmtree(old)
        except Exception:  # pylint: disable=broad-except  (tidying up; the new folder is in place)
            pass
