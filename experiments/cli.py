"""What every experiment script shares: flag parsing and one-line errors.

A user mistake (a bad flag, a config file that is missing, does not import or gives no
ConfigDict, a `ConfigError`) is printed as one line on stderr with exit code 2, no traceback (an
error in the user's own model or data code is followed by the frames of that code only);
anything else is a bug and keeps its traceback. A run stopped by SIGTERM (preemption) saves a
checkpoint, prints one line and exits 143 (128 + SIGTERM), so a restart policy reruns the command,
which resumes.
"""
import importlib.machinery
import importlib.util
import os
import signal
import sys

from absl import app, flags, logging

import tfscale  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from tfscale.errors import ConfigError

EXIT_USAGE = 2


def fail(message):
    """Prints the one `error:` line and exits 2. An error from the user's own code
    (`tfscale.importing`) is followed by that code's frames, and only those: where to fix it."""
    text = str(message).strip()
    print(f"error: {text.splitlines()[0] if text else type(message).__name__}", file=sys.stderr)
    user_frames = getattr(message, "user_frames", "")
    if user_frames:
        print(user_frames, end="", file=sys.stderr)
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


def _config_error(error):
    """The first `ConfigError` in an exception's chain (flag parsing wraps it), or None."""
    while error is not None and not isinstance(error, ConfigError):
        error = error.__cause__ or error.__context__
    return error


def _parse_error(error, argv):
    first = _config_error(error)
    if first is not None:
        return str(first)
    cause = _root_cause(error)
    if isinstance(cause, (KeyError, AttributeError)):
        overrides = [a for a in argv if a.startswith("--config.")]
        key = str(cause).strip("\"'").split("'")[0]
        culprit = next((a for a in overrides if f".{key}=" in a or a.endswith(f".{key}")), None)
        return f"unknown config key {key!r}" + (f" in {culprit}" if culprit else "")
    if cause is error or str(cause) in str(error):
        return str(error)
    return f"{error} ({type(cause).__name__}: {cause})"


def load_config_file(spec):
    """`get_config(arg)` of the file in `spec` ("path[:arg]"); a file that does not import or does not
    give a ConfigDict is a `ConfigError` naming the file."""
    import ml_collections  # pylint: disable=import-outside-toplevel
    path, *arg = spec.split(":", 1)
    try:
        loader = importlib.machinery.SourceFileLoader("config_file", path)
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
        loader.exec_module(module)
    except ConfigError:
        raise
    except Exception as e:  # pylint: disable=broad-except  (anything the user's file raises)
        raise ConfigError(f"config file {path} cannot be loaded: {_one_line(e)}") from e
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"config file {path} has no get_config() function")
    try:
        config = module.get_config(*arg)
    except ConfigError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        raise ConfigError(f"config file {path}: get_config() failed: {_one_line(e)}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        got = "None" if config is None else type(config).__name__
        raise ConfigError(f"config file {path}: get_config() returned {got}, not an ml_collections.ConfigDict")
    return config


def _one_line(error):
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _ConfigFileParser(flags.ArgumentParser):
    """Replaces ml_collections' file parser, which reports a broken file late or with a traceback."""

    def parse(self, argument):
        return load_config_file(argument).lock()

    def flag_type(self):
        return "config object"


HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")


def _print_help_if_asked(argv):
    """Flags are parsed before absl's own --help exists (and absl's exits 1): answer it here."""
    asked = [a for a in argv[1:] if a in HELP_FLAGS]
    if not asked:
        return
    if asked[0] == "--helpfull":
        app.usage(shorthelp=False, writeto_stdout=True)
        sys.exit(0)
    main = sys.modules["__main__"]
    print((main.__doc__ or "").strip() + "\n\nflags:")
    flags_by_module = flags.FLAGS.flags_by_module_dict()
    for module in dict.fromkeys(("__main__", argv[0], getattr(main.__spec__, "name", ""), __name__)):
        for flag in sorted(flags_by_module.get(module, []), key=lambda f: f.name):
            default = "" if flag.default is None else f" (default: {flag.default_as_str})"
            print(f"  --{flag.name}: {' '.join(str(flag.help).split())}{default}")
    print("\n--helpfull lists every flag, TensorFlow's and absl's included.")
    sys.exit(0)


def define_config_and_workdir(example, workdir_help, config_required=True):
    """The --config (a locked ml_collections config file, `--config.KEY=VALUE` overrides) and
    --workdir flags of a training script."""
    from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

    config_flags.DEFINE_config_file("config", None, f"Config file, e.g. {example}.", lock_config=True)
    flags.FLAGS["config"].parser = _ConfigFileParser()
    flags.DEFINE_string("workdir", None, workdir_help)
    flags.mark_flags_as_required(["config", "workdir"] if config_required else ["workdir"])


def run(main):
    """Parses flags, then runs `main()`; user mistakes exit 2 with one line. `--help` (or `-h`,
    `--helpfull`) prints the script's docstring and flags and exits 0."""
    _print_help_if_asked(sys.argv)
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
            sys.exit(getattr(e, "exit_code", Preempted.EXIT_CODE))
        except KeyboardInterrupt:  # Ctrl-C outside training (start-up, evaluation, export)
            print("interrupted (SIGINT): nothing half-written is left; re-run the same command to "
                  "resume", file=sys.stderr)
            sys.exit(128 + signal.SIGINT)

    app.run(_main, argv=sys.argv[:1])
