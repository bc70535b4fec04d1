"""One study on a real PostgreSQL server (`tune.storage=postgresql://...`), shared by two
`experiments.tune` processes, one of them killed mid-trial and started again, as a lost machine
would be: the study still ends with `tune.num_trials` trials, none lost and none run twice.

The server comes from the Debian package (`apt-get install postgresql`, which .ci/run does);
without it this test fails rather than skips, so a machine missing it cannot pass unnoticed."""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tfscale import ConfigError
from tfscale.tuning import outputs, study as study_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POSTGRES_BINS = "/usr/lib/postgresql/*/bin"
NUM_TRIALS = 4
NUM_STEPS = 400
TUNE_ARGS = ("--config=experiments/configs/digits_cnn_tune.py:tiny", f"--config.tune.num_trials={NUM_TRIALS}",
             f"--config.train.num_steps={NUM_STEPS}", "--config.checkpoint.every_steps=20",
             "--config.eval.every_steps=100",
             # A trial is stale after 4 s, not the tiny config's 2: a live one on busy cores stays fresh.
             "--config.tune.heartbeat_seconds=2")
TIMEOUT = 300


# -- the server -------------------------------------------------------------------------------

def _postgres_bin():
    """The newest installed server's bin folder; a failure naming the package when there is none."""
    found = glob.glob(os.path.join(POSTGRES_BINS, "initdb"))
    if not found:
        pytest.fail(f"PostgreSQL is not installed (no initdb under {POSTGRES_BINS}): "
                    "apt-get install postgresql (.ci/run installs it)")
    return os.path.dirname(max(found, key=lambda p: [int(n) for n in re.findall(r"\d+", p)]))


def _as_server_user(argv):
    """PostgreSQL refuses to run as root: as root, run the server's commands as `postgres`."""
    if os.geteuid() != 0:
        return list(argv)
    import pwd  # pylint: disable=import-outside-toplevel
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root, the server needs the `postgres` user (the postgresql package makes it)")
    return ["runuser", "-u", "postgres", "--", *argv]


def _server_dir():
    """A folder the server's user owns (pytest's tmp folders are private to root)."""
    path = tempfile.mkdtemp(prefix="tfscale-pg-")
    if os.geteuid() == 0:
        import pwd  # pylint: disable=import-outside-toplevel
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_cmd(argv, cwd):
    proc = subprocess.run(_as_server_user(argv), cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(argv)}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway server on 127.0.0.1 (socket in its own folder), durability off for speed;
    stopped and deleted at teardown. Yields the URL of its `postgres` database."""
    try:
        import psycopg2  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        pytest.fail("the PostgreSQL driver is missing: pip install -e '.[test]' (psycopg2-binary)")
    bin_dir, root, port = _postgres_bin(), _server_dir(), _free_port()
    data = os.path.join(root, "data")
    try:
        _server_cmd([os.path.join(bin_dir, "initdb"), "-D", data, "-U", "tfscale", "-A", "trust",
                     "-E", "UTF8", "--locale=C", "--no-sync"], root)
        options = (f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off")
        _server_cmd([os.path.join(bin_dir, "pg_ctl"), "-D", data, "-l", os.path.join(root, "server.log"),
                     "-w", "-t", "60", "-o", options, "start"], root)
        try:
            yield f"postgresql://tfscale@127.0.0.1:{port}/postgres"
        finally:
            _server_cmd([os.path.join(bin_dir, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"], root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- the tuners -------------------------------------------------------------------------------

def _start(name, workdir, url, logs):
    args = [sys.executable, "-m", "experiments.tune", *TUNE_ARGS, f"--workdir={workdir}",
            f"--config.tune.storage={url}"]
    with open(logs / f"{name}.log", "w", encoding="utf-8") as log:  # the child keeps its own copy
        return subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def _tails(logs):
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(logs.glob("*.log")))


def _holder_pid(trial_dir):
    """The pid in a trial's workdir lock (tfscale.lock), None while it is being written."""
    try:
        with open(os.path.join(trial_dir, ".lock"), encoding="utf-8") as f:
            return json.loads(f.read() or "null")["pid"]
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _mid_trial(workdir, procs):
    """(process, trial folder) of a tuner training a trial that has a checkpoint and no summary
    yet, i.e. one killed now leaves work to resume; None while there is none."""
    by_pid = {p.pid: p for p in procs if p.poll() is None}
    for trial_dir in sorted(glob.glob(os.path.join(workdir, "trials", "*"))):
        if (_holder_pid(trial_dir) in by_pid and os.path.exists(os.path.join(trial_dir, "checkpoints", "checkpoint"))
                and not os.path.exists(os.path.join(trial_dir, "summary.json"))):
            return by_pid[_holder_pid(trial_dir)], os.path.basename(trial_dir)
    return None


