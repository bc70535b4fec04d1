"""Scaling-law fits recover known laws; planning matches hand-computed values; the CLI writes its files."""
import json
import os

import numpy as np
import pytest

from conftest import run_command
from tfscale import scaling
from tfscale.scaling import analysis, fitting, laws, planning, results

TRUE = {"E": 1.7, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.28}


def synthetic_rows(params=TRUE, noise=0.01, seed=0, sizes=np.geomspace(1e6, 1e9, 8),
                   tokens=np.geomspace(1e8, 1e11, 8)):
    """Points on a Chinchilla law, with multiplicative noise of `noise` (standard deviation)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for d in tokens:
            loss = params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]
            rows.append({"name": f"n{n:.3g}_d{d:.3g}", "num_params": n, "num_tokens": d, "flops": 6 * n * d,
                         "loss": loss * (1 + noise * rng.standard_normal()), "status": "ok"})
    return rows


def test_full_grid_fit_recovers_exponents_within_003_with_1pct_noise():
    rows = synthetic_rows()
    out = fitting.fit_law(rows, "chinchilla")  # the full 4,500-point grid of initialisations
    assert abs(out["params"]["alpha"] - TRUE["alpha"]) < 0.03, out["params"]
    assert abs(out["params"]["beta"] - TRUE["beta"]) < 0.03, out["params"]
    assert abs(out["params"]["E"] - TRUE["E"]) < 0.1
    assert out["r2"] > 0.97


def _coarse_grid(k):
    return fitting.grid(k)[::37]  # every 37th grid point: keeps the tests fast


def test_noise_free_fit_is_exact_and_bootstrap_interval_covers_truth():
    exact = fitting.fit_law(synthetic_rows(noise=0.0), "chinchilla", inits=_coarse_grid(2))
    for name, value in TRUE.items():
        assert exact["params"][name] == pytest.approx(value, rel=1e-3), name
    noisy = fitting.fit_law(synthetic_rows(noise=0.01, seed=3), "chinchilla", inits=_coarse_grid(2), bootstrap=30)
    for name in ("alpha", "beta", "E"):
        lo, hi = noisy["ci"][name]
        assert lo < TRUE[name] < hi and hi - lo > 0, (name, lo, hi)


def test_single_variable_laws_recover_their_exponent():
    n = np.geomspace(1e5, 1e9, 12)
    rows = [{"num_params": v, "num_tokens": 1e9, "flops": 6e9 * v, "loss": 2.0 + 50 / v ** 0.3} for v in n]
    assert laws.choose(rows).name == "n"
    out = fitting.fit_law(rows, inits=_coarse_grid(1))
    assert out["params"]["alpha"] == pytest.approx(0.3, abs=1e-3)
    assert out["params"]["E"] == pytest.approx(2.0, rel=1e-3)


def test_failed_and_duplicate_rows_are_ignored(tmp_path):
    path = str(tmp_path / "results.jsonl")
    rows = synthetic_rows(noise=0.0, sizes=np.geomspace(1e6, 1e9, 4), tokens=np.geomspace(1e8, 1e11, 4))
    for r in rows:
        results.append(path, r)
    results.append(path, {"name": "crashed", "status": "failed", "error": "OOM", "num_params": 1e7})
    results.append(path, {**rows[0], "loss": float("nan")})  # a diverged run
    results.append(path, {**rows[1], "status": "failed", "error": "preempted"})
    loaded = results.load(path)
    # the last row of a name wins: rows[0] ended with a NaN loss, rows[1] with a failure
    assert {r["name"] for r in loaded} == {r["name"] for r in rows[2:]}


def test_group_keeps_its_best_run(tmp_path):
    path = str(tmp_path / "results.jsonl")
    for i, loss in enumerate([3.0, 2.5, 2.7]):
        results.append(path, {"name": f"run{i}", "group": "n1", "num_params": 1, "num_tokens": 1, "flops": 6,
                              "loss": loss, "status": "ok"})
    assert [r["name"] for r in results.load(path)] == ["run1"]


def test_compute_optimal_matches_hand_computed_closed_form():
    p = {"E": 1.0, "A": 1.0, "B": 1.0, "alpha": 1.0, "beta": 0.5}
    # G = (alpha A / (beta B))^(1/(alpha+beta)) = 2^(2/3); N = G (C/6)^(1/3), D = (C/6)^(2/3) / G.
    n, d = planning.compute_optimal(p, 6e6)
    assert n == pytest.approx(2 ** (2 / 3) * 100, rel=1e-9)
    assert d == pytest.approx(1e4 / 2 ** (2 / 3), rel=1e-9)
    # and it is the minimum along the isoFLOP line, by brute force:
    grid_n = np.geomspace(n / 10, n * 10, 20001)
    losses = 1 + 1 / grid_n + 1 / np.sqrt(6e6 / (6 * grid_n))
    assert grid_n[losses.argmin()] == pytest.approx(n, rel=1e-3)
    # the numeric path with 6N FLOPs per token agrees with the closed form
    assert planning.compute_optimal(p, 6e6, lambda m: 6 * m) == pytest.approx((n, d), rel=1e-6)


def test_target_loss_inverse_matches_hand_computed_values():
    p = {"E": 1.0, "A": 100.0, "B": 100.0, "alpha": 0.5, "beta": 0.5}
    # At the optimum both terms are (L - E)/2 = 0.01: N = D = (100 / 0.01)^2 = 1e8, C = 6e16.
    n, d, c = planning.target_loss(p, 1.02)
    assert (n, d, c) == pytest.approx((1e8, 1e8, 6e16), rel=1e-9)
    assert planning.optimal_loss(p, c) == pytest.approx(1.02, rel=1e-9)
    assert planning.target_loss(p, 0.99) is None  # below the irreducible loss
    # with a FLOP count of 8N per token the same loss costs 8/6 as much compute
    _, _, c8 = planning.target_loss(p, 1.02, lambda m: 8 * m)
    assert c8 == pytest.approx(8e16, rel=1e-6)


def test_isoflop_minima_find_the_optimum_and_flag_edges():
    p = {"E": 1.0, "A": 100.0, "B": 100.0, "alpha": 0.5, "beta": 0.5}
    rows = []
    for c in (6e14, 6e16):
        n_opt, _ = planning.compute_optimal(p, c)
        for n in n_opt * np.geomspace(0.25, 4, 7):
            d = c / (6 * n)
            rows.append({"num_params": n, "num_tokens": d, "flops": c, "compute_budget": c,
                         "loss": p["E"] + p["A"] / n ** 0.5 + p["B"] / d ** 0.5})
    iso = planning.isoflop_minima(rows)
    assert [m["at_edge"] for m in iso["minima"]] == [False, False]
    for m, c in zip(iso["minima"], (6e14, 6e16)):
        assert m["num_params"] == pytest.approx(planning.compute_optimal(p, c)[0], rel=0.05)
    assert iso["n_opt_exponent"] == pytest.approx(0.5, abs=0.01)
    # only sizes above the optimum: the minimum sits at the edge of the profile
    edge = [r for r in rows if r["flops"] == 6e14 and r["num_params"] > planning.compute_optimal(p, 6e14)[0]]
    assert planning.isoflop_minima(edge)["minima"][0]["at_edge"]


def test_extrapolation_predicts_held_out_largest_model():
    rows = synthetic_rows(noise=0.0, sizes=np.geomspace(1e6, 1e9, 5), tokens=np.geomspace(1e8, 1e11, 4))
    ex = analysis.extrapolation(rows, laws.LAWS["chinchilla"], inits=_coarse_grid(2))
    assert {h["num_params"] for h in ex["held_out"]} == {1e9}
    assert len(ex["held_out"]) == 4 and ex["max_abs_rel_error"] < 1e-3


def _write_csv(path, rows):
    with open(path, "w") as f:
        f.write("num_params,num_tokens,flops,loss\n")
        for r in rows:
            f.write(f"{r['num_params']},{r['num_tokens']},{r['flops']},{r['loss']}\n")


def test_fit_cli_drops_outliers_and_writes_fit_json_plot_and_report(tmp_path):
    rows = synthetic_rows(noise=0.005, sizes=np.geomspace(1e6, 1e9, 5), tokens=np.geomspace(1e8, 1e11, 5))
    for r in rows[:3]:  # three extraction outliers, far above the law
        r["loss"] *= 1.6
    _write_csv(tmp_path / "points.csv", rows)
    out = tmp_path / "fit"
    proc = run_command("fit", [f"--results={tmp_path / 'points.csv'}", f"--workdir={out}", "--drop_highest_loss=3",
                               "--bootstrap=20", "--compute_budget=1e21", "--target_loss=2.0", "--grid_stride=37"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "fit.json").read_text())
    assert set(result) >= {"law", "params", "ci", "r2", "rmse", "n_points", "extrapolation", "compute_optimal"}
    assert result["law"] == "chinchilla" and result["n_points"] == 22
    assert abs(result["params"]["alpha"] - TRUE["alpha"]) < 0.03 and abs(result["params"]["beta"] - TRUE["beta"]) < 0.03
    assert set(result["ci"]) == {"E", "A", "B", "alpha", "beta"}
    plan = result["compute_optimal"][0]
    assert plan["flops"] == 1e21 and plan["num_params"] * plan["num_tokens"] * 6 == pytest.approx(1e21, rel=1e-6)
    assert result["target"]["flops"] > 0 and "ci" in result["target"]
    assert (out / "scaling.png").stat().st_size > 10_000
    assert "| alpha |" in (out / "report.md").read_text() and "| alpha |" in proc.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--results={tmp}/missing.jsonl"], "does not exist"),
    (["--results={tmp}/empty.jsonl"], "has no finished runs"),
    (["--results={tmp}/garbled.jsonl"], "garbled.jsonl:1 is not a JSON object"),
    (["--results={tmp}/few.jsonl"], "cannot fit chinchilla: 3 points for the 5 parameters"),
])
def test_fit_cli_bad_results_get_one_line_errors(tmp_path, args, fragment):
    (tmp_path / "empty.jsonl").write_text(json.dumps({"name": "a", "status": "failed"}) + "\n")
    (tmp_path / "garbled.jsonl").write_text("{not json\n")
    few = synthetic_rows(sizes=[1e6, 1e7, 1e8], tokens=[1e9])
    few[1]["num_tokens"] = 2e9
    (tmp_path / "few.jsonl").write_text("".join(json.dumps(r) + "\n" for r in few))
    proc = run_command("fit", [f"--workdir={tmp_path}/out", *[a.format(tmp=tmp_path) for a in args]])
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / "out" / "fit.json")


def test_degenerate_bootstrap_refits_give_nan_or_inf_not_exceptions():
    # Refits of a few noisy points can land on exponents of ~30 or coefficients at 0; planning must
    # return values the percentile intervals can ignore instead of raising mid-bootstrap.
    wild = {"E": 1e-98, "A": 9e127, "B": 35.0, "alpha": 29.4, "beta": 0.2}
    assert planning.chinchilla_loss(wild, 1e-20, 1e6) == float("inf")
    n, d = planning.compute_optimal({**wild, "alpha": 0.0}, 1e12)
    assert not (np.isfinite(n) and np.isfinite(d))
    n, d = planning.compute_optimal(wild, 1e12, lambda m: 6 * m)
    assert np.isnan(n) or n > 0
    # nor the compute to reach a loss: an exponent at 0 or a loss the optimum never crosses
    assert not np.isfinite(planning.target_loss({**wild, "alpha": 0.0}, 2.0)[0])
    assert np.isnan(planning.target_loss({**wild, "alpha": -0.5}, 2.0, lambda m: 6 * m)[2])


def test_plan_from_a_law_that_does_not_fall_is_undetermined_not_nan():
    p = {"E": 1.0, "A": 2.0, "B": 100.0, "alpha": -0.01, "beta": 0.3}
    n, d = planning.compute_optimal(p, 1e15)
    plan = analysis._plan(laws.LAWS["chinchilla"], p, {"flops": 1e15}, {"num_params": n, "num_tokens": d}, {})
    assert plan == {"flops": 1e15, "num_params": None, "num_tokens": None,
                    "undetermined": "the fitted A = 2, alpha = -0.01: loss does not fall with the model size"}
    fine = {**p, "alpha": 0.3}
    assert analysis.no_plan(laws.LAWS["chinchilla"], fine, {"num_params": 1e6, "num_tokens": float("inf")}) == (
        "the fitted law gives no finite, positive num_tokens")


def test_extrapolation_is_skipped_when_the_rest_cannot_determine_the_law():
    rows = synthetic_rows(noise=0.0, sizes=[1e6, 1e9], tokens=np.geomspace(1e8, 1e11, 8))
    ex = analysis.extrapolation(rows, laws.LAWS["chinchilla"], inits=_coarse_grid(2))
    assert ex == {"skipped": "without the largest runs, cannot fit chinchilla: all 8 runs have num_params 1e6; "
                             "vary the model size"}
