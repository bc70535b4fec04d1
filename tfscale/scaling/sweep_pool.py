"""A local pool: several sweep runs at once, each in a worker process of its own (`sweep_worker`).

Small models use a few cores badly, so on a CPU host N single-threaded runs side by side get
more done than one run on N threads; on a GPU host each worker gets one GPU. Separate processes,
because TensorFlow's thread pools and devices are fixed per process, and because a run that
crashes (a segfault, the OOM killer) then takes only itself down: it is recorded as `failed`
with its exit and its last log line, and the pool goes on.

Each worker process imports TensorFlow once and takes one run after another (`sweep_worker`);
a worker that dies is recorded against its run and replaced for the next one.
The parent starts the cheapest pending run whenever a worker is free, keeps the only progress
line (workers send their fractions over a pipe; their output goes to DIR/logs/NAME.log), and
forwards SIGTERM and Ctrl-C to the workers, which save a checkpoint and exit 143/130; then it
exits the same way and a re-run resumes. A parent killed outright cannot forward anything: the
workers watch it (`launch.watch_launcher`) and stop themselves the same way.
"""
import collections
import dataclasses
import os
import pickle
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time

from absl import logging

from tfscale import callbacks, io, launch
from tfscale.errors import ConfigError
from tfscale.scaling import sweep_results, sweep_run
from tfscale.scaling.sweep_worker import DONE, PROGRESS_FD
THREAD_VARIABLES = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
STOP_GRACE_SECONDS = launch.ORPHAN_GRACE_SECONDS  # after an error in the parent: SIGTERM, then SIGKILL


@dataclasses.dataclass(frozen=True)
class Workers:
    count: int  # 1: no pool, runs one after another in this process
    threads: int = 0  # CPU threads per worker; 0 leaves TensorFlow's default
    devices: tuple = ()  # CUDA_VISIBLE_DEVICES of each worker slot on a GPU host


def cores():
    """CPU cores this process may use (its affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _tpu_host(config):
    return config.distribute.strategy == "tpu" or os.path.exists("/dev/accel0") or bool(os.environ.get("TPU_NAME"))


def resolve(config):
    """`sweep.workers` and `sweep.threads_per_worker` for this machine, as `Workers`.

    Call before TensorFlow touches a GPU: on a GPU host this process then takes GPU memory only
    as it needs it, leaving the rest to the workers.
    """
    s = config.sweep
    count, threads = int(s.get("workers", 1)), int(s.get("threads_per_worker", 0))
    if count < 0 or threads < 0:
        raise ConfigError(f"sweep.workers and sweep.threads_per_worker must be >= 0, got {count}, {threads}")
    if count == 1:
        return Workers(1)
    if _tpu_host(config):  # one process holds the TPU
        if count > 1:
            raise ConfigError("sweep.workers > 1 needs CPUs or GPUs: on a TPU host one process holds the TPU")
        return Workers(1)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        count = count or len(gpus)
        if count == 1:  # one GPU: the run may as well go here
            return Workers(1)
        try:  # this process keeps using them (a job trains its final model here), taking little
            for gpu in gpus:
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            logging.warning("sweep: TensorFlow already holds the GPUs in this process; workers may run short of memory")
        return Workers(count, threads, tuple(str(i % len(gpus)) for i in range(count)))
    threads = threads or (1 if count == 0 else max(1, cores() // count))
    count = count or max(1, cores() // threads)
    return Workers(count, threads) if count > 1 else Workers(1)


def worker_env(workers, slot, sharing_gpu):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{launch.LAUNCHER_PID: str(os.getpid())})
    if workers.threads:
        env.update({k: str(workers.threads) for k in THREAD_VARIABLES})
    if workers.devices:
        env["CUDA_VISIBLE_DEVICES"] = workers.devices[slot]
        if sharing_gpu:  # several workers per GPU: none may take all its memory
            env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    return env


class Stopped(callbacks.Preempted):
    """SIGTERM or Ctrl-C stopped the pool after its workers saved checkpoints; re-run to resume."""

    def __init__(self, signum, names):  # pylint: disable=super-init-not-called
        what = "preempted (SIGTERM)" if signum == signal.SIGTERM else f"interrupted ({signal.Signals(signum).name})"
        Exception.__init__(self, f"sweep {what}: {len(names)} runs under way saved checkpoints "
                         f"({', '.join(names) or 'none'}); re-run the same command to resume")
        self.step, self.checkpoint_path, self.exit_code = None, None, 128 + signum  # 143 or 130


class _Process:
    """A worker process of one slot, with the read end of its progress pipe. It runs one run
    after another; `done` turns true when the run under way has recorded its row."""

    def __init__(self, slot, proc, fd):
        self.slot, self.proc, self.fd = slot, proc, fd
        self.pending, self.fraction, self.done, self.open = b"", 0.0, False, True

    def read(self):
        """Takes in what the worker reported; False at the end of the pipe."""
        data = os.read(self.fd, 4096)
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        for line in lines:
            if line == DONE:
                self.done = True
                continue
            try:
                self.fraction = min(1.0, max(0.0, float(line)))
            except ValueError:
                pass
        return bool(data)

    def send(self, obj):
        """False when the process is gone (its exit is recorded by the pool)."""
        try:
            self.proc.stdin.write(pickle.dumps(obj))
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def close_input(self):
        """No more runs: the worker exits 0 once it has read what it was sent."""
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def signal(self, signum):
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                pass


class _Worker:
    """The run under way in a slot's process."""

    def __init__(self, planned, process, log_path, log_start):
        self.planned, self.process, self.log_path = planned, process, log_path
        self.slot, self.proc = process.slot, process.proc
        self.log_start = log_start  # this attempt's part of the log
        self.t0 = time.time()

    @property
    def fraction(self):
        return self.process.fraction


