"""Planning inside the swept sizes, the plan check's comparison and the learning rate per size
(synthetic laws and stubbed sweeps: no training)."""
import json
import math

import numpy as np
import pytest

from tfscale.errors import ConfigError
from tfscale.scaling import analysis, learning_rates, main_job, plan_check, planning, rounds

TRUE = {"E": 1.7, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.28}
SWEPT = {f"s{i}": n for i, n in enumerate(np.geomspace(1e5, 1e6, 4))}
BEYOND = {"lo": 5e4, "c2m": 2e6, "c4m": 4e6, "c8m": 8e6}
COSTS = {label: (float(n), 6 * n, 1) for label, n in {**SWEPT, **BEYOND}.items()}
TOKENS = np.geomspace(1e8, 1e10, 4)


def law_rows(labels):
    """Noise-free points of TRUE for the sizes `labels` on every budget of TOKENS."""
    return [{"name": f"{label}_{d:.0e}", "size": label, "num_params": COSTS[label][0], "num_tokens": d,
             "flops": 6 * COSTS[label][0] * d, "loss": planning.chinchilla_loss(TRUE, COSTS[label][0], d)}
            for label in labels for d in TOKENS]


def budget_for(n_opt, p=TRUE):
    """The C = 6ND budget whose compute-optimal N under `p` is `n_opt` (Hoffmann et al., App. D)."""
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    return 6 * (n_opt / g) ** ((p["alpha"] + p["beta"]) / p["beta"])


def fit_for(budget):
    def fit_fn(rows):
        return analysis.analyze(rows, law="chinchilla", budgets=[budget], bootstrap=0, grid_stride=37,
                                check_extrapolation=False)
    return fit_fn


def stub_sweep(calls):
    def sweep_fn(sizes):
        calls.append([label for label, _ in sizes])
        return law_rows(calls[-1])
    return sweep_fn


CANDIDATES = [(label, (("model.d_model", i),)) for i, label in enumerate(COSTS)]


def test_a_plan_beyond_the_largest_size_is_flagged_in_fit_json_and_report(tmp_path):
    budget = budget_for(3e7)  # far above the largest swept size and every candidate
    out = rounds.plan_in_range(list(SWEPT.items()), COSTS, stub_sweep([]), fit_for(budget), lambda rows: [])
    plan = out["plan"]
    assert plan["num_params"] == pytest.approx(3e7, rel=0.02)
    assert plan["in_swept_range"] is False and plan["swept_range"] == [1e5, pytest.approx(1e6)]
    assert "lies above the swept sizes" in plan["range_note"] and "extrapolates" in plan["range_note"]
    assert "no candidate size lies above" in out["rounds"][-1]["action"]
    main_job.write_fit_report(str(tmp_path), out["result"], out["rows"])
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["compute_optimal"][0]["in_swept_range"] is False and fit["planning_rounds"][0]["round"] == 0
    report = (tmp_path / "report.md").read_text()
    assert "## The plan against the swept sizes" in report and plan["range_note"] in report
    # the final size stays inside the data: the largest swept size, not an extrapolated one
    label = main_job.choose_size(CANDIDATES, COSTS, plan["num_params"], out["swept_range"])[0]
    assert label == "s3"


def test_the_job_adds_the_next_size_beyond_the_edge_until_the_plan_is_inside():
    calls = []
    out = rounds.plan_in_range(list(SWEPT.items()), COSTS, stub_sweep(calls), fit_for(budget_for(3e6)),
                               lambda rows: CANDIDATES)
    swept = list(SWEPT)
    # 3e6 lies above 1e6: c2m is added (the nearest beyond the edge, not c4m or c8m), then c4m
    assert calls == [swept, swept + ["c2m"], swept + ["c2m", "c4m"]]
    assert [r["in_swept_range"] for r in out["rounds"]] == [False, False, True]
    assert "added c2m" in out["rounds"][0]["action"] and "added c4m" in out["rounds"][1]["action"]
    assert out["plan"]["in_swept_range"] and out["swept_range"][1] == 4e6
    assert main_job.choose_size(CANDIDATES, COSTS, out["plan"]["num_params"], out["swept_range"])[0] == "c4m"
    assert all(line.startswith("- round ") for line in rounds.markdown(out["rounds"]))


def test_below_the_smallest_size_and_the_round_limit():
    calls = []
    out = rounds.plan_in_range(list(SWEPT.items()), COSTS, stub_sweep(calls), fit_for(budget_for(3e6)),
                               lambda rows: CANDIDATES, max_added=1)
    assert calls[-1][-1] == "c2m" and len(calls) == 2
    assert "stopped after 1 added sizes" in out["rounds"][-1]["action"]
    assert main_job.choose_size(CANDIDATES, COSTS, out["plan"]["num_params"], out["swept_range"])[0] == "c2m"
    low = rounds.plan_in_range(list(SWEPT.items()), COSTS, stub_sweep([]), fit_for(budget_for(7e4)),
                               lambda rows: CANDIDATES)
    assert [r["sizes"][-1] for r in low["rounds"]] == ["s3", "lo"] and low["plan"]["in_swept_range"]


def test_an_undetermined_plan_is_one_config_error_line():
    reason = "the fitted A = 0, alpha = 0: loss does not fall with the model size"

    def fit_fn(rows):
        return {"compute_optimal": [{"flops": 1e20, "num_params": None, "num_tokens": None, "undetermined": reason}]}

    with pytest.raises(ConfigError) as e:
        rounds.plan_in_range(list(SWEPT.items()), COSTS, stub_sweep([]), fit_fn, lambda rows: CANDIDATES)
    assert str(e.value) == reason and "\n" not in str(e.value)


