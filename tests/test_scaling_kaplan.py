"""The Kaplan-form law: its exponents are recovered from noisy points, and it plans and reports
through the same code as every law."""
import json

import numpy as np
import pytest

from tfscale.scaling import analysis, fitting, laws, report

TRUE = {"N_c": 8.8e13, "D_c": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095}  # Kaplan et al. (2020), eq. 1.5
LAW = laws.LAWS["kaplan"]


def kaplan_rows(noise=0.02, seed=0):
    """Points on TRUE over 3 decades of N and D, with multiplicative noise of `noise`."""
    rng = np.random.default_rng(seed)
    return [{"name": f"n{n:.3g}_d{d:.3g}", "num_params": n, "num_tokens": d, "flops": 6 * n * d,
             "loss": LAW.loss(TRUE, n, d) * (1 + noise * rng.standard_normal())}
            for n in np.geomspace(1e6, 1e9, 8) for d in np.geomspace(1e8, 1e11, 8)]


def test_fit_recovers_the_exponents_with_2pct_noise():
    out = fitting.fit_law(kaplan_rows(), "kaplan")  # the law's own grid of initialisations
    assert abs(out["params"]["alpha_N"] - TRUE["alpha_N"]) < 0.01, out["params"]
    assert abs(out["params"]["alpha_D"] - TRUE["alpha_D"]) < 0.01, out["params"]
    assert out["r2"] > 0.95


def test_allocation_is_the_isoflop_minimum_and_target_inverts_it():
    c = 1e21
    n, d = LAW.allocation(TRUE, c)
    assert 6 * n * d == pytest.approx(c, rel=1e-9)
    grid_n = np.geomspace(n / 10, n * 10, 20001)
    losses = [LAW.loss(TRUE, m, c / (6 * m)) for m in grid_n]
    assert grid_n[int(np.argmin(losses))] == pytest.approx(n, rel=1e-3)
    assert LAW.allocation(TRUE, c, lambda m: 6 * m) == pytest.approx((n, d), rel=1e-6)
    target = LAW.target(TRUE, LAW.optimal_loss(TRUE, c))
    assert target["flops"] == pytest.approx(c, rel=1e-6) and target["num_params"] == pytest.approx(n, rel=1e-5)
    assert LAW.target(TRUE, 0.0) is None  # no loss at or below 0


def test_analysis_plans_and_reports_a_kaplan_fit(tmp_path):
    rows = kaplan_rows(noise=0.0)
    result = analysis.analyze(rows, law="kaplan", budgets=[1e21], target_loss=2.0, bootstrap=0,
                              grid_stride=7, check_extrapolation=False)
    plan = result["compute_optimal"][0]
    assert plan["num_params"] == pytest.approx(LAW.allocation(TRUE, 1e21)[0], rel=1e-3)
    assert result["target"]["flops"] > 0
    report.write(str(tmp_path), result, rows)
    assert json.loads((tmp_path / "fit.json").read_text())["law"] == "kaplan"
    assert (tmp_path / "scaling.png").stat().st_size > 10_000 and "| alpha_N |" in (tmp_path / "report.md").read_text()
