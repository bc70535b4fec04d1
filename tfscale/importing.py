"""A user's own code named in a config: "package.module:function" (a model builder, a data source).

One place resolves such names, so every kind gives the same one-line errors and nothing is
imported until a config asks for it.
"""
import importlib

from tfscale.errors import ConfigError


def is_importable_name(name):
    """True for "package.module:function" (what a registry name never looks like)."""
    return ":" in str(name)


def function_by_name(name, what):
    """The callable `name` ("package.module:function") points to; `what` words the errors
    ("model", "data")."""
    module_name, _, function = str(name).partition(":")
    if not module_name or not function:
        raise ConfigError(f"{what} {name!r}: name your own as package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{what} {name!r}: cannot import {module_name} ({e})") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise ConfigError(f"{what} {name!r}: {module_name} has no function {function}")
    return fn
