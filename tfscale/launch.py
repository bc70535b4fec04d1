r"""Local multi-worker launcher: N worker processes on 127.0.0.1, each with its own TF_CONFIG.

  python -m tfscale.launch --num_workers=2 -- \
      python -m experiments.train --config=experiments/configs/digits_mlp.py --workdir=/tmp/mw \
      --config.distribute.strategy=multi_worker

This is how to debug multi-worker training on one box, and how the tests run it. On a real
cluster the cluster manager (Kubernetes, Vertex AI, ...) sets TF_CONFIG and starts one process
per host; the command is the same. The launcher

- picks N free ports and gives worker i `TF_CONFIG = {"cluster": {"worker": [...]}, "task":
  {"type": "worker", "index": i}}`;
- prefixes every line a worker prints with `[worker i] ` (stdout to stdout, stderr to stderr);
- forwards SIGINT and SIGTERM to every worker (SIGTERM = preemption: each saves and exits);
- fails fast: when a worker exits with an error while others still run (they would wait for it
  in the next collective until a long timeout), it says which worker and how it ended, stops the
  rest and exits with that worker's code;
- is watched by its workers: a launcher killed outright (SIGKILL, an OOM kill) cannot stop them,
  so each worker checks that its launcher lives (`watch_launcher`) and, once it is gone, stops
  itself as if preempted (a checkpoint at the current update, exit 143).

Only the standard library: it never imports TensorFlow.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

GRACE_SECONDS = 10  # after a failure: SIGTERM to the others, then SIGKILL after this long
FORWARDED = (signal.SIGINT, signal.SIGTERM)
LAUNCHER_PID = "TFSCALE_LAUNCHER_PID"  # set in each worker's environment
WATCH_SECONDS = 1.0  # how often a worker checks that its launcher lives
ORPHAN_GRACE_SECONDS = 120  # after SIGTERM to itself, a worker that still runs exits hard


def _exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


def watch_launcher():
    """In a worker started by the launcher: stop this process once the launcher is gone.

    A daemon thread polls the launcher's pid. When it is gone the worker sends itself SIGTERM,
    which saves a checkpoint at the current update and exits 143 (all workers notice within
    a second, so their collective save agrees); a worker stuck outside training is ended after
    `ORPHAN_GRACE_SECONDS`. Does nothing outside the launcher, and starts once per process.
    """
    pid = int(os.environ.get(LAUNCHER_PID) or 0)
    if not pid or getattr(watch_launcher, "started", False):
        return
    watch_launcher.started = True
    # A direct child is re-parented the moment its parent dies (even before the parent is
    # reaped, while its pid still answers); a worker behind a wrapper watches the pid itself.
    direct = os.getppid() == pid

    def alive():
        return os.getppid() == pid if direct else _exists(pid)

    def watch():
        while alive():
            time.sleep(WATCH_SECONDS)
        try:  # the launcher read this process's output: the pipe may be broken now
            print(f"launcher (pid {pid}) is gone: stopping this worker", file=sys.stderr, flush=True)
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_GRACE_SECONDS)
        os._exit(128 + signal.SIGTERM)  # pylint: disable=protected-access

    threading.Thread(target=watch, name="watch-launcher", daemon=True).start()


def free_ports(n, host="127.0.0.1"):
    """`n` distinct ports that were free a moment ago (bound together, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(workers, index):
    """The TF_CONFIG JSON for worker `index` of the cluster `workers` (["host:port", ...])."""
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}})


def describe_exit(code):
    """'exited with code 3' / 'was killed by SIGKILL'."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _pump(stream, out, prefix, lock):
    for line in iter(stream.readline, b""):
        with lock:
            out.write(prefix + line)
            out.flush()
    stream.close()


class Cluster:
    """N local worker processes running `command`; `wait()` returns the launcher's exit code."""

    def __init__(self, command, num_workers, env=None, host="127.0.0.1"):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.workers = [f"{host}:{p}" for p in free_ports(num_workers, host)]
        self.procs, self.threads = [], []
        self.signalled = None
        lock = threading.Lock()
        outputs = (sys.stdout.buffer, sys.stderr.buffer)
        for index in range(num_workers):
            worker_env = dict(os.environ if env is None else env,
                              TF_CONFIG=tf_config(self.workers, index), PYTHONUNBUFFERED="1",
                              **{LAUNCHER_PID: str(os.getpid())})
            # A new session: a Ctrl-C in the terminal reaches the launcher only, which forwards
            # it once to each worker.
            proc = subprocess.Popen(command, env=worker_env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
            self.procs.append(proc)
            prefix = f"[worker {index}] ".encode()
            for stream, out in zip((proc.stdout, proc.stderr), outputs):
                thread = threading.Thread(target=_pump, args=(stream, out, prefix, lock), daemon=True)
                thread.start()
                self.threads.append(thread)

    def send(self, signum):
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    def _forward(self, signum, frame):
        del frame
        self.signalled = signum
        print(f"launcher: forwarding {signal.Signals(signum).name} to the workers", file=sys.stderr,
              flush=True)
        self.send(signum)

    def stop(self, grace=GRACE_SECONDS):
        """SIGTERM to the workers still running, SIGKILL to those still running after `grace`."""
        self.send(signal.SIGTERM)
        deadline = time.time() + grace
        while any(p.poll() is None for p in self.procs) and time.time() < deadline:
            time.sleep(0.05)
        self.send(signal.SIGKILL)
        for proc in self.procs:
            proc.wait()

    def wait(self):
        """Waits for every worker; returns 0 if all succeeded, else the first failure's code."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, self._forward) for s in FORWARDED}
        try:
            while True:
                codes = [p.poll() for p in self.procs]
                failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
                if failed and self.signalled is None and None in codes:
                    index, code = failed[0]
                    running = [str(i) for i, c in enumerate(codes) if c is None]
                    self._message(f"error: worker {index} {describe_exit(code)}; stopping worker"
                                  f"{'s' if len(running) > 1 else ''} {', '.join(running)}")
                    self.stop()
                    return _exit_code(code)
                if None not in codes:
                    break
                time.sleep(0.05)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for thread in self.threads:
                thread.join(timeout=5)
        failed = [(i, c) for i, c in enumerate(codes) if c != 0]
        if failed:
            index, code = failed[0]
            if self.signalled is None:
                self._message(f"error: worker {index} {describe_exit(code)}")
            return _exit_code(code)
        return 0

    @staticmethod
    def _message(text):
        print(f"launcher: {text}", file=sys.stderr, flush=True)


def _exit_code(code):
    return 128 - code if code < 0 else code  # killed by signal s -> 128 + s, as a shell reports


def launch(command, num_workers, env=None):
    """Runs `command` as `num_workers` local workers; returns the exit code (0 = all succeeded)."""
    return Cluster(command, num_workers, env).wait()


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfscale.launch",
        description="Run COMMAND as N local TensorFlow workers (TF_CONFIG on free 127.0.0.1 ports).")
    parser.add_argument("--num_workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given: python -m tfscale.launch --num_workers=N -- COMMAND ...")
    if args.num_workers < 1:
        parser.error(f"--num_workers must be >= 1, got {args.num_workers}")
    try:
        return launch(command, args.num_workers)
    except OSError as e:
        print(f"launcher: error: cannot start {command[0]}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
