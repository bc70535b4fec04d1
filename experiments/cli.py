"""What every experiment script shares: flag parsing and one-line errors.

A user mistake (a bad flag, a missing config file, a `ConfigError`) is printed as one line on
stderr with exit code 2, no traceback; anything else is a bug and keeps its traceback. A run
stopped by SIGTERM (preemption) saves a checkpoint, prints one line and exits 143 (128 + SIGTERM),
so a restart policy reruns the command, which resumes.
"""
import os
import sys

from absl import app, flags, logging

import tfscale  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from tfscale.errors import ConfigError

EXIT_USAGE = 2


def fail(message):
    text = str(message).strip()
    print(f"error: {text.splitlines()[0] if text else type(message).__name__}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def _root_cause(error):
    while error.__cause__ or error.__context__:
        error = error.__cause__ or error.__context__
    return error


def _check_config_files(argv):
    """ml_collections reports a missing config file late and obscurely: check it first."""
    for arg in argv[1:]:
        name, _, value = arg.partition("=")
        if name == "--config" and value and not os.path.isfile(value.split(":")[0]):
            fail(f"config file {value.split(':')[0]} not found (flag --config)")


def _parse_error(error, argv):
    cause = _root_cause(error)
    if isinstance(cause, ConfigError):
        return str(cause)
    if isinstance(cause, (KeyError, AttributeError)):
        overrides = [a for a in argv if a.startswith("--config.")]
        key = str(cause).strip("\"'").split("'")[0]
        culprit = next((a for a in overrides if f".{key}=" in a or a.endswith(f".{key}")), None)
        return f"unknown config key {key!r}" + (f" in {culprit}" if culprit else "")
    if cause is error or str(cause) in str(error):
        return str(error)
    return f"{error} ({type(cause).__name__}: {cause})"


def define_config_and_workdir(example, workdir_help):
    """The --config (a locked ml_collections config file) and --workdir flags of a training script."""
    from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
    config_flags.DEFINE_config_file("config", None, f"Config file, e.g. {example}.", lock_config=True)
    flags.DEFINE_string("workdir", None, workdir_help)
    flags.mark_flags_as_required(["config", "workdir"])


def run(main):
    """Parses flags, then runs `main()`; user mistakes exit 2 with one line."""
    _check_config_files(sys.argv)
    try:
        flags.FLAGS(sys.argv)
    except Exception as e:  # pylint: disable=broad-except  (flag parsing: always a user mistake)
        fail(_parse_error(e, sys.argv))

    def _main(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.set_verbosity(logging.INFO)
        from tfscale.callbacks import Preempted  # pylint: disable=import-outside-toplevel
        try:
            main()
        except ConfigError as e:
            fail(e)
        except Preempted as e:
            print(e, file=sys.stderr)
            sys.exit(Preempted.EXIT_CODE)

    app.run(_main, argv=sys.argv[:1])
