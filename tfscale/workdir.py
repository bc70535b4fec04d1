"""The workdir of a run: checked before anything is written, never damaged by a failed run.

A workdir holds one run. Re-running the same command resumes it; a config that differs in
something that changes the result is refused rather than mixed into the old run. Keys that
change speed or memory but not the math (devices, accumulation, logging) may differ.
"""
import json
import os
import tempfile

from absl import logging

from tfscale import io
from tfscale.errors import ConfigError

CONFIG_FILE = "config.json"
# Sections/keys that may change between an interrupted run and its resumption.
RESUMABLE = ("distribute.", "checkpoint.", "eval.", "export.", "compress.", "train.accum_steps",
             "train.steps_per_execution", "train.jit_compile", "train.log_every_steps")


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_dict(config):
    """The config as plain JSON data."""
    return json.loads(config.to_json())


def check(workdir, config):
    """Raises ConfigError if `workdir` cannot hold this run; writes nothing.

    A remote workdir (`gs://...`) is not probed for writability here; the first write reports
    a bucket that cannot be written.
    """
    if not str(workdir or "").strip():
        raise ConfigError("--workdir is empty (an unset shell variable?); name the folder of the run")
    if not io.is_remote(workdir):
        _check_local(workdir)
    saved_path = io.join(workdir, CONFIG_FILE)
    if io.exists(saved_path):
        saved, new, differ = differences(workdir, config)
        if differ:
            shown = ", ".join(f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in differ[:3])
            more = f" (+{len(differ) - 3} more)" if len(differ) > 3 else ""
            raise ConfigError(f"workdir {workdir} holds a run with a different config ({shown}{more}); "
                              "use a new workdir")


def _check_local(workdir):
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"workdir {workdir} exists and is not a folder")
    parent = workdir
    while not os.path.exists(parent):
        parent = os.path.dirname(os.path.abspath(parent))
    if not os.path.isdir(parent):
        raise ConfigError(f"workdir {workdir} cannot be written ({parent} is not a folder)")
    # access() says yes to root even on a read-only mount: try a real (removed) file instead.
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".tfscale-probe-"):
            pass
    except OSError as e:
        raise ConfigError(f"workdir {workdir} cannot be written ({parent}: {e.strerror or e})") from None


def differences(workdir, config, may_differ=()):
    """(saved, new, keys): the run's saved config.json and `config`, flattened, and the keys in
    which they differ, beyond what a resumed run may change (`RESUMABLE`) and `may_differ`."""
    from tfscale.config import defaults  # pylint: disable=import-outside-toplevel
    # A key added to tfscale after the run started was, for that run, its default.
    saved = {**_flat(config_dict(defaults())), **_flat(read_config_json(workdir))}
    new = _flat(config_dict(config))
    skip = RESUMABLE + tuple(may_differ)
    return saved, new, sorted(k for k in set(saved) | set(new)
                              if saved.get(k) != new.get(k) and not k.startswith(skip))


def read_config_json(workdir):
    """The workdir's config.json as a dict; a damaged file is a ConfigError, not a traceback."""
    path = io.join(workdir, CONFIG_FILE)
    try:
        saved = io.read_json(path)
    except io.DamagedFile as e:
        raise ConfigError(f"{e}; restore it or use a new workdir") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} is damaged (not a JSON object); restore it or use a new workdir")
    return saved


TOKENIZER_DIR = "tokenizer"


def check_tokenizer(workdir, tokenizer):
    """A resumed run's data must be cut with the tokenizer it started with: the one saved in
    its workdir (`save_tokenizer`). Raises ConfigError naming the file; writes nothing."""
    from tfscale.data import tokenizers  # pylint: disable=import-outside-toplevel
    path = io.join(workdir, TOKENIZER_DIR, tokenizers.SPEC_FILE)
    if not io.exists(path):
        return
    saved = _saved_tokenizer_spec(workdir)
    if tokenizer is None or not tokenizers.same(saved, tokenizer.spec()):
        now = "no tokenizer" if tokenizer is None else f"a {tokenizer.spec()['kind']} tokenizer that differs"
        raise ConfigError(f"{path} is not the data's tokenizer (the data now has {now}): the run "
                          "started on other data; use a new workdir or the data it was trained on")


def _saved_tokenizer_spec(workdir):
    """The spec in the workdir's tokenizer.json. A damaged one is rebuilt from the SentencePiece
    model beside it (saved first, so it is there); without one (a byte tokenizer's spec is all
    there is) nothing tells what the run started on: a ConfigError naming the file."""
    from tfscale.data import tokenizers  # pylint: disable=import-outside-toplevel
    folder = io.join(workdir, TOKENIZER_DIR)
    spec, damage = _spec_or_damage(io.join(folder, tokenizers.SPEC_FILE))
    if spec is not None:
        return spec
    model_path = io.join(folder, tokenizers.MODEL_FILE)
    if io.exists(model_path):
        try:
            return tokenizers.SentencePieceTokenizer(io.read_bytes(model_path)).spec()
        except Exception:  # pylint: disable=broad-except  (damaged too: nothing to rebuild from)
            pass
    raise ConfigError(f"{damage}; the run's tokenizer is unknown: restore it, or if the data is the "
                      f"one the run started on, delete {folder} to record its tokenizer again")


def _spec_or_damage(path):
    """(the JSON object in `path`, None), or (None, what is wrong with it)."""
    try:
        spec = io.read_json(path)
    except io.DamagedFile as e:
        return None, str(e)
    return (spec, None) if isinstance(spec, dict) else (None, f"{path} is damaged (not a JSON object)")


def save_tokenizer(workdir, tokenizer):
    """Keeps the run's tokenizer in `workdir/tokenizer` (first run only); a damaged tokenizer.json
    that `check_tokenizer` rebuilt and found to be this tokenizer's is written again."""
    from tfscale.data import tokenizers  # pylint: disable=import-outside-toplevel
    path = io.join(workdir, TOKENIZER_DIR, tokenizers.SPEC_FILE)
    if tokenizer is None:
        return
    if io.exists(path):
        spec, damage = _spec_or_damage(path)
        if spec is not None:
            return
        logging.warning("%s; rebuilt from %s", damage, tokenizers.MODEL_FILE)
    tokenizer.save(io.join(workdir, TOKENIZER_DIR))


def prepare(workdir, config):
    """Creates the workdir and records the config (first run only)."""
    io.makedirs(workdir)
    path = io.join(workdir, CONFIG_FILE)
    if not io.exists(path):
        io.write_json(path, config_dict(config))


def load_config(workdir):
    """The config a workdir was trained with, as a locked ConfigDict."""
    import ml_collections  # pylint: disable=import-outside-toplevel

    path = io.join(workdir, CONFIG_FILE)
    if not io.exists(path):
        raise ConfigError(f"{workdir} is not a tfscale run: no {CONFIG_FILE}")
    from tfscale.config import defaults  # pylint: disable=import-outside-toplevel
    config = defaults()
    config.update(ml_collections.ConfigDict(read_config_json(workdir)))
    return config
