"""The `sweep` config section and its small languages: sizes, searches and dotted-key overrides.

Kept apart from planning and running so configs can import the defaults without TensorFlow.
"""
import itertools
import math

import ml_collections

from tfscale.errors import ConfigError


def sweep_defaults():
    """The `sweep` section a sweep config adds to a training config."""
    s = ml_collections.ConfigDict()
    # One entry per model size: "label: key=value,key=value" (label optional; keys without a
    # section are model keys, e.g. "xs: num_layers=2,d_model=48,optimizer.learning_rate=6e-3").
    s.sizes = ()
    s.num_tokens = ()  # data budgets (examples for non-sequence data); each size trains on each
    s.compute_budgets = ()  # FLOP budgets: each size trains for C / (FLOPs per token) tokens instead
    # Search over other keys: "key=v1,v2,...;key=..." (random mode also takes key=loguniform(lo,hi)).
    s.search = ""
    s.search_mode = "grid"  # grid | random
    s.search_samples = 4  # random mode: settings tried per (size, budget)
    s.warmup_fraction = 0.05  # warmup updates as a fraction of each run's own length (wsd: of the smallest budget's)
    s.warmup_steps = 0  # wsd: the trunks' warmup in updates instead (0 = warmup_fraction of the smallest budget)
    # cosine: one run per (size, budget), cosine to its own last update. wsd: one constant-rate
    # trunk per size and a cooldown per budget branched from it (Hägele et al. 2024).
    s.schedule = "cosine"
    s.cooldown_fraction = 0.2  # wsd: each budget's cooldown, a fraction of its updates (1-sqrt shape)
    s.seed = 0  # random search draws
    # Runs at a time, each in its own process: 1 = one after another in this process; 0 = auto
    # (CPU: cores // threads_per_worker; GPU host: one per GPU; TPU: 1).
    s.workers = 1
    s.threads_per_worker = 0  # CPU threads of each pool worker; 0 = cores // workers (1 with workers=0)
    return s


def parse_size(text, index):
    """"label: k=v,k=v" -> (label, ((dotted key, value), ...))."""
    label, sep, body = str(text).partition(":")
    if not sep:
        label, body = f"s{index}", label
    pairs = []
    for item in filter(None, (i.strip() for i in body.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"sweep.sizes entry {text!r}: {item!r} is not key=value")
        key = key.strip() if "." in key else f"model.{key.strip()}"
        pairs.append((key, parse_value(value.strip())))
    if not pairs:
        raise ConfigError(f"sweep.sizes entry {text!r} sets nothing")
    return label.strip(), tuple(pairs)


def parse_value(text):
    """A value written in a spec: an int, a float, true/false, else the text itself."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_search(text):
    """"k=v1,v2;k2=loguniform(lo,hi)" -> {dotted key: [values] or ("loguniform", lo, hi)}."""
    space = {}
    for part in filter(None, (p.strip() for p in str(text).split(";"))):
        key, eq, values = part.partition("=")
        if not eq or not values.strip():
            raise ConfigError(f"sweep.search entry {part!r} is not key=v1,v2,...")
        values = values.strip()
        if values.startswith("loguniform(") and values.endswith(")"):
            lo, hi = (float(v) for v in values[len("loguniform("):-1].split(","))
            if not 0 < lo < hi:
                raise ConfigError(f"sweep.search {key}: loguniform needs 0 < lo < hi, got {lo}, {hi}")
            space[key.strip()] = ("loguniform", lo, hi)
        else:
            space[key.strip()] = [parse_value(v.strip()) for v in values.split(",")]
    return space


def search_settings(sweep, rng):
    """The settings ((key, value), ...) to try for one (size, budget): [()] without a search."""
    space = parse_search(sweep.search)
    if not space:
        return [()]
    if sweep.search_mode == "grid":
        if any(isinstance(v, tuple) for v in space.values()):
            raise ConfigError("sweep.search: loguniform(...) needs sweep.search_mode=random")
        return [tuple(zip(space, combo)) for combo in itertools.product(*space.values())]
    if sweep.search_mode != "random":
        raise ConfigError(f"unknown sweep.search_mode {sweep.search_mode!r}; choose grid or random")

    def draw(spec):
        if isinstance(spec, tuple):
            return float(math.exp(rng.uniform(math.log(spec[1]), math.log(spec[2]))))
        return spec[rng.integers(len(spec))]

    return [tuple((k, draw(v)) for k, v in space.items()) for _ in range(sweep.search_samples)]


def _short(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _budget_label(value, unit):
    exponent = int(math.floor(math.log10(value)))
    return f"{unit}{value / 10 ** exponent:.3g}e{exponent}"


def apply_overrides(config, overrides):
    """A copy of `config` with dotted-key overrides (unknown keys are a ConfigError)."""
    c = ml_collections.ConfigDict(config.to_dict())
    for key, value in overrides:
        node, *path = key.split(".")
        parent = c
        for part in [node, *path][:-1]:
            if part not in parent:
                raise ConfigError(f"sweep: unknown config key {key!r}")
            parent = parent[part]
        leaf = key.split(".")[-1]
        if leaf not in parent:
            raise ConfigError(f"sweep: unknown config key {key!r}")
        current = parent[leaf]
        parent[leaf] = type(current)(value) if isinstance(current, (int, float)) and not isinstance(
            current, bool) and isinstance(value, (int, float)) else value
    return c


def length_overrides(sweep, num_steps):
    """A run's length and the schedule fitted to it: warmup a fixed share, cosine to its last update."""
    return (("train.num_steps", num_steps), ("schedule.warmup_steps", round(sweep.warmup_fraction * num_steps)))


def strip_sections(config):
    """A run's own config, locked: the sweep config without its `sweep` and `scaling` sections."""
    for section in ("sweep", "scaling"):
        if section in config:
            del config[section]
    return config.lock()