_NOISE = re.compile(r"^([IW]\d{4} |WARNING: All log messages|--- \d{4}-)")  # info lines, our headers


def last_line(path, start=0, limit=300):
    """The last line a worker wrote after `start` that is not an info line: usually its error."""
    try:
        with open(path, "rb") as f:
            f.seek(max(start, os.path.getsize(path) - 16384))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    lines = [l.strip() for l in lines if l.strip() and not _NOISE.match(l.strip())]
    return lines[-1][:limit] if lines else ""


class Pool:
    """Runs `todo` (cheapest first) on `workers`; `run()` returns (ran, failed) names."""

    def __init__(self, config, workdir, todo, train_fn, workers, progress, on_result):
        self.config, self.workdir, self.workers = config, workdir, workers
        self.pending = collections.deque(todo)
        self.progress, self.on_result = progress, on_result
        self.free = list(range(workers.count))
        self.active = {}  # slot -> _Worker: the run under way there
        self.processes = {}  # slot -> _Process, kept from one run to the next
        self.selector = selectors.DefaultSelector()
        self.signum = 0
        self.ran, self.failed, self.stopped = [], [], []
        self.log_dir = (tempfile.mkdtemp(prefix="tfscale-sweep-logs-") if io.is_remote(workdir)
                        else io.join(workdir, "logs"))
        os.makedirs(self.log_dir, exist_ok=True)
        custom = train_fn is not None and f"{train_fn.__module__}.{train_fn.__qualname__}" != "tfscale.training.train"
        self.train_fn = train_fn if custom else None
        self.cpu_peak = self._cpu_peak_share()

    def _cpu_peak_share(self):
        """The CPU's matmul peak measured once here, as each worker's share (it would otherwise
        probe in every worker, with the others running)."""
        if self.workers.devices:
            return None
        from tfscale import throughput  # pylint: disable=import-outside-toplevel
        return throughput.cpu_matmul_peak() * min(1.0, (self.workers.threads or cores()) / cores())

    def run(self):
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, self._forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while (self.pending and not self.signum) or self.active:  # stopped: only what runs ends
                while self.free and not self.signum and (planned := self._next_ready()):
                    self._start(planned)
                for key, _ in self.selector.select(timeout=0.5):
                    process = key.data
                    if not process.read():
                        self.selector.unregister(key.fd)
                        process.open = False
                for worker in list(self.active.values()):
                    if worker.process.done:
                        self._finish(worker, 0)
                    elif worker.proc.poll() is not None:
                        self._drain(worker.process)
                        if worker.process.done:  # it recorded its row, then exited
                            self._finish(worker, 0)
                        else:
                            self._finish(worker, worker.proc.returncode)
                        self._discard(worker.process)
                self.progress.update_pool(self._fractions())
            self._close_all()
        except BaseException:
            self._stop_all()
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self.signum:
            raise Stopped(self.signum, self.stopped)
        return self.ran, self.failed

    def _next_ready(self):
        """The cheapest pending run whose `after` run (a wsd trunk) is no longer pending or running."""
        busy = {r.name for r in self.pending} | {w.planned.name for w in self.active.values()}
        for planned in self.pending:
            if not planned.after or planned.after not in busy:
                self.pending.remove(planned)
                return planned
        return None

    def _forward(self, signum, frame):  # pylint: disable=unused-argument
        if not self.signum:
            logging.warning("sweep: %s: stopping %d workers (each saves a checkpoint)",
                            signal.Signals(signum).name, len(self.active))
        self.signum = self.signum or signum
        self.stopped = self.stopped or [w.planned.name for w in self.active.values()]
        for process in self.processes.values():
            if process.slot in self.active:
                process.signal(signum)
            else:
                process.close_input()  # idle: it exits 0

    def _fractions(self):
        return [(w.planned, w.fraction) for w in sorted(self.active.values(), key=lambda w: w.slot)]

    def _spawn(self, slot, log):
        """A new worker process for `slot`, its output at first to `log` (each run moves it)."""
        read_fd, write_fd = os.pipe()
        env = worker_env(self.workers, slot, len(self.workers.devices) > len(set(self.workers.devices)))
        env[PROGRESS_FD] = str(write_fd)
        # A session of its own: Ctrl-C in the terminal reaches the parent, which forwards it once.
        proc = subprocess.Popen([sys.executable, "-m", "tfscale.scaling.sweep_worker"], stdin=subprocess.PIPE,
                                stdout=log, stderr=subprocess.STDOUT, env=env, pass_fds=(write_fd,),
                                start_new_session=True)
        os.close(write_fd)
        process = _Process(slot, proc, read_fd)
        process.send({"sys_path": list(sys.path), "threads": self.workers.threads, "cpu_peak": self.cpu_peak})
        self.processes[slot] = process
        self.selector.register(read_fd, selectors.EVENT_READ, process)
        logging.info("sweep: worker %d started (pid %d)", slot, proc.pid)
        return process

    def _start(self, planned):
        slot = self.free.pop(0)
        log_path = os.path.join(self.log_dir, os.path.basename(sweep_results.row_path("", planned.name))[:-5] + ".log")
        payload = pickle.dumps({"config": self.config, "workdir": self.workdir, "planned": planned,
                                "train_fn": self.train_fn})
        with open(log_path, "ab") as log:
            log_start = log.tell()
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {planned.name}\n".encode())
            log.flush()
            process = self.processes.get(slot)
            if process is None or process.proc.poll() is not None:
                if process is not None:
                    self._discard(process)
                process = self._spawn(slot, log)
        process.done, process.fraction = False, 0.0
        process.send({"payload": payload, "log_path": log_path})  # if it died, _finish records how
        self.active[slot] = _Worker(planned, process, log_path, log_start)
        logging.info("sweep: %s started in worker %d (pid %d, log %s)", planned.name, slot, process.proc.pid,
                     log_path)

    def _drain(self, process):
        """What an exited worker still had in its pipe (its `done`, if it got that far)."""
        while process.open:
            try:
                if not process.read():
                    break
            except OSError:
                break

    def _discard(self, process):
        """An exited worker's slot loses its process; the next run there starts a new one."""
        if process.open and process.fd in self.selector.get_map():
            self.selector.unregister(process.fd)
        process.open = False
        try:
            os.close(process.fd)
        except OSError:
            pass
        if self.processes.get(process.slot) is process:
            del self.processes[process.slot]

    def _close_all(self):
        """Every run is done: the idle workers are told so and exit."""
        for process in self.processes.values():
            process.close_input()
        self._end_all()

    def _end_all(self):
        """Waits up to STOP_GRACE_SECONDS for every worker to exit, then kills any that linger."""
        deadline = time.time() + STOP_GRACE_SECONDS
        for process in list(self.processes.values()):
            try:
                process.proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                process.proc.kill()
            self._discard(process)

    def _finish(self, worker, code):
        del self.active[worker.slot]
        self.free.append(worker.slot)
        self.free.sort()
        stopped_codes = (128 + self.signum, -self.signum)
        if self.signum and code in stopped_codes:
            logging.info("sweep: %s stopped (%s); a re-run resumes it", worker.planned.name, launch.describe_exit(code))
            return
        row = self._row(worker, code)
        self.ran.append(worker.planned.name)
        if row["status"] != "ok":
            self.failed.append(worker.planned.name)
        self.on_result(row)
        self.progress.finish_pool_run(worker.planned, self._fractions())

    def _row(self, worker, code):
        if code == 0:
            try:
                return io.read_json(sweep_results.row_path(self.workdir, worker.planned.name))
            except Exception:  # pylint: disable=broad-except  (recorded as failed below)
                pass
        line = last_line(worker.log_path, worker.log_start)
        error = f"worker {launch.describe_exit(code)}" + (f": {line}" if line else "")
        logging.error("sweep run %s failed: %s (log %s)", worker.planned.name, error, worker.log_path)
        row = sweep_run.failed_row(worker.planned, error, time.time() - worker.t0, exit_code=code, log=worker.log_path)
        sweep_results.write_row(self.workdir, row)
        return row

    def _stop_all(self):
        """The parent failed: stop the workers (they checkpoint), then end any that linger."""
        for process in self.processes.values():
            process.signal(signal.SIGTERM)
            process.close_input()
        self._end_all()
