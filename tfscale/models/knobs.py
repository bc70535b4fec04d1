"""Range checks for model knobs, run by each builder before it makes a layer.

Keras would reject `Dense(0)` or `Dropout(1.5)` only deep inside the build, with a traceback;
these turn the same mistakes into one `ConfigError` line that names the config key.
"""
from tfscale.errors import ConfigError


def at_least(minimum, **knobs):
    """Each knob is an integer >= `minimum`."""
    for name, value in knobs.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"model.{name} must be an integer >= {minimum}, got {value!r}")


def dropout(value):
    """A dropout rate is in [0, 1): at 1 every unit is dropped and nothing can be learned."""
    if not 0 <= value < 1:
        raise ConfigError(f"model.dropout must be in [0, 1), got {value!r}")
