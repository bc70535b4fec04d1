"""One process at a time in a workdir: a second `train` (or sweep shard) is refused, not mixed in.

On a local or network file system the lock is `fcntl.flock` on `<workdir>/.lock`: the kernel
releases it when the holder exits, however it exits (even SIGKILL), so a crashed run never leaves
a stale lock behind. The file names the holder (host, pid, command) for the refusal message.

Object stores (`gs://`) have no locks. There the lock is a small JSON object with the holder and
a heartbeat time that the holder refreshes (`refresh()`, at every checkpoint): a second run is
refused while the heartbeat is younger than `REMOTE_STALE_SECONDS`; an older one is taken as
left by a run that died, taken over, and said so. Two runs started within the same second can
both get through, so on a bucket the lock catches mistakes, it is not mutual exclusion.

Within one process the lock is shared: a job that opens several runs over one workdir in turn
(train, then compress) is one holder, so a lock taken again by its holder only counts up.
"""
import json
import os
import socket
import sys
import time

from absl import logging

from tfscale import io
from tfscale.errors import ConfigError

REMOTE_STALE_SECONDS = 15 * 60
_held = {}  # lock path -> [handle, count] for the locks this process holds


def _holder():
    return {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
            "command": " ".join(sys.argv)[:300]}


def _describe(holder):
    if not isinstance(holder, dict):
        return "another process"
    return f"pid {holder.get('pid')} on {holder.get('host')}: {holder.get('command') or '?'}"


class WorkdirLock:
    """Held from `acquire()` to `release()`; `name` lets disjoint jobs (shards) share a workdir."""

    def __init__(self, workdir, name="run"):
        self.workdir = workdir
        path = io.join(workdir, ".lock" if name == "run" else f".lock-{name}")
        self.path = path if io.is_remote(path) else os.path.realpath(path)
        self._fd = None
        self._acquired = False

    def acquire(self):
        """Takes the lock or raises ConfigError naming the holder; creates the workdir."""
        if self._acquired:
            return self
        if self.path in _held:
            _held[self.path][1] += 1
        else:
            io.makedirs(self.workdir)
            if io.is_remote(self.path):
                self._acquire_remote()
            else:
                self._acquire_local()
            _held[self.path] = [self._fd, 1]
        self._acquired = True
        return self

    def _acquire_local(self):
        import fcntl  # pylint: disable=import-outside-toplevel  (POSIX only)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            with os.fdopen(fd, "r") as f:
                try:
                    holder = json.loads(f.read() or "null")
                except ValueError:
                    holder = None
            raise ConfigError(f"workdir {self.workdir} is in use by {_describe(holder)}; wait for it "
                              "to finish or stop it, or use another workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        self._fd = fd

    def _acquire_remote(self):
        if io.exists(self.path):
            try:
                holder = io.read_json(self.path)
                age = time.time() - float(holder["time"])
            except (ValueError, KeyError, TypeError):
                holder, age = None, float("inf")
            if age < REMOTE_STALE_SECONDS:
                raise ConfigError(f"workdir {self.workdir} is in use by {_describe(holder)} (heartbeat "
                                  f"{age:.0f}s ago); wait for it, or delete {self.path} if it is gone")
            logging.warning("taking over %s: its holder (%s) has not been heard of for %.0fs",
                            self.path, _describe(holder), age)
        self.refresh()
        self._fd = "remote"

    def refresh(self):
        """Renews the heartbeat of a remote lock (a no-op locally, where the kernel holds it)."""
        if io.is_remote(self.path):
            io.write_json(self.path, _holder())

    def release(self):
        if not self._acquired:
            return
        self._acquired = False
        entry = _held[self.path]
        entry[1] -= 1
        if entry[1]:
            return
        del _held[self.path]
        if entry[0] == "remote":
            try:
                io.gfile.remove(self.path)
            except Exception:  # pylint: disable=broad-except  (already gone: nothing to release)
                pass
        else:
            os.close(entry[0])  # releases the flock; the file stays (removing it would race)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
