"""From sweep results to fit.json: the fit, its intervals, an extrapolation check and a plan.

`analyze` is what `experiments.fit` and the scaling main job call; it returns the JSON-ready
dict that `report.write` turns into fit.json, scaling.png and report.md.
"""
import math

from absl import logging
import numpy as np

from tfscale.errors import ConfigError
from tfscale.scaling import fitting
from tfscale.scaling import laws as laws_lib
from tfscale.scaling import planning
from tfscale.scaling import results as results_lib


def default_budgets(rows, count=5):
    """Compute budgets to plan for: from the sweep's largest run up to 100x beyond it."""
    top = max(float(r["flops"]) for r in rows)
    return [float(c) for c in np.geomspace(top, top * 100, count)]


def holdout_split(rows):
    """The largest runs (every run of the largest model when sizes vary, else the largest
    compute) are held out; the rest are fitted."""
    if len({float(r["num_params"]) for r in rows}) > 1:
        key, top = "num_params", max(float(r["num_params"]) for r in rows)
    else:
        key, top = "flops", max(float(r["flops"]) for r in rows)
    held = [r for r in rows if float(r[key]) == top]
    return [r for r in rows if float(r[key]) != top], held


def extrapolation(rows, law, inits=None):
    """Fits without the largest runs and predicts them: the test a scaling law exists for."""
    train, held = holdout_split(rows)
    if len(train) <= len(law.param_names):
        return {"skipped": f"{len(train)} points left after holding out the largest runs"}
    reason = fitting.undetermined(train, law)
    if reason:
        return {"skipped": f"without the largest runs, {reason}"}
    result = fitting.fit_law(train, law, inits=inits)
    predicted = law.predict(result["params"], held)
    observed = np.array([float(r["loss"]) for r in held])
    errors = (predicted - observed) / observed
    return {
        "held_out": [{"name": r.get("name", ""), "num_params": float(r["num_params"]),
                      "num_tokens": float(r["num_tokens"]), "loss": float(o), "predicted": float(p),
                      "rel_error": float(e)} for r, o, p, e in zip(held, observed, predicted, errors)],
        "max_abs_rel_error": float(np.max(np.abs(errors))),
        "params": result["params"],
        "n_fitted": len(train),
    }


def analyze(rows, law=None, budgets=None, target_loss=None, bootstrap=200, flops="6nd", seed=0,
            inits=None, check_extrapolation=True, grid_stride=1, params="total"):
    """Everything fit.json holds. flops: `6nd` (C = 6ND) or `model` (the rows' own FLOP counts).

    params: how N and C are counted, `total` (everything) or `non_embedding` (Kaplan's), see
    `results.in_convention`; fit.json's `params_convention` says which the fit used.
    inits: L-BFGS starting points (default: every `grid_stride`-th point of `law.grid()`).
    """
    rows, convention = results_lib.in_convention(rows, params)
    auto = law is None
    law = laws_lib.LAWS[law] if isinstance(law, str) else (law or laws_lib.choose(rows))
    reason = fitting.undetermined(rows, law)
    if reason and auto and not any(laws_lib.varying(rows).values()):  # neither N nor D varies: say that
        reason = fitting.undetermined(rows, laws_lib.LAWS[laws_lib.DEFAULT])
    if reason:
        raise ConfigError(reason)
    if inits is None:
        inits = law.grid()[::grid_stride]
    allocating = law.allocates
    budgets = list(budgets or (default_budgets(rows) if allocating else []))
    per_token = planning.flops_per_token_fn(rows) if flops == "model" else None

    def derived(p):
        out = {}
        if allocating and budgets:
            plans = [law.allocation(p, c, per_token) for c in budgets]
            out["num_params_opt"] = [n for n, _ in plans]
            out["num_tokens_opt"] = [d for _, d in plans]
        if target_loss is not None:
            out["target"] = law.target(p, target_loss, per_token)
        return out

    logging.info("fitting %s to %d points (%d bootstrap refits)", law.formula, len(rows), bootstrap)
    result = fitting.fit_law(rows, law, inits=inits, bootstrap=bootstrap, seed=seed, derived=derived)
    best = derived(result["params"])
    ci = result.get("ci", {})
    out = {
        "law": law.name, "formula": law.formula, "params": result["params"],
        "ci": {k: v for k, v in ci.items() if k in law.param_names},
        "r2": result["r2"], "rmse": result["rmse"], "max_rel_error": result["max_rel_error"],
        "n_points": result["n_points"], "objective": result["objective"], "bootstrap": bootstrap,
        "flops_model": flops, "initialisations": len(inits), "params_convention": convention,
    }
    if convention != params:
        out["params_note"] = f"asked for {params} counts; the results hold non-embedding counts only"
    if check_extrapolation:
        out["extrapolation"] = extrapolation(rows, law, inits)
    if allocating:
        p = result["params"]
        out["compute_optimal"] = [
            _plan(law, p, {"flops": c},
                  {"num_params": n, "num_tokens": d, "loss": law.optimal_loss(p, c, per_token)},
                  {"num_params_ci": ci["num_params_opt"][i], "num_tokens_ci": ci["num_tokens_opt"][i]}
                  if "num_params_opt" in ci else {})
            for i, (c, n, d) in enumerate(zip(budgets, best["num_params_opt"], best["num_tokens_opt"]))]
        iso = planning.isoflop_minima(rows)
        if iso["minima"]:
            out["isoflop"] = iso
    if target_loss is not None:
        if best["target"] is None:
            out["target"] = {"loss": target_loss, "reachable": False}
        else:
            extra = {"ci": _target_ci(result["samples"], best["target"])} if "samples" in result else {}
            out["target"] = _plan(law, result["params"], {"loss": target_loss}, best["target"], extra)
    if "samples" in result:
        out["samples"] = [{k: s[k] for k in law.param_names} for s in result["samples"]]
    return out


def _plan(law, params, head, values, extra):
    """`head` + `values` (+ `extra`, intervals): a recommendation only when the fitted law falls
    along every variable and gives finite, positive figures; else the figures are None and
    `undetermined` says why (fit.json and report.md never show NaN as a plan)."""
    reason = no_plan(law, params, values)
    if reason:
        return {**head, **{k: None for k in values}, "undetermined": reason}
    return {**head, **values, **extra}


def no_plan(law, params, values):
    """Why `values` planned from `params` are no recommendation (one line), or None."""
    for coefficient, exponent, column in zip(law.coefficients, law.exponents, law.columns):
        if not (params[coefficient] > 0 and params[exponent] > 0):
            return (f"the fitted {coefficient} = {params[coefficient]:.3g}, {exponent} = {params[exponent]:.3g}: "
                    f"loss does not fall with {fitting.VARY[column]}")
    bad = [k for k, v in values.items() if not (v is not None and math.isfinite(v) and v > 0)]
    return f"the fitted law gives no finite, positive {' or '.join(bad)}" if bad else None


def _target_ci(samples, best):
    """Intervals of the target's figures over the bootstrap refits that can reach it at all."""
    reached = [s["target"] for s in samples
               if s.get("target") and all(math.isfinite(v) and v > 0 for v in s["target"].values())]
    out = {"reachable_fraction": len(reached) / len(samples)}
    for key in best:
        values = [t[key] for t in reached]
        if values:
            out[key] = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
    return out
