"""The search space: `tune.space` entries "KEY=SPEC" parsed, checked against the config, sampled.

Parsing happens before anything is written, so a bad spec, an unknown key, lo >= hi or a
value of the wrong type is one `ConfigError` line. A trial's values become ordinary config
overrides (`sweep_spec.apply_overrides`, the sweeps' machinery), so a trial is a plain run.
"""
import dataclasses
import math
import re

from tfscale.errors import ConfigError, require
from tfscale.scaling.sweep_spec import apply_overrides, parse_value

KINDS = ("loguniform", "uniform", "int", "choice")
_SPEC = re.compile(r"^\s*([A-Za-z_]+)\s*\((.*)\)\s*$")
GRID_MAX_POINTS = 10_000


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched key: `kind` is one of KINDS; `lo`, `hi` (and `log`) for ranges, `choices` else."""
    key: str
    kind: str
    lo: float = None
    hi: float = None
    log: bool = False
    choices: tuple = ()

    def spec(self):
        if self.kind == "choice":
            return f"choice({', '.join(str(c) for c in self.choices)})"
        return f"{self.kind}({self.lo:g}, {self.hi:g}{', log' if self.log and self.kind == 'int' else ''})"

    def grid_values(self):
        """The points of a grid over this key (choices, or every integer of an int range)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.lo), int(self.hi) + 1))
        raise ConfigError(f"tune.sampler=grid needs choice(...) or int(...) specs, and {self.key} is "
                          f"{self.spec()}: a continuous range has no grid points; list them with "
                          "choice(...), or use tune.sampler=tpe or random")

    def suggest(self, trial):
        """This key's value for an Optuna trial (the sampler's draw, or the enqueued value)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.lo), int(self.hi), log=self.log)
        return trial.suggest_float(self.key, self.lo, self.hi, log=self.kind == "loguniform")

    def extremes(self):
        return list(self.choices) if self.kind == "choice" else [self.lo, self.hi]


def leaf(config, key, what="tune.space"):
    """(parent ConfigDict, leaf name) of a dotted key, or a ConfigError naming it (and `what`)."""
    import ml_collections  # pylint: disable=import-outside-toplevel
    *path, name = key.split(".")
    node = config
    for i, part in enumerate(path):
        require(isinstance(node, ml_collections.ConfigDict) and part in node,
                f"{what}: unknown config key {key!r} (no section {'.'.join(path[:i + 1])!r})")
        node = node[part]
    require(isinstance(node, ml_collections.ConfigDict) and name in node,
            f"{what}: unknown config key {key!r}")
    require(not isinstance(node[name], ml_collections.ConfigDict), f"{what}: {key!r} is a section, not a key")
    return node, name


def _number(text, entry):
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"tune.space {entry!r}: {text.strip()!r} is not a number") from None
    require(math.isfinite(value), f"tune.space {entry!r}: {text.strip()} is not a finite number")
    return value


def _parse_one(entry):
    key, eq, spec = str(entry).partition("=")
    key = key.strip()
    require(eq and key and spec.strip(), f"tune.space entry {entry!r} is not KEY=SPEC, e.g. "
            "optimizer.learning_rate=loguniform(1e-4, 1e-2)")
    match = _SPEC.match(spec)
    require(match is not None, f"tune.space {entry!r}: {spec.strip()!r} is not a spec; use "
            "loguniform(lo, hi), uniform(lo, hi), int(lo, hi), int(lo, hi, log) or choice(a, b, ...)")
    kind, args = match.group(1), [a.strip() for a in match.group(2).split(",")]
    require(kind in KINDS, f"tune.space {entry!r}: unknown spec {kind!r}; choose one of {', '.join(KINDS)}")
    require(all(args), f"tune.space {entry!r}: an empty argument in {spec.strip()}")
    if kind == "choice":
        values = tuple(parse_value(a) for a in args)
        require(len(values) >= 2, f"tune.space {entry!r}: choice needs at least 2 values")
        require(len(set(values)) == len(values), f"tune.space {entry!r}: a value is listed twice")
        return Param(key, kind, choices=values)
    log = kind == "loguniform"
    if kind == "int" and len(args) == 3:
        require(args[2] == "log", f"tune.space {entry!r}: the third argument of int(...) can only be log")
        log, args = True, args[:2]
    require(len(args) == 2, f"tune.space {entry!r}: {kind} takes (lo, hi){', or (lo, hi, log)' if kind == 'int' else ''}")
    lo, hi = (_number(a, entry) for a in args)
    require(lo < hi, f"tune.space {entry!r}: lo must be below hi, got {lo:g} >= {hi:g}")
    if kind == "int":
        require(lo.is_integer() and hi.is_integer(), f"tune.space {entry!r}: int bounds must be integers")
        lo, hi = int(lo), int(hi)
    if log:
        require(lo > 0, f"tune.space {entry!r}: {'loguniform' if kind != 'int' else 'int(..., log)'} "
                f"needs lo > 0, got {lo:g}")
    return Param(key, kind, lo, hi, log)


def _typed(param, config):
    """The param with its values in the key's own type; a ConfigError where they cannot be."""
    parent, name = leaf(config, param.key)
    kind = parent.get_type(name)
    what = f"tune.space {param.key}={param.spec()}"
    if kind is bool:
        require(param.kind == "choice" and all(isinstance(c, bool) for c in param.choices),
                f"{what}: {param.key} is true/false; use choice(true, false)")
        return param
    if kind is int:
        require(param.kind == "int" or (param.kind == "choice" and all(
            isinstance(c, int) and not isinstance(c, bool) for c in param.choices)),
                f"{what}: {param.key} is an integer; use int(lo, hi) or choice of integers")
        return param
    if kind is float:
        if param.kind == "choice":
            require(all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in param.choices),
                    f"{what}: {param.key} is a number; every choice must be one")
            return dataclasses.replace(param, choices=tuple(float(c) for c in param.choices))
        return param
    if kind is str:
        require(param.kind == "choice", f"{what}: {param.key} is a string; use choice(a, b, ...)")
        return dataclasses.replace(param, choices=tuple(str(c) for c in param.choices))
    raise ConfigError(f"{what}: {param.key} holds a {getattr(kind, '__name__', kind)}, which cannot be tuned")


