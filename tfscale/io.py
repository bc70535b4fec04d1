"""Files that are either whole or absent: write to a temporary name, then rename into place."""
import json
import os
import shutil
import tempfile


def write_json(path, obj):
    """Writes `obj` as indented JSON at `path` atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=".tmp-", suffix=".json", delete=False) as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(f.name, path)


def append_jsonl(path, obj):
    """Appends one JSON object as one line (a single write, flushed)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, sort_keys=True) + "\n")
        f.flush()


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def replace_dir(tmp_path, path):
    """Moves the finished folder `tmp_path` to `path`, replacing what was there, never leaving
    `path` half-written: the old folder is only removed once the new one is in place."""
    old = None
    if os.path.exists(path):
        old = f"{path}.old-{os.getpid()}"
        os.rename(path, old)
    os.rename(tmp_path, path)
    if old:
        shutil.rmtree(old, ignore_errors=True)
