"""Scaling sweeps: plan the runs, run them one after another, resumable and shardable.

A sweep is a training config with a `sweep` section (see `sweep_defaults`): model sizes x data
budgets (`num_tokens`), or compute budgets with several sizes each (`compute_budgets`, isoFLOP
profiles), optionally crossed with a search over any other config keys (grid or random), whose
best run per (size, budget) a fit keeps. Every run is a normal training run in its own workdir
(`DIR/runs/NAME`) with its schedule fitted to its own length: warmup a fixed fraction of its
updates, cosine to its own last update. Each finished or failed run appends one row to
`DIR/results.jsonl` (`results.append`: atomic, safe for several shards sharing the folder).

Re-running the same command skips runs whose last row says `ok`, resumes an interrupted run
from its checkpoints and retries failed ones. `shard_index/num_shards` split the planned runs
round-robin, so shards on machines that share DIR together run each exactly once.
"""
import dataclasses
import itertools
import math
import sys
import time

from absl import logging
import ml_collections
import numpy as np

from tfscale import io, lock as lock_lib
from tfscale.errors import ConfigError
from tfscale.scaling import results as results_lib

RESULTS_FILE = "results.jsonl"


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
    s.warmup_fraction = 0.05  # warmup updates as a fraction of each run's own length
    s.seed = 0  # random search draws
    return s


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    name: str
    group: str  # (size, budget): the runs of a search that a fit picks the best of
    size: str
    overrides: tuple  # ((dotted key, value), ...) applied to the base config
    num_steps: int
    cost: float  # planned training FLOPs (progress and ETA)
    compute_budget: float = 0.0


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
        pairs.append((key, _value(value.strip())))
    if not pairs:
        raise ConfigError(f"sweep.sizes entry {text!r} sets nothing")
    return label.strip(), tuple(pairs)


def _value(text):
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
            space[key.strip()] = [_value(v.strip()) for v in values.split(",")]
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


def size_costs(config, sizes):
    """{label: (num_params, training FLOPs per example, tokens per example)} by building each size."""
    import tf_keras as keras  # pylint: disable=import-outside-toplevel
    from tfscale import data, models  # pylint: disable=import-outside-toplevel

    out = {}
    for label, overrides in sizes:
        c = apply_overrides(config, overrides)
        info = data.load(c.data, c.model.get("seq_len")).info
        network = models.build(c.model, info)
        out[label] = (getattr(network, "non_embedding_params", models.num_params(network)),
                      models.training_flops_per_example(network),
                      getattr(network, "tokens_per_example", 1))
        keras.backend.clear_session()
    return out


def plan(config):
    """Every run of the sweep, in a fixed order (cheapest first), as `PlannedRun`s."""
    s = config.sweep
    if not s.sizes:
        raise ConfigError("sweep.sizes is empty: list the model sizes to sweep")
    if bool(s.num_tokens) == bool(s.compute_budgets):
        raise ConfigError("set exactly one of sweep.num_tokens (data budgets) and sweep.compute_budgets "
                          "(isoFLOP profiles)")
    if any(b <= 0 for b in (*s.num_tokens, *s.compute_budgets)):
        raise ConfigError("sweep budgets must be positive")
    if not 0 <= s.warmup_fraction < 1:
        raise ConfigError(f"sweep.warmup_fraction must be in [0, 1), got {s.warmup_fraction}")
    sizes = [parse_size(t, i) for i, t in enumerate(s.sizes)]
    if len({label for label, _ in sizes}) != len(sizes):
        raise ConfigError("sweep.sizes has two entries with the same label")
    costs = size_costs(config, sizes)
    rng = np.random.default_rng(s.seed)
    batch = config.train.batch_size
    runs = []
    for label, overrides in sizes:
        _, flops_per_example, tokens_per_example = costs[label]
        budgets = [("tokens", t) for t in s.num_tokens] or [("flops", c) for c in s.compute_budgets]
        for kind, budget in budgets:
            examples = budget / tokens_per_example if kind == "tokens" else budget / flops_per_example
            steps = max(1, round(examples / batch))
            group = f"{label}_{_budget_label(budget, 'T' if kind == 'tokens' else 'C')}"
            for setting in search_settings(s, rng):
                suffix = "".join(f"_{k.split('.')[-1]}={_short(v)}" for k, v in setting)
                runs.append(PlannedRun(
                    name=group + suffix, group=group, size=label,
                    overrides=(*overrides, *length_overrides(s, steps), *setting),
                    num_steps=steps, cost=float(steps * batch * flops_per_example),
                    compute_budget=float(budget) if kind == "flops" else 0.0))
    for r in runs:
        apply_overrides(config, r.overrides)  # an unknown search key fails now, not mid-sweep
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError("sweep: two planned runs have the same name (repeated budgets or search values?)")
    return sorted(runs, key=lambda r: r.cost)


