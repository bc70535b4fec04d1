"""Fitting a scaling law the way Hoffmann et al. (2022, Approach 3) do, with honest uncertainty.

The objective is the Huber loss (delta 1e-3) between the law's log L and the observed log L,
*summed* over points (Besiroglu et al. 2024 showed that averaging it, with L-BFGS's default
tolerances, stops the optimiser early and biases the fit). It is minimised with scipy's L-BFGS
from every point of the law's grid of initialisations, and the best optimum is kept. The law
gives log L and its gradient vectorised over points (NumPy), so a 245-point fit from Chinchilla's
full 4,500-point grid takes seconds. Bootstrap refits (resampling points) give intervals for
every parameter and for anything derived from them.
"""
import re

from absl import logging
import numpy as np
from scipy import optimize
from threadpoolctl import threadpool_limits

from tfscale.errors import ConfigError
from tfscale.scaling import laws as laws_lib
from tfscale.scaling import power_laws

HUBER_DELTA = 1e-3


def objective(theta, x, y, law, delta=HUBER_DELTA, weights=None):
    """Summed Huber loss of log L and its gradient, for one parameter vector `theta` of `law`.

    `weights` (one per point) lets a bootstrap resample be a weighted fit of the unique points.
    """
    log_l, grad = law.log_predict_grad(theta, x)
    r = log_l - y
    abs_r = np.abs(r)
    h = np.where(abs_r <= delta, 0.5 * r * r, delta * (abs_r - 0.5 * delta))
    dr = np.clip(r, -delta, delta)  # d huber / d r
    if weights is not None:
        h, dr = h * weights, dr * weights
    return float(h.sum()), grad(dr)


def grid(k):
    """Hoffmann et al.'s initialisations for a sum of k power laws (`power_laws.grid`)."""
    return power_laws.grid(k)


def _minimize(theta0, x, y, law, weights=None):
    result = optimize.minimize(objective, theta0, args=(x, y, law, HUBER_DELTA, weights), jac=True,
                               method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-12, "ftol": 1e-15})
    return result.fun, result.x


def minimize(x, y, law, inits, weights=None):
    """Best L-BFGS optimum over initialisations `inits` [m, len(theta)] -> (objective, theta, optima).

    `optima` is every (objective, theta) pair, best first: bootstrap refits start from the best few.
    """
    optima = sorted((_minimize(t, x, y, law, weights) for t in inits), key=lambda o: o[0])
    return optima[0][0], optima[0][1], optima


def _distinct(optima, count):
    kept = []
    for value, theta in optima:
        if all(np.max(np.abs(theta - t)) > 1e-3 for _, t in kept):
            kept.append((value, theta))
        if len(kept) == count:
            break
    return np.array([t for _, t in kept])


def goodness(law, params, rows):
    """R^2 and RMSE of the loss itself (not its log), and the largest relative error."""
    observed = np.array([float(r["loss"]) for r in rows])
    predicted = law.predict(params, rows)
    residual = observed - predicted
    total = np.sum((observed - observed.mean()) ** 2)
    return {
        "r2": float(1 - np.sum(residual ** 2) / total) if total > 0 else float("nan"),
        "rmse": float(np.sqrt(np.mean(residual ** 2))),
        "max_rel_error": float(np.max(np.abs(residual) / observed)),
    }


VARY = {"num_params": "the model size", "num_tokens": "the data", "flops": "the compute"}


def undetermined(rows, law):
    """Why the data cannot determine `law` (one line with the numbers), or None.

    A column that never varies leaves its coefficient and exponent free, equal losses leave every
    exponent free, and fewer points than parameters leave some free: any optimum is arbitrary.
    """
    n, k = len(rows), len(law.param_names)
    values = {c: {float(r[c]) for r in rows} for c in law.columns}
    fixed = [c for c in law.columns if len(values[c]) == 1]
    if fixed:
        shared = " and ".join(f"{c} {_short(next(iter(values[c])))}" for c in fixed)
        return f"cannot fit {law.name}: all {n} runs have {shared}; vary {' and '.join(VARY[c] for c in fixed)}"
    if n < k:
        return f"cannot fit {law.name}: {n} points for the {k} parameters of {law.formula}; it needs {k} or more"
    losses = {float(r["loss"]) for r in rows}
    if len(losses) == 1:
        return f"cannot fit {law.name}: all {n} runs have loss {_short(losses.pop())}, so no exponent is determined"
    return None


def _short(value):
    """1.2e4, not 1.2e+04."""
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{value:.3g}")


def fit_law(rows, law=None, inits=None, bootstrap=0, seed=0, derived=None, restarts=4):
    """Fits `law` (a `Law` or a name; default: `laws.choose(rows)`) to result rows.

    rows: dicts with `loss` and the law's columns. bootstrap: number of resampled refits; each
    starts from the `restarts` best distinct optima of the full fit. derived: optional function
    params -> {name: float or list} whose bootstrap intervals are reported too.
    Returns {"law", "formula", "params", "objective", "n_points", "r2", "rmse", "ci", "samples"}.

    BLAS runs on one thread: the arrays are a few hundred points, too small to share out, and
    OpenBLAS threads that spin for busy cores made a fit 3x slower on a loaded machine.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(rows, law, inits, bootstrap, seed, derived, restarts)


def _fit(rows, law, inits, bootstrap, seed, derived, restarts):
    law = laws_lib.LAWS[law] if isinstance(law, str) else (law or laws_lib.choose(rows))
    reason = undetermined(rows, law)
    if reason:
        raise ConfigError(reason)
    x, y = law.features(rows), np.log([float(r["loss"]) for r in rows])
    inits = law.grid() if inits is None else np.atleast_2d(inits)
    value, theta, optima = minimize(x, y, law, inits)
    params = law.to_params(theta)
    out = {"law": law.name, "formula": law.formula, "params": params, "objective": value,
           "n_points": len(rows), **goodness(law, params, rows)}
    if bootstrap:
        starts = _distinct(optima, restarts)
        rng = np.random.default_rng(seed)
        samples = []
        for i in range(bootstrap):
            weights = np.bincount(rng.integers(0, len(rows), len(rows)), minlength=len(rows)).astype(np.float64)
            _, t, _ = minimize(x, y, law, starts, weights)
            p = law.to_params(t)
            samples.append({**p, **(derived(p) if derived else {})})
            if (i + 1) % max(1, bootstrap // 5) == 0:
                logging.info("bootstrap %d/%d", i + 1, bootstrap)
        out["samples"] = samples
        out["ci"] = intervals(samples)
    return out


def intervals(samples, level=0.95):
    """Percentile intervals of every numeric (scalar or list) entry of the bootstrap samples."""
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    ci = {}
    for key, first in samples[0].items():
        if not isinstance(first, (int, float, list)):
            continue
        values = np.array([s[key] for s in samples], np.float64)
        values[~np.isfinite(values)] = np.nan
        ci[key] = np.stack([np.nanpercentile(values, lo, axis=0),
                            np.nanpercentile(values, hi, axis=0)], -1).tolist()
    return ci
