"""What a fitted law says to do: the models' FLOPs per token, isoFLOP minima, the plan against
the swept sizes; and, for parameter dicts of the Chinchilla law, its allocation and loss.

The allocation itself belongs to each law (`Law.allocation`). Small models spend a large share
of their FLOPs outside the 6N weight matmuls (attention, embeddings), so the model's own FLOP
count per token can be used instead of 6N: it is fitted from the sweep's rows as a power law in N.
"""
import math

import numpy as np

from tfscale.scaling import laws

_CHINCHILLA = laws.LAWS["chinchilla"]


def flops_per_token_fn(rows=None):
    """A function N -> training FLOPs per token: 6N, or a power law fitted to the rows' own counts."""
    if rows is None:
        return lambda n: 6.0 * n
    n = np.array([float(r["num_params"]) for r in rows])
    per_token = np.array([float(r["flops"]) / float(r["num_tokens"]) for r in rows])
    if len(set(n)) < 2:
        ratio = float(np.median(per_token / n))
        return lambda m: ratio * m
    slope, intercept = np.polyfit(np.log(n), np.log(per_token), 1)
    return lambda m: math.exp(intercept) * m ** slope


def chinchilla_loss(p, n, d):
    """L(N, D) of the Chinchilla law `p` (inf, not an exception, for a degenerate bootstrap refit)."""
    return _CHINCHILLA.loss(p, n, d)


def compute_optimal(params, flops, per_token=None):
    """(N_opt, D_opt) for budget `flops` under the Chinchilla law `params` (`Law.allocation`)."""
    return _CHINCHILLA.allocation(params, flops, per_token)


def optimal_loss(params, flops, per_token=None):
    return _CHINCHILLA.optimal_loss(params, flops, per_token)


def target_loss(params, loss, per_token=None):
    """The smallest-compute (N, D, C) predicted to reach `loss`; None when loss <= E."""
    found = _CHINCHILLA.target(params, loss, per_token)
    return None if found is None else tuple(found[k] for k in ("num_params", "num_tokens", "flops"))


def isoflop_groups(rows, tolerance=0.3):
    """Rows grouped by compute budget: the `compute_budget` column if every row has one (isoFLOP
    sweeps write it), else flops within `tolerance` (relative) of the smallest in the group.
    Only groups with at least 3 model sizes are returned: fewer cannot show a minimum."""
    if all(r.get("compute_budget") for r in rows):
        keys = sorted({float(r["compute_budget"]) for r in rows})
        groups = [[r for r in rows if float(r["compute_budget"]) == k] for k in keys]
    else:
        groups = []
        for r in sorted(rows, key=lambda r: float(r["flops"])):
            if not groups or float(r["flops"]) > (1 + tolerance) * float(groups[-1][0]["flops"]):
                groups.append([])
            groups[-1].append(r)
    return [g for g in groups if len({float(r["num_params"]) for r in g}) >= 3]


def isoflop_minima(rows):
    """Approach 2: a parabola in log N through each isoFLOP profile; its vertex is N_opt(C).

    A minimum at the edge of a profile's sizes (or a profile that does not curve upwards) is
    flagged `at_edge`: the grid did not bracket the optimum, and it is left out of the power-law
    fit N_opt = k C^a.
    """
    minima = []
    for group in isoflop_groups(rows):
        n = np.array([float(r["num_params"]) for r in group])
        loss = np.array([float(r["loss"]) for r in group])
        c = float(np.median([float(r["flops"]) for r in group]))
        curve, slope, intercept = np.polyfit(np.log(n), loss, 2)
        vertex = -slope / (2 * curve) if curve > 0 else float("nan")
        at_edge = not (curve > 0 and np.log(n.min()) < vertex < np.log(n.max())) or loss.argmin() in (
            n.argmin(), n.argmax())
        n_opt = math.exp(vertex) if math.isfinite(vertex) else float(n[loss.argmin()])
        minima.append({"flops": c, "num_params": n_opt, "num_tokens": c / (6 * n_opt),
                       "loss": float(np.polyval([curve, slope, intercept], math.log(n_opt))), "at_edge": bool(at_edge),
                       "points": len(group)})
    inner = [m for m in minima if not m["at_edge"]]
    out = {"minima": minima}
    if len(inner) >= 2:
        a, log_k = np.polyfit(np.log([m["flops"] for m in inner]), np.log([m["num_params"] for m in inner]), 1)
        out["n_opt_exponent"], out["n_opt_coefficient"] = float(a), float(math.exp(log_k))
    return out


def range_check(n_opt, swept):
    """Where N_opt lies against the swept sizes' N: a law fitted on those sizes says little
    beyond them. Returns {"in_swept_range", "side" (None, "below", "above"), "swept_range", "sentence"}."""
    lo, hi = float(min(swept)), float(max(swept))
    side = "below" if n_opt < lo else "above" if n_opt > hi else None
    where = f"the swept sizes (N = {lo:.3g} – {hi:.3g})"
    sentence = (f"N_opt = {n_opt:.3g} lies inside {where}." if side is None else
                f"N_opt = {n_opt:.3g} lies {side} {where}: the plan extrapolates the law beyond its data.")
    return {"in_swept_range": side is None, "side": side, "swept_range": [lo, hi], "sentence": sentence}


def next_beyond(side, sizes, swept):
    """The label of `sizes` ({label: N}) nearest the range of `swept` (Ns) on `side`, or None."""
    lo, hi = min(swept), max(swept)
    if side == "above":
        outside = [(n, label) for label, n in sizes.items() if n > hi]
        return min(outside)[1] if outside else None
    outside = [(n, label) for label, n in sizes.items() if n < lo]
    return max(outside)[1] if outside else None
