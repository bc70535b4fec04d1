"""A user's own code named in a config: "package.module:function" (a model builder, a data source).

One place resolves such names and calls them, so every kind gives the same one-line errors and
nothing is imported until a config asks for it. An exception the user's code raises (on import or
when called) becomes a `ConfigError` naming the function, the exception and the user's own
file:line; its `user_frames` hold the user's part of the traceback, for the command to print
after the error line. tfscale's own frames are left out: they are not what the user has to fix.
"""
import functools
import importlib
import inspect
import os
import site
import sysconfig
import traceback

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
    module = _import(module_name, name, what)
    fn = getattr(module, function, None)
    if not callable(fn):
        raise ConfigError(f"{what} {name!r}: {module_name} has no function {function}")
    return fn


def _import(module_name, name, what):
    """The module; what its own code raises while importing is a ConfigError at its file:line."""
    try:
        return importlib.import_module(module_name)
    except ConfigError:
        raise
    except SyntaxError as e:  # the user's file does not parse: no frame of it, the error has the place
        frames = [traceback.FrameSummary(e.filename, e.lineno, "<module>", line=(e.text or "").strip())
                  ] if e.filename and e.lineno else []
        raise _raised(f"{what} {name!r}: importing {module_name}", e, frames, text=e.msg) from e
    except Exception as e:  # pylint: disable=broad-except  (anything the user's module raises)
        frames = _user_frames(e.__traceback__)
        if not frames and isinstance(e, ImportError):  # the module itself is not there
            raise ConfigError(f"{what} {name!r}: cannot import {module_name} ({e})") from None
        raise _raised(f"{what} {name!r}: importing {module_name}", e, frames) from e


def call_user(fn, name, what, /, *args, **kwargs):
    """`fn(*args, **kwargs)`, the user's function `name`; what it raises (but a deliberate
    ConfigError) becomes a ConfigError at the user's file:line, not a traceback through tfscale."""
    try:
        return fn(*args, **kwargs)
    except ConfigError:
        raise
    except Exception as e:  # pylint: disable=broad-except  (anything the user's code raises)
        frames = _user_frames(e.__traceback__, _entry_file(fn))
        raise _raised(f"{what} {name!r}", e, frames, fallback=_definition(fn)) from e


def _raised(subject, error, frames, fallback="", text=None):
    """The ConfigError "SUBJECT raised TYPE: MESSAGE (file:line)" at the innermost user frame."""
    where = _place(frames[-1].filename, frames[-1].lineno) if frames else fallback
    message = f"{subject} raised {type(error).__name__}"
    text = _one_line(error if text is None else text)
    return _user_error(message + (f": {text}" if text else "") + (f" ({where})" if where else ""), frames)


def _user_error(message, frames):
    error = ConfigError(message)
    error.user_frames = "".join(
        ["your code (most recent call last):\n"] + traceback.format_list(frames)) if frames else ""
    return error


def _one_line(value):
    return " ".join(str(value).split())


def _place(filename, lineno):
    """file:line, relative to the working directory when the file is under it."""
    path = os.path.abspath(filename)
    relative = os.path.relpath(path)
    return f"{relative if not relative.startswith('..') else path}:{lineno}"


@functools.lru_cache(maxsize=1)
def _library_dirs():
    """Folders whose files are not the user's: the standard library, installed packages, tfscale."""
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if paths.get(k)}
    dirs.update(site.getsitepackages() + [site.getusersitepackages()])
    dirs.add(os.path.dirname(os.path.abspath(__file__)))  # tfscale
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs)


def _is_users(filename, entry_file=None):
    if filename.startswith("<") or os.path.basename(filename).startswith("__autograph_generated"):
        return False  # <frozen importlib._bootstrap>, TensorFlow's transformed copies of functions
    path = os.path.realpath(filename)
    if entry_file and path == entry_file:
        return True
    return not path.startswith(_library_dirs())


def _user_frames(tb, entry_file=None):
    """The frames of `tb` in the user's files (their module's file even when it is installed)."""
    return [frame for frame in traceback.extract_tb(tb) if _is_users(frame.filename, entry_file)]


def _code(fn):
    return getattr(inspect.unwrap(fn), "__code__", None)


def _entry_file(fn):
    code = _code(fn)
    return os.path.realpath(code.co_filename) if code else None


def _definition(fn):
    """Where `fn` is defined: the place to blame when it fails before running a line (its arguments)."""
    code = _code(fn)
    return _place(code.co_filename, code.co_firstlineno) if code else ""