def parse(config):
    """`config.tune.space` as a tuple of Params, checked against the config's keys and types."""
    params = tuple(_typed(_parse_one(entry), config) for entry in config.tune.space)
    keys = [p.key for p in params]
    duplicate = next((k for k in keys if keys.count(k) > 1), None)
    require(duplicate is None, f"tune.space: {duplicate!r} is searched twice")
    tuned = next((k for k in keys if k.split(".")[0] == "tune"), None)
    require(tuned is None, f"tune.space: {tuned!r} is a key of the tune section itself")
    if config.tune.sampler == "grid":
        size = math.prod(len(p.grid_values()) for p in params)
        require(size <= GRID_MAX_POINTS, f"tune.sampler=grid: the grid has {size:,} points (more than "
                f"{GRID_MAX_POINTS:,}); narrow the int ranges or use tune.sampler=tpe")
    return params


def grid(params):
    """{key: [values]} of a grid search (Optuna's GridSampler)."""
    return {p.key: p.grid_values() for p in params}


def trial_config(config, values):
    """A trial's own training config, locked: `config` with its values, without the tune section."""
    c = apply_overrides(config, tuple(values.items()))
    del c["tune"]
    return c.lock()


def check_extremes(config, params):
    """Every key at each end of its range is a config `validate` accepts (checked before writing)."""
    from tfscale import config as config_lib  # pylint: disable=import-outside-toplevel
    config_lib.validate(trial_config(config, {}))
    for p in params:
        for value in p.extremes():
            try:
                config_lib.validate(trial_config(config, {p.key: value}))
            except ConfigError as e:
                raise ConfigError(f"tune.space {p.key}={p.spec()}: at {p.key}={value} the config is "
                                  f"refused: {e}") from None
