"""A sweep's results as one small JSON file per run, `DIR/results/NAME.json`, and the
`DIR/results.jsonl` assembled from them.

One file per run needs no appends and no locks, so shards (and pool workers) can share a
folder on an object store (`gs://`) as well as on a POSIX file system: each file is written
whole through `tfscale.io`, and a retried run simply replaces its file. `results.jsonl` is
rebuilt from the files in planned order (then any other names, sorted), so it is the same
whichever shards or workers ran what. A sweep that only has `results.jsonl` (older folders)
is still read: its last row per name counts wherever the run has no file of its own.
"""
import hashlib
import json
import re

from tfscale import io

RESULTS_FILE = "results.jsonl"
RESULTS_DIR = "results"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def row_path(workdir, name):
    """Where run `name`'s row lives; names with characters unsafe in paths get a hash suffix."""
    safe = _UNSAFE.sub("_", name)
    if safe != name or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return io.join(workdir, RESULTS_DIR, f"{safe}.json")


def write_row(workdir, row):
    """Records one finished or failed run (atomically; replaces an earlier attempt's row)."""
    path = row_path(workdir, row["name"])
    io.makedirs(io.dirname(path))
    io.write_json(path, row)
    return path


def _legacy_rows(workdir):
    """{name: last row} of a `results.jsonl` (lines that do not parse are left out)."""
    path = io.join(workdir, RESULTS_FILE)
    if not io.exists(path):
        return {}
    with io.gfile.GFile(path, "r") as f:
        text = f.read()
    rows = {}
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "name" in row:
            rows[row["name"]] = row
    return rows


def read_rows(workdir):
    """{name: row}: every run's own file, and older `results.jsonl` rows of runs without one."""
    rows = _legacy_rows(workdir)
    folder = io.join(workdir, RESULTS_DIR)
    if io.exists(folder):
        for entry in sorted(io.gfile.listdir(folder)):
            entry = entry.rstrip("/")
            if entry.startswith(".") or not entry.endswith(".json"):
                continue  # a write in flight (.tmp-*) or not ours
            try:
                row = io.read_json(io.join(folder, entry))
            except Exception:  # pylint: disable=broad-except  (gone between listing and reading)
                continue
            if isinstance(row, dict) and "name" in row:
                rows[row["name"]] = row
    return rows


def finished(workdir):
    """Names whose latest row says `ok`."""
    return {name for name, row in read_rows(workdir).items() if row.get("status") == "ok"}


def assemble(workdir, planned_names):
    """Rewrites `DIR/results.jsonl` from the rows: planned order, then other names sorted."""
    rows = read_rows(workdir)
    order = [n for n in planned_names if n in rows]
    order += sorted(set(rows) - set(order))
    text = "".join(json.dumps(rows[n], sort_keys=True) + "\n" for n in order)
    path = io.join(workdir, RESULTS_FILE)
    io.write_bytes(path, text)
    return path
