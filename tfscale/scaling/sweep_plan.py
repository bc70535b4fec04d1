"""Planning a sweep: every run with its length and planned FLOPs, cheapest first, and shards of it."""
import dataclasses

from absl import logging
import numpy as np

from tfscale.errors import ConfigError
from tfscale.scaling.sweep_spec import (_budget_label, _short, apply_overrides, length_overrides, parse_size,
                                        search_settings)


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    name: str
    group: str  # (size, budget): the runs of a search that a fit picks the best of
    size: str
    overrides: tuple  # ((dotted key, value), ...) applied to the base config
    num_steps: int
    cost: float  # planned training FLOPs (progress and ETA)
    compute_budget: float = 0.0
    after: str = ""  # a run that must have finished first (a wsd branch's trunk)
    role: str = ""  # "trunk": trained for its branches, not a budget's result
    run_dir: str = ""  # where it trains; "" = DIR/runs/NAME of the sweep's workdir


TRUNK_REF = "trunk:"  # train.init_from of a planned branch: "trunk:NAME@STEP", resolved in DIR/runs


def resolve_overrides(overrides, workdir):
    """The overrides with a branch's "trunk:NAME@STEP" made the trunk's workdir in DIR/runs, at
    STEP or, where the trunk kept no checkpoint there (a budget added after it trained), at its
    newest checkpoint before STEP (or none): the branch trains the updates between again."""
    return tuple((k, _trunk_path(v, workdir) if isinstance(v, str) and v.startswith(TRUNK_REF) else v)
                 for k, v in overrides)


def _trunk_path(reference, workdir):
    """`train.init_from` of a branch: the trunk at STEP, at its newest checkpoint before STEP, or
    "" (trained from the start: the same run) where every checkpoint it kept is later."""
    from tfscale import branch, io  # pylint: disable=import-outside-toplevel
    from tfscale.scaling import sweep_results  # pylint: disable=import-outside-toplevel
    name, _, step = reference[len(TRUNK_REF):].rpartition("@")
    trunk_dir, step = io.join(workdir, "runs", name), int(step)
    if step in branch.checkpoint_steps(trunk_dir) or name not in sweep_results.finished(workdir):
        # A trunk that failed or has not finished is no place to start from: its checkpoints
        # may still change, or be rotated away under a branch that resumes later.
        return f"{trunk_dir}@{step}"
    start = branch.newest_step_at_or_before(trunk_dir, step) or 0
    if start != step:
        logging.info("%s kept no checkpoint at update %d: the branch starts at %s and trains the %d "
                     "constant-rate updates between again", trunk_dir, step,
                     f"its update {start}" if start else "the beginning", step - start)
    return f"{trunk_dir}@{start}" if start else ""


def _wsd_runs(label, group_of, size_overrides, setting, budget_steps, sweep, batch, flops_per_example, multiple):
    """One size's trunk and its branches (`tfscale.branch.plan`), for one search setting."""
    from tfscale import branch  # pylint: disable=import-outside-toplevel
    suffix = "".join(f"_{k.split('.')[-1]}={_short(v)}" for k, v in setting)
    trunk_name = f"{label}_trunk{suffix}"
    warmup = sweep.get("warmup_steps", 0) or round(sweep.warmup_fraction * min(steps for _, steps in budget_steps))
    trunk, branches = branch.plan(TRUNK_REF + trunk_name, [steps for _, steps in budget_steps],
                                  sweep.cooldown_fraction, warmup, multiple)
    trunk_steps = dict(trunk)["train.num_steps"]
    runs = [PlannedRun(name=trunk_name, group=trunk_name, size=label, overrides=(*size_overrides, *trunk, *setting),
                       num_steps=trunk_steps, cost=float(trunk_steps * batch * flops_per_example), role="trunk")]
    for (budget, steps), overrides in zip(budget_steps, branches):
        start = int(dict(overrides)["train.init_from"].rsplit("@", 1)[1])
        runs.append(PlannedRun(name=group_of(budget) + suffix, group=group_of(budget), size=label,
                               overrides=(*size_overrides, *overrides, *setting), num_steps=steps,
                               cost=float((steps - start) * batch * flops_per_example), after=trunk_name))
    return runs


