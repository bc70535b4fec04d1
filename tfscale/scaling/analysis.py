"""From sweep results to fit.json: the fit, its intervals, an extrapolation check and a plan.

`analyze` is what `experiments.fit` and the scaling main job call; it returns the JSON-ready
dict that `report.write` turns into fit.json, scaling.png and report.md.
"""
from absl import logging
import numpy as np

from tfscale.scaling import fit as fit_lib
from tfscale.scaling import laws as laws_lib
from tfscale.scaling import planning


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
    result = fit_lib.fit(train, law, inits=inits)
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
            inits=None, check_extrapolation=True, grid_stride=1):
    """Everything fit.json holds. flops: `6nd` (C = 6ND) or `model` (the rows' own FLOP counts).

    inits: L-BFGS starting points (default: every `grid_stride`-th point of `fit.grid`).
    """
    law = laws_lib.LAWS[law] if isinstance(law, str) else (law or laws_lib.choose(rows))
    if inits is None:
        inits = fit_lib.grid(law.num_terms)[::grid_stride]
    allocating = law.name == "chinchilla"
    budgets = list(budgets or (default_budgets(rows) if allocating else []))
    per_token = planning.flops_per_token_fn(rows) if flops == "model" else None

    def derived(p):
        out = {}
        if allocating and budgets:
            plans = [planning.compute_optimal(p, c, per_token) for c in budgets]
            out["num_params_opt"] = [n for n, _ in plans]
            out["num_tokens_opt"] = [d for _, d in plans]
        if target_loss is not None:
            out["target"] = _target(law, p, target_loss, per_token)
        return out

    logging.info("fitting %s to %d points (%d bootstrap refits)", law.formula, len(rows), bootstrap)
    result = fit_lib.fit(rows, law, inits=inits, bootstrap=bootstrap, seed=seed, derived=derived)
    best = derived(result["params"])
    ci = result.get("ci", {})
    out = {
        "law": law.name, "formula": law.formula, "params": result["params"],
        "ci": {k: v for k, v in ci.items() if k in law.param_names},
        "r2": result["r2"], "rmse": result["rmse"], "max_rel_error": result["max_rel_error"],
        "n_points": result["n_points"], "objective": result["objective"], "bootstrap": bootstrap,
        "flops_model": flops, "initialisations": len(inits),
    }
    if check_extrapolation:
        out["extrapolation"] = extrapolation(rows, law, inits)
    if allocating:
        out["compute_optimal"] = [
            {"flops": c, "num_params": n, "num_tokens": d,
             "loss": planning.optimal_loss(result["params"], c, per_token),
             **({"num_params_ci": ci["num_params_opt"][i], "num_tokens_ci": ci["num_tokens_opt"][i]}
                if "num_params_opt" in ci else {})}
            for i, (c, n, d) in enumerate(zip(budgets, best["num_params_opt"], best["num_tokens_opt"]))]
        iso = planning.isoflop_minima(rows)
        if iso["minima"]:
            out["isoflop"] = iso
    if target_loss is not None:
        out["target"] = {"loss": target_loss, **(best["target"] or {"reachable": False})}
        if best["target"] and "samples" in result:
            out["target"]["ci"] = _target_ci(result["samples"], best["target"])
    if "samples" in result:
        out["samples"] = [{k: s[k] for k in law.param_names} for s in result["samples"]]
    return out


def _target(law, p, loss, per_token):
    """Smallest compute predicted to reach `loss` (dict), or None if the law never gets there."""
    if law.name == "chinchilla":
        found = planning.target_loss(p, loss, per_token)
        return None if found is None else dict(zip(("num_params", "num_tokens", "flops"), found))
    if loss <= p["E"]:
        return None
    column = law.columns[0]
    return {column: (p[law.coefficients[0]] / (loss - p["E"])) ** (1 / p[law.exponents[0]])}


def _target_ci(samples, best):
    """Intervals of the target's figures over the bootstrap refits that can reach it at all."""
    reached = [s["target"] for s in samples if s.get("target")]
    out = {"reachable_fraction": len(reached) / len(samples)}
    for key in best:
        values = [t[key] for t in reached]
        if values:
            out[key] = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
    return out
