"""The one user-facing exception type; every module may import it, it imports nothing.

Scripts print a `ConfigError` as one `error:` line and exit 2 (no traceback); anything else that
escapes is a bug and keeps its traceback.
"""


class ConfigError(ValueError):
    """A user mistake in a config, a flag, an input file or a workdir; the message is one line."""


def require(ok, message):
    """Raises `ConfigError(message)` unless `ok`: the one-line checks of configs and inputs."""
    if not ok:
        raise ConfigError(message)