def size_costs(config, sizes):
    """{label: (num_params, training FLOPs per example, tokens per example)} by building each size,
    counted as `scaling.params` says (`models/card.py`; "total" without it)."""
    import tf_keras as keras  # pylint: disable=import-outside-toplevel
    from tfscale import data, models  # pylint: disable=import-outside-toplevel

    convention = config.scaling.get("params", "total") if "scaling" in config else "total"
    out, infos = {}, {}
    for label, overrides in sizes:
        c = apply_overrides(config, overrides)
        key = (c.data.to_json(sort_keys=True), c.model.get("seq_len"))
        if key not in infos:  # the data set is read once, not once per size
            infos[key] = data.load(c.data, c.model.get("seq_len")).info
        info = infos[key]
        network = models.build(c.model, info)
        card = models.describe(network, c.model, info.task)
        out[label] = (card.params(convention), card.flops(convention), card.tokens_per_example or 1)
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
    warmup_steps = s.get("warmup_steps", 0)
    if isinstance(warmup_steps, bool) or not (isinstance(warmup_steps, int) and warmup_steps >= 0):
        raise ConfigError(f"sweep.warmup_steps must be a whole number >= 0, got {s.warmup_steps!r}")
    if warmup_steps and s.schedule != "wsd":
        raise ConfigError("sweep.warmup_steps is the wsd trunks' warmup; cosine runs take "
                          "sweep.warmup_fraction of their own length")
    if s.schedule not in ("cosine", "wsd"):
        raise ConfigError(f"unknown sweep.schedule {s.schedule!r}; choose cosine or wsd")
    if s.schedule == "wsd" and s.compute_budgets:
        raise ConfigError("sweep.schedule=wsd branches data budgets (sweep.num_tokens) from one run per "
                          "size; isoFLOP profiles (sweep.compute_budgets) need sweep.schedule=cosine")
    sizes = [parse_size(t, i) for i, t in enumerate(s.sizes)]
    if len({label for label, _ in sizes}) != len(sizes):
        raise ConfigError("sweep.sizes has two entries with the same label")
    costs = size_costs(config, sizes)
    rng = np.random.default_rng(s.seed)
    batch = config.train.batch_size
    runs = []
    for label, overrides in sizes:
        _, flops_per_example, tokens_per_example = costs[label]
        if s.schedule == "wsd":
            budget_steps = [(t, max(1, round(t / tokens_per_example / batch))) for t in s.num_tokens]
            for setting in search_settings(s, rng):
                runs += _wsd_runs(label, lambda t, label=label: f"{label}_{_budget_label(t, 'T')}", overrides,
                                  setting, budget_steps, s, batch, flops_per_example,
                                  max(1, config.train.steps_per_execution))
            continue
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
    if s.schedule == "wsd":
        # The costliest trunk first, each branch right after its trunk: a pool starts the
        # longest chain at once instead of last, and one process still runs a trunk first.
        by_name = {r.name: r for r in runs}
        return sorted(runs, key=lambda r: (-by_name[r.after or r.name].cost, r.after or r.name, bool(r.after), r.cost))
    return sorted(runs, key=lambda r: r.cost)


def shard(runs, shard_index=0, num_shards=1):
    """Round-robin share of the (cost-ordered) runs: shards get similar work and never overlap.
    A wsd trunk and its branches are one unit: a branch needs its trunk's checkpoints."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ConfigError(f"--shard_index {shard_index} must be in [0, --num_shards {num_shards})")
    families = list(dict.fromkeys(r.after or r.name for r in runs))
    mine = set(families[shard_index::num_shards])
    return [r for r in runs if (r.after or r.name) in mine]
