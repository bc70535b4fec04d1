"""Test set-up: Keras 2, and the CPU split into 4 logical devices once per test process."""
import collections
import contextlib
import io
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfscale  # noqa: E402,F401  (selects Keras 2 before TensorFlow loads)
from tfscale import distribute  # noqa: E402

NUM_TEST_DEVICES = 4
distribute.split_cpu(NUM_TEST_DEVICES)

import pytest  # noqa: E402

from experiments.configs import digits_mlp  # noqa: E402


def with_overrides(config, **overrides):
    """`config` with `section.key=value` overrides (dotted names as kwargs use `__` for the dot:
    train__accum_steps=4). A locked config refuses a key it does not have."""
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split("__")
        for part in path:
            node = node[part]
        node[leaf] = value
    return config


def tiny_config(**overrides):
    """The tiny digits MLP config with overrides (`with_overrides`)."""
    return with_overrides(digits_mlp.get_config("tiny"), **overrides)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CommandResult(collections.namedtuple("CommandResult", "returncode stdout stderr")):
    """What `run_command` gives: the attributes of a `subprocess.CompletedProcess` run with
    `capture_output=True, text=True`."""


def run_command(module, args=(), cwd=None, env=None):
    """`python -m experiments.<module> ARGS` (or `python -m <module>` for a dotted name) run in this
    process: the module executed as `__main__` (runpy, as `-m` does), its stdout and stderr captured
    (absl logging included), its exit code from `SystemExit` (an uncaught exception: its traceback
    on stderr, code 1, as Python exits).

    Every experiments script defines its flags at import, and several define the same names
    (--config, --workdir): the flags a run defines are deleted afterwards (and those a plain import
    of the module or of an experiments script defined here are set aside meanwhile), and the flag values,
    logging set-up, sys.argv, sys.path, working directory (`cwd`, the repository by default) and
    `env` overrides (os.environ) are restored, so any command can run next. Not thread-safe: one
    at a time, in the main thread (other threads may run subprocesses meanwhile)."""
    import logging as std_logging  # pylint: disable=import-outside-toplevel
    import runpy  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    import traceback  # pylint: disable=import-outside-toplevel
    import warnings  # pylint: disable=import-outside-toplevel
    from absl import app, flags, logging  # pylint: disable=import-outside-toplevel
    from experiments import cli  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

    app.define_help_flags()  # app.run defines them once per process: never deleted below
    name = module if "." in module else f"experiments.{module}"
    fv = flags.FLAGS
    imported = [(module_name, flag) for module_name, module_flags in fv.flags_by_module_dict().items()
                if module_name == name or module_name.startswith("experiments.") for flag in module_flags]
    imported_names = {key: fv[key] for key in list(fv) if any(fv[key] is flag for _, flag in imported)}
    for key in imported_names:
        delattr(fv, key)
    flags_before, was_parsed = set(fv), fv.is_parsed()
    verbosity, argv, path = logging.get_verbosity(), sys.argv, list(sys.path)
    root = std_logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    absl_level = logging.get_absl_logger().level
    # absl logs to its handler's stream once flags are parsed, TensorFlow's logger to its own
    # handler's: both were given the stream stderr was when they were made
    streams = [logging.get_absl_handler().python_handler]
    streams += [h for h in std_logging.getLogger("tensorflow").handlers if isinstance(h, std_logging.StreamHandler)]
    handler_streams = [h.stream for h in streams]
    old_cwd = os.getcwd()
    old_env = {k: os.environ.get(k) for k in (env or {})}
    out, err = io.StringIO(), io.StringIO()
    fv.unparse_flags()
    try:
        os.environ.update(env or {})
        os.chdir(cwd or ROOT)
        sys.argv = [name, *map(str, args)]
        sys.path.insert(0, os.getcwd())  # as `-m` puts the working directory first
        for handler in streams:
            handler.stream = err
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                logging.use_absl_handler()  # as app.run does, once per process
                with warnings.catch_warnings():  # the module imported here too: not so in its own process
                    warnings.filterwarnings("ignore", "'.*' found in sys.modules after import of package",
                                            RuntimeWarning)
                    runpy.run_module(name, run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as e:
                if e.code is None or isinstance(e.code, int):
                    code = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    code = 1
            except Exception:  # pylint: disable=broad-except  (as the interpreter reports it)
                traceback.print_exc()
                code = 1
    finally:
        for handler, stream in zip(streams, handler_streams):
            handler.stream = stream
        sys.argv, sys.path[:] = argv, path
        os.chdir(old_cwd)
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for flag in set(fv) - flags_before:
            delattr(fv, flag)
        for key, flag in imported_names.items():  # as the imports defined them
            fv[key] = flag
        for module_name, flag in imported:
            fv.register_flag_by_module(module_name, flag)
            fv.register_flag_by_module_id(id(sys.modules[module_name]), flag)
        if not was_parsed:
            fv.unparse_flags()
        logging.set_verbosity(verbosity)
        root.handlers[:] = root_handlers
        root.setLevel(root_level)
        logging.get_absl_logger().setLevel(absl_level)
    return CommandResult(code, out.getvalue(), err.getvalue())


def one_error_line(proc):
    """The one `error: ...` line of a command refused as a user mistake (exit 2, no traceback):
    of a `subprocess.run(..., capture_output=True, text=True)` or of `run_command`."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def assert_refused(fragment, workdir, data_overrides, through_command=False):
    """The tiny digits run with `data_overrides` ({"name": ..., "path": ...}) is refused with
    `fragment`, through `experiments.train` (one `error:` line, exit 2; run in this process) or
    `tfscale.train` (the same one-line ConfigError), and its workdir is never created."""
    if through_command:
        proc = run_command("train", ["--config=experiments/configs/digits_mlp.py:tiny", f"--workdir={workdir}",
                                     *(f"--config.data.{k}={v}" for k, v in data_overrides.items())])
        assert fragment in one_error_line(proc)
    else:
        with pytest.raises(tfscale.ConfigError) as error:
            tfscale.train(tiny_config(**{f"data__{k}": v for k, v in data_overrides.items()}), str(workdir))
        assert fragment in str(error.value) and "\n" not in str(error.value)
    assert not os.path.exists(workdir)


@contextlib.contextmanager
def absl_messages():
    """The messages logged through absl at INFO and up inside the block, as the commands log."""
    import logging as std_logging  # pylint: disable=import-outside-toplevel
    from absl import logging  # pylint: disable=import-outside-toplevel
    records = []
    handler = std_logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.INFO)
    logging.get_absl_logger().addHandler(handler)
    try:
        yield records
    finally:
        logging.get_absl_logger().removeHandler(handler)
        logging.set_verbosity(verbosity)


@pytest.fixture
def make_config():
    return tiny_config


# Modules whose tests train, sweep or start processes for more than a few seconds (measured with
# `--durations=0`): `make quick` (`-m "not slow"`) leaves them out; `make test` runs everything.
SLOW_MODULES = {
    "test_array_record", "test_benchmark", "test_compress", "test_compress_errors", "test_distill_transfer",
    "test_encoder", "test_equivalence", "test_export_checks", "test_lm", "test_multi_worker", "test_own_model",
    "test_precision", "test_preemption", "test_prepare_corpus", "test_recipe", "test_resume", "test_run_faults",
    "test_scaling_fit", "test_scaling_job", "test_sweep", "test_sweep_pool", "test_sweep_pool_kill",
    "test_sweep_wsd", "test_tfrecord", "test_trainer_edges", "test_tune", "test_tune_postgres",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__.rpartition(".")[2] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