def shard(runs, shard_index=0, num_shards=1):
    """Round-robin share of the (cost-ordered) runs: shards get similar work and never overlap."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ConfigError(f"--shard_index {shard_index} must be in [0, --num_shards {num_shards})")
    return runs[shard_index::num_shards]


def finished(results_path):
    """Names whose last row is `ok`."""
    if not io.exists(results_path):
        return set()
    latest = {}
    for row in results_lib.read(results_path):
        latest[row.get("name")] = row.get("status")
    return {name for name, status in latest.items() if status == "ok"}


class Progress:
    """One line of progress over the whole sweep, weighted by planned FLOPs, with an ETA."""

    def __init__(self, runs, stream=None):
        self.total = sum(r.cost for r in runs) or 1.0
        self.count = len(runs)
        self.done = 0.0
        self.index = 0
        self.t0 = time.time()
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last_print = 0.0

    def line(self, run, fraction):
        done = self.done + run.cost * fraction
        elapsed = time.time() - self.t0
        share = done / self.total
        eta = elapsed * (1 - share) / share if share > 0 else float("nan")
        bar = "#" * int(30 * share) + "." * (30 - int(30 * share))
        return (f"sweep [{bar}] {100 * share:5.1f}%  run {self.index}/{self.count} {run.name} "
                f"{100 * fraction:3.0f}%  elapsed {_clock(elapsed)}  ETA {_clock(eta)}")

    def update(self, run, fraction, force=False):
        now = time.time()
        if not force and now - self.last_print < (1.0 if self.tty else 30.0):
            return
        self.last_print = now
        text = self.line(run, fraction)
        self.stream.write(("\r" + text) if self.tty else text + "\n")
        self.stream.flush()

    def finish_run(self, run):
        self.update(run, 1.0, force=True)
        if self.tty:
            self.stream.write("\n")
        self.done += run.cost


def _clock(seconds):
    if not math.isfinite(seconds):
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def _progress_callback(progress, run):
    import tf_keras as keras  # pylint: disable=import-outside-toplevel

    class _Callback(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            progress.update(run, step / run.num_steps)

    return _Callback()


def row_for(run, summary, config):
    """The results row of a finished run: N, D (tokens), C and the final eval loss."""
    num_tokens = summary.get("num_tokens", summary["examples_seen"])  # examples for non-sequence data
    flops = summary["flops_per_example"] * summary["examples_seen"]
    return {
        "name": run.name, "group": run.group, "size": run.size, "status": "ok",
        "num_params": summary.get("non_embedding_params", summary["num_params"]),
        "total_params": summary["num_params"],
        "num_tokens": float(num_tokens), "flops": float(flops), "loss": summary["eval_loss"],
        "train_loss": summary.get("train_loss"), "steps": summary["steps"],
        "batch_size": config.train.batch_size, "learning_rate": config.optimizer.learning_rate,
        "overrides": {k: v for k, v in run.overrides}, "compute_budget": run.compute_budget or None,
        "wall_seconds": summary.get("wall_seconds"),
        **({"eval_accuracy": summary["eval_accuracy"]} if "eval_accuracy" in summary else {}),
    }


def run_sweep(config, workdir, shard_index=0, num_shards=1, train_fn=None):
    """Runs this shard's share of the sweep into `workdir`; returns {"ran", "skipped", "failed"}.

    train_fn(config, workdir, callbacks) -> summary (default `tfscale.run.train`); a failing
    run is recorded as `failed` with its error and the sweep goes on. SIGTERM (preemption)
    stops the sweep: the run saves a checkpoint and the next invocation resumes it.
    """
    from tfscale import run as run_lib  # pylint: disable=import-outside-toplevel

    train_fn = train_fn or run_lib.train
    runs = shard(plan(config), shard_index, num_shards)
    # One process per shard: a second copy of the same shard would run and record runs twice.
    with lock_lib.WorkdirLock(workdir, name=f"sweep-shard{shard_index}of{num_shards}"):
        return _run_shard(config, workdir, runs, train_fn)


def _run_shard(config, workdir, runs, train_fn):
    from tfscale import callbacks as callbacks_lib  # pylint: disable=import-outside-toplevel
    import tf_keras as keras  # pylint: disable=import-outside-toplevel

    results_path = io.join(workdir, RESULTS_FILE)
    done = finished(results_path)
    todo = [r for r in runs if r.name not in done]
    logging.info("sweep: %d runs in this shard, %d finished before, %d to run", len(runs),
                 len(runs) - len(todo), len(todo))
    progress = Progress(todo)
    failed = []
    for run in todo:
        progress.index += 1
        run_config = strip_sections(apply_overrides(config, run.overrides))
        run_dir = io.join(workdir, "runs", run.name)
        t0 = time.time()
        try:
            summary = train_fn(run_config, run_dir, (_progress_callback(progress, run),))
            row = row_for(run, summary, run_config)
        except callbacks_lib.Preempted:
            raise
        except Exception as e:  # pylint: disable=broad-except  (a failed run must not stop the sweep)
            logging.exception("sweep run %s failed", run.name)
            message = str(e).strip().splitlines()
            row = {"name": run.name, "group": run.group, "size": run.size, "status": "failed",
                   "error": f"{type(e).__name__}: {message[0] if message else ''}",
                   "overrides": {k: v for k, v in run.overrides}, "wall_seconds": time.time() - t0}
            failed.append(run.name)
        finally:
            keras.backend.clear_session()
        results_lib.append(results_path, row)
        progress.finish_run(run)
        if row["status"] == "ok":
            logging.info("sweep %s: N %d, D %.3g, C %.3g, loss %.4f (%.0f s)", run.name, row["num_params"],
                         row["num_tokens"], row["flops"], row["loss"], time.time() - t0)
    return {"ran": [r.name for r in todo], "skipped": len(runs) - len(todo), "failed": failed,
            "results": results_path}
