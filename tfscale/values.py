"""Config values written as text: comma-separated names and "PATH@STEP" references.

At the bottom of the import graph (like `errors`), so every layer that reads such a value parses
it the same way without importing the config module above it.
"""
from tfscale.errors import ConfigError


def names(text):
    """Comma-separated names as a list (blanks dropped)."""
    return [n.strip() for n in str(text).split(",") if n.strip()]


def init_from_parts(text):
    """`train.init_from` "PATH@STEP" as (PATH, STEP); raises ConfigError when malformed."""
    path, at, step = str(text).strip().rpartition("@")
    if not (at and path.strip() and step.strip().isdigit()):
        raise ConfigError(f"train.init_from {text!r} must be WORKDIR_OR_CHECKPOINT@STEP (e.g. runs/trunk@2400)")
    return path.strip(), int(step)