def _kill_one_mid_trial(workdir, procs, logs):
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        found = _mid_trial(workdir, procs)
        if found:
            found[0].send_signal(signal.SIGKILL)
            found[0].wait()
            return found
        assert all(p.poll() is None for p in procs), _tails(logs)
        time.sleep(0.05)
    pytest.fail(f"no trial reached a checkpoint in {TIMEOUT}s\n{_tails(logs)}")


def _wait_ok(proc, logs):
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, _tails(logs)


# -- the tests --------------------------------------------------------------------------------

def test_a_postgresql_url_without_a_driver_gets_the_installed_one(monkeypatch):
    import importlib.util  # pylint: disable=import-outside-toplevel
    assert study_lib.with_driver("postgresql://u:p@h/db") in ("postgresql+psycopg://u:p@h/db",
                                                              "postgresql+psycopg2://u:p@h/db")
    for url in ("postgresql+psycopg2://u@h/db", "sqlite:////tmp/study.db", "mysql+pymysql://u@h/db"):
        assert study_lib.with_driver(url) == url
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"postgresql://u:\*\*\*@h/db needs a PostgreSQL driver: pip install"):
        study_lib.with_driver("postgresql://u:p@h/db")


def test_two_tuners_on_postgres_one_killed_mid_trial_end_with_every_trial_once(postgres_url, tmp_path):
    import optuna  # pylint: disable=import-outside-toplevel
    from experiments.configs import digits_cnn_tune  # pylint: disable=import-outside-toplevel
    from tfscale import data  # pylint: disable=import-outside-toplevel

    data.load(digits_cnn_tune.get_config("tiny").data)  # prepared once, not raced by the tuners
    workdir, logs = tmp_path / "study", tmp_path / "logs"
    logs.mkdir()
    procs = [_start("a", workdir, postgres_url, logs), _start("b", workdir, postgres_url, logs)]
    try:
        killed, killed_dir = _kill_one_mid_trial(str(workdir), procs, logs)
        survivor = next(p for p in procs if p is not killed)
        restarted = _start("restarted", workdir, postgres_url, logs)  # the same command, run again
        procs.append(restarted)
        _wait_ok(survivor, logs)
        _wait_ok(restarted, logs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    study = optuna.load_study(study_name="tune", storage=study_lib.with_driver(postgres_url))  # as the tuners do
    trials = study.get_trials(deepcopy=False)
    states = {t.number: outputs.state_of(t) for t in trials}
    done = [t for t in trials if states[t.number] in ("COMPLETE", "PRUNED")]
    context = f"{states}\n{_tails(logs)}"
    # Two tuners may each start a last trial together: one beyond num_trials at most.
    assert NUM_TRIALS <= len(done) <= NUM_TRIALS + 1, context
    assert list(states.values()).count("INTERRUPTED") == 1 and "FAIL" not in states.values(), context
    assert not any(s in ("RUNNING", "WAITING") for s in states.values()), context

    # The killed trial was failed by the heartbeat and retried once, in its folder, from its checkpoint.
    interrupted = next(t for t in trials if states[t.number] == "INTERRUPTED")
    assert f"{interrupted.number:04d}" == killed_dir, context
    retries = [t for t in trials if (t.system_attrs.get("retry_history") or [None])[0] == interrupted.number]
    assert len(retries) == 1 and retries[0] in done, context
    assert retries[0].params == interrupted.params, context
    assert outputs.trial_workdir(retries[0]) == f"trials/{killed_dir}", context
    every_log = "".join(p.read_text() for p in logs.glob("*.log"))
    resumed = re.findall(r"on digits: steps (\d+)\.\.%d" % NUM_STEPS, every_log)
    assert len([s for s in resumed if int(s) > 0]) == 1 and all(int(s) % 20 == 0 for s in resumed), context

    # None run twice, none lost: every finished trial has values and a folder of its own, and
    # every folder under trials/ is one finished trial's, trained to its end or its pruning.
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done), context
    folders = [outputs.trial_workdir(t) for t in done]
    assert len(set(folders)) == len(done), context
    assert sorted(f"trials/{d}" for d in os.listdir(workdir / "trials")) == sorted(folders), context
    for t in done:
        with open(workdir / outputs.trial_workdir(t) / "summary.json", encoding="utf-8") as f:
            steps = json.load(f)["steps"]
        ended_at = NUM_STEPS if t.state.name == "COMPLETE" else t.user_attrs["pruned_at"]
        assert steps == t.user_attrs["steps"] == ended_at, context
