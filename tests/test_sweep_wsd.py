"""wsd sweeps: one constant-rate trunk per size, a cooldown branch per data budget."""
import pytest
import tensorflow as tf

from tfscale import io, workdir as workdir_lib
from tfscale.scaling import results, sweep
from conftest import with_overrides
from sweep_fixtures import copy_sweep, measured_size_costs, quiet, tiny_sweep  # noqa: F401  (a fixture)


def wsd_sweep(**keys):
    """The tiny wsd sweep, its runs checkpointing and logging less often (`sweep_fixtures.QUIET`)."""
    return quiet(tiny_sweep(schedule="wsd", **keys))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny wsd sweep of the two smallest sizes on both budgets, trained once for the tests
    that read it (and copied by those that add to it): (config, workdir, run_sweep's answer)."""
    config = wsd_sweep(sizes=tiny_sweep().sweep.sizes[:2])
    workdir = str(tmp_path_factory.mktemp("wsd_sweep"))
    return config, workdir, sweep.run_sweep(config, workdir)


def grown_sweep(**keys):
    """Size a of `finished` on budgets below, between and beyond its 4,096 and 8,192 tokens, the
    trunk's warmup kept (2,048 tokens would halve the default one)."""
    one_size = tiny_sweep().sweep.sizes[:1]
    warmup = dict(next(r for r in sweep.plan(wsd_sweep(sizes=one_size, num_tokens=(4096, 8192)))
                       if r.role == "trunk").overrides)["schedule.warmup_steps"]
    return wsd_sweep(sizes=one_size, num_tokens=(2048, 4096, 6144, 8192, 16384), warmup_steps=warmup, **keys)


@pytest.fixture(scope="module")
def fresh_on_a_pool(tmp_path_factory):
    """`grown_sweep` from nothing on a pool of 2 workers, trained once: (config, run_sweep's answer)."""
    config = grown_sweep(workers=2, threads_per_worker=1)
    return config, sweep.run_sweep(config, str(tmp_path_factory.mktemp("fresh_on_a_pool")))


def test_plan_has_one_trunk_per_size_and_a_branch_per_budget_after_it():
    config = wsd_sweep()
    runs = sweep.plan(config)
    trunks = [r for r in runs if r.role == "trunk"]
    branches = [r for r in runs if r.after]
    assert len(trunks) == len(config.sweep.sizes)
    assert len(branches) == len(config.sweep.sizes) * len(config.sweep.num_tokens)
    position = {r.name: i for i, r in enumerate(runs)}
    for b in branches:
        o = dict(b.overrides)
        trunk = dict(next(t for t in trunks if t.name == b.after).overrides)
        start = int(o["train.init_from"].rsplit("@", 1)[1])
        assert position[b.after] < position[b.name]  # one process runs the trunk first
        assert o["schedule.name"] == trunk["schedule.name"] == "wsd"
        assert o["schedule.warmup_steps"] == trunk["schedule.warmup_steps"]  # one warmup for all
        assert start in trunk["checkpoint.keep_steps"] and start <= trunk["train.num_steps"]
        assert o["schedule.cooldown_steps"] == o["train.num_steps"] - start
        assert o["schedule.cooldown_steps"] == round(config.sweep.cooldown_fraction * b.num_steps)
    # Trunks of the costliest size first, so a pool starts the longest chain at once.
    assert [t.cost for t in trunks] == sorted((t.cost for t in trunks), reverse=True)


@pytest.mark.parametrize("num_shards", [1, 2, 3])
def test_shards_keep_a_trunk_with_its_branches_and_cover_every_run_once(num_shards):
    runs = sweep.plan(wsd_sweep())
    seen = []
    for i in range(num_shards):
        mine = sweep.shard(runs, i, num_shards)
        names = {r.name for r in mine}
        assert all(r.after in names for r in mine if r.after)
        seen += [r.name for r in mine]
    assert sorted(seen) == sorted(r.name for r in runs)


def test_cosine_and_isoflop_budgets_are_refused_for_wsd():
    from tfscale import ConfigError  # pylint: disable=import-outside-toplevel
    with pytest.raises(ConfigError, match="sweep.schedule=wsd branches data budgets"):
        sweep.plan(wsd_sweep(num_tokens=(), compute_budgets=(2e9,)))
    with pytest.raises(ConfigError, match="unknown sweep.schedule 'linear'"):
        sweep.plan(tiny_sweep(schedule="linear"))


def test_wsd_sweep_gives_every_budget_a_row_and_keeps_trunks_out_of_the_fit(finished):
    config, workdir, out = finished
    assert not out["failed"]
    rows = results.read(out["results"])
    trunk_rows = [r for r in rows if r.get("role") == "trunk"]
    assert len(trunk_rows) == 2
    fitted = results.usable(rows)
    assert len(fitted) == 2 * len(config.sweep.num_tokens)
    assert not any(r.get("role") for r in fitted)
    # A branch started from its trunk's kept checkpoint at its branch point: its first update
    # continued the trunk's (same weights at the branch point), and it ended at its own length.
    for branch in (r for r in sweep.plan(config) if r.after):
        start = int(dict(branch.overrides)["train.init_from"].rsplit("@", 1)[1])
        kept = tf.train.load_checkpoint(io.join(workdir, "runs", branch.after, "checkpoints", "keep",
                                                f"ckpt-{start}"))
        [iterations] = [n for n in kept.get_variable_to_shape_map()
                        if n.startswith("optimizer/") and n.split("/")[1] in ("iter", "_iterations")]
        assert int(kept.get_tensor(iterations)) == start
        row = next(r for r in rows if r["name"] == branch.name)
        assert row["steps"] == branch.num_steps
    # Each size's losses fall with its budget (the cooldowns are real training).
    for size in {r["size"] for r in fitted}:
        losses = [r["loss"] for r in sorted((r for r in fitted if r["size"] == size), key=lambda r: r["num_tokens"])]
        assert losses == sorted(losses, reverse=True), losses


def test_a_pool_starts_a_branch_only_after_its_trunk(fresh_on_a_pool):
    # One size: while its trunk trains, the second worker has only that trunk's branches to take.
    config, out = fresh_on_a_pool
    assert not out["failed"], out  # a branch started early would fail: its trunk's checkpoint missing
    rows = results.read(out["results"])
    assert sorted(r["name"] for r in rows) == sorted(r.name for r in sweep.plan(config))


def _names(config):
    return [r.name for r in sweep.plan(config)]


def _losses(out):
    """{name: loss} of the budgets' runs the sweep `out` planned (a shared folder may hold others)."""
    return {r["name"]: r["loss"] for r in results.read(out["results"])
            if r.get("role") != "trunk" and r["name"] in out["planned"]}


def test_budgets_added_to_a_finished_sweep_equal_a_fresh_sweep_and_train_only_what_is_new(
        finished, fresh_on_a_pool, tmp_path):
    """Budgets between, beyond and below the trunk's kept checkpoints branch from its newest
    checkpoint before their cooldown (or from the start), so each row equals a sweep that had
    every budget from the beginning, and the finished trunk and branches are not trained again."""
    _, workdir, first = finished  # sizes a and b on 4,096 and 8,192 tokens; size a grows
    grown_dir = copy_sweep(workdir, tmp_path / "grown")
    assert len(first["ran"]) == 6 and sum(n.startswith("a_") for n in first["ran"]) == 3
    grown = grown_sweep()
    again = sweep.run_sweep(grown, grown_dir)
    assert sorted(again["ran"]) == sorted(n for n in _names(grown) if n not in first["ran"])
    assert (again["skipped"], again["failed"]) == (3, [])
    # Where each new budget started: 2,048 tokens before every checkpoint the trunk kept (from the
    # start), 6,144 and 16,384 at the newest checkpoint before their cooldown (between, beyond).
    trunk = next(r for r in sweep.plan(grown) if r.role == "trunk").name
    starts = {}
    for planned in (r for r in sweep.plan(grown) if r.name in again["ran"]):
        init_from = workdir_lib.read_config_json(io.join(grown_dir, "runs", planned.name))["train"]["init_from"]
        cooldown = int(dict(planned.overrides)["train.init_from"].rsplit("@", 1)[1])
        starts[planned.group.split("_T")[1]] = init_from, cooldown
    assert starts["2.05e3"][0] == ""
    for budget in ("6.14e3", "1.64e4"):
        init_from, cooldown = starts[budget]
        assert init_from.startswith(io.join(grown_dir, "runs", trunk) + "@")
        assert int(init_from.rsplit("@", 1)[1]) < cooldown
    # the same planned runs as a sweep that had every budget from the start (trained on a pool)
    fresh_config, fresh = fresh_on_a_pool
    assert _names(fresh_config) == _names(grown)
    assert len(fresh["ran"]) == 6 and _losses(again) == pytest.approx(_losses(fresh), rel=1e-6, abs=0)
    assert len(_losses(fresh)) == 5


def test_a_finished_run_trained_with_other_settings_is_refused_before_anything_trains(finished, tmp_path):
    from tfscale import ConfigError  # pylint: disable=import-outside-toplevel
    config, workdir, _ = finished
    workdir = copy_sweep(workdir, tmp_path / "sweep")
    sizes, budgets = config.sweep.sizes, config.sweep.num_tokens
    label, shape = sizes[0].split(":", 1)
    wider = f"{label}:{shape.replace('d_model=8', 'd_model=12')}"
    assert wider != sizes[0]
    with pytest.raises(ConfigError, match=r"finished in .* with model.d_model=8, but the plan now gives it 12: "
                                          "use a new workdir, or give a changed size a new label"):
        sweep.run_sweep(wsd_sweep(sizes=(wider,), num_tokens=budgets), workdir)
    with pytest.raises(ConfigError, match=r"schedule.warmup_steps=2, but the plan now gives it 1: .*"
                                          r"--config.sweep.warmup_steps=2"):
        sweep.run_sweep(wsd_sweep(sizes=sizes, num_tokens=(2048, *budgets)), workdir)
    with pytest.raises(ConfigError, match=r"finished in .* with optimizer.weight_decay=.*, but the plan now gives it 0.5"):
        sweep.run_sweep(with_overrides(wsd_sweep(sizes=sizes, num_tokens=budgets).unlock(),
                                       optimizer__weight_decay=0.5).lock(), workdir)
    runs = io.gfile.listdir(io.join(workdir, "runs"))
    assert sorted(r.rstrip("/") for r in runs) == sorted(_names(config))


def test_sweep_warmup_steps_sets_every_trunks_warmup_and_is_checked():
    from tfscale import ConfigError  # pylint: disable=import-outside-toplevel
    runs = sweep.plan(wsd_sweep(warmup_steps=3))
    assert {dict(r.overrides)["schedule.warmup_steps"] for r in runs} == {3}
    for bad in (-1, True):  # (a float is refused by the config itself)
        with pytest.raises(ConfigError, match="sweep.warmup_steps must be a whole number >= 0"):
            sweep.plan(wsd_sweep(warmup_steps=bad))
    with pytest.raises(ConfigError, match="sweep.warmup_steps is the wsd trunks' warmup"):
        sweep.plan(tiny_sweep(warmup_steps=3))