def test_learning_rate_power_law_is_recovered_and_fills_in_unsearched_candidates():
    n = np.geomspace(1e4, 1e7, 5)
    exponent, coefficient = learning_rates.fit(list(zip(n, 0.1 * n ** -0.5)))
    assert exponent == pytest.approx(-0.5, abs=1e-9) and coefficient == pytest.approx(0.1, rel=1e-9)
    rates = {label: 0.1 * COSTS[label][0] ** -0.5 for label in SWEPT}
    rated, info = learning_rates.assign(CANDIDATES, rates, COSTS)
    rated = dict(rated)
    assert dict(rated["c4m"])["optimizer.learning_rate"] == pytest.approx(0.1 * 4e6 ** -0.5, rel=1e-9)
    assert dict(rated["s0"])["optimizer.learning_rate"] == rates["s0"]
    assert info["exponent"] == pytest.approx(-0.5) and {t["source"] for t in info["sizes"]} == {"sweep", "interpolated"}
    assert "N^-0.500" in learning_rates.markdown(info)[0]


def test_best_learning_rate_per_size_from_search_rows():
    rows = []
    for label in SWEPT:
        best = 0.1 * COSTS[label][0] ** -0.5
        for d in (1e8, 1e9):
            for lr in (best / 3, best, best * 3):  # loss lowest at `best` in every (size, budget) group
                rows.append({"name": f"{label}_{d:.0e}_{lr:.3g}", "group": f"{label}_{d:.0e}", "size": label,
                             "learning_rate": lr, "status": "ok", "loss": 2.0 + abs(math.log(lr / best))})
    rows.append({**rows[0], "name": "crashed", "status": "failed", "loss": 0.1})
    found = learning_rates.best_from_results(rows)
    assert found == {label: pytest.approx(0.1 * COSTS[label][0] ** -0.5) for label in SWEPT}
    exponent, _ = learning_rates.fit([(COSTS[label][0], lr) for label, lr in found.items()])
    assert exponent == pytest.approx(-0.5)


def test_plan_check_compares_paired_losses_within_their_noise():
    rng = np.random.default_rng(0)
    base = 2.0 + 0.3 * rng.standard_normal(400)  # windows differ a lot; the paired difference does not

    def model(size, shift, n):
        return {"size": size, "role": "chosen" if size == "m" else "x", "num_params": n,
                "losses": base + shift + 0.01 * rng.standard_normal(400)}

    check = plan_check.compare([model("m", 0.0, 2), model("s", 0.05, 1), model("l", 0.04, 3)], "m")
    assert check["verdict"] == "wins" and check["outcomes"] == {"s": "worse", "l": "worse"}
    assert [r["size"] for r in check["models"]] == ["s", "m", "l"]
    s = next(r for r in check["models"] if r["size"] == "s")
    assert s["diff_vs_chosen"] == pytest.approx(0.05, abs=0.005) and 0 < s["diff_se"] < 0.005
    assert s["se"] > s["diff_se"]  # each loss alone is noisier than the paired difference
    assert plan_check.compare([model("m", 0, 2), model("s", 0.0, 1), model("l", 0.04, 3)], "m")["verdict"] == "ties"
    assert plan_check.compare([model("m", 0, 2), model("s", -0.05, 1)], "m")["verdict"] == "loses"
    blocks = np.repeat(np.arange(8.0), 10)  # 8 blocks of 10 equal values
    assert plan_check.block_se(blocks) == pytest.approx(np.std(np.arange(8), ddof=1) / math.sqrt(8))


def test_neighbours_and_steps_at_the_same_compute():
    assert plan_check.neighbours(CANDIDATES, COSTS, "s3") == ("s2", "c2m")
    assert plan_check.neighbours(CANDIDATES, COSTS, "lo") == (None, "s0")
    assert plan_check.steps_at(1e12, 1e6, 8) == 125_000


def test_the_job_takes_searched_rates_when_the_sweep_searches_them():
    from experiments.configs import scaling_lm  # pylint: disable=import-outside-toplevel
    from tfscale.scaling import sweep  # pylint: disable=import-outside-toplevel

    config = scaling_lm.get_config("gpu")
    assert learning_rates.searched(config) and not learning_rates.searched(scaling_lm.get_config("tiny"))
    sizes = [sweep.parse_size(t, i) for i, t in enumerate(config.sweep.sizes)]
    candidates = [sweep.parse_size(t, i) for i, t in enumerate(config.scaling.candidate_sizes)]
    costs = {label: (1e5 * 2 ** i, 0, 512) for i, (label, _) in enumerate(sorted(candidates, key=lambda c: c[0]))}
    rows = [{"name": f"{label}_{lr}", "group": label, "size": label, "learning_rate": lr, "status": "ok",
             "loss": 2 + abs(math.log(lr / (0.1 * costs[label][0] ** -0.5)))}
            for label, _ in sizes for lr in (1e-4, 3e-4, 1e-3, 3e-3)]
    rated, info = main_job._rated(config, sizes, candidates, costs)  # pylint: disable=protected-access
    rated = dict(rated(rows))
    assert {t["source"] for t in info["table"]["sizes"]} == {"search", "interpolated"}
    for label, _ in sizes:
        best = min((r for r in rows if r["size"] == label), key=lambda r: r["loss"])["learning_rate"]
        assert dict(rated[label])["optimizer.learning_rate"] == pytest.approx(best)
