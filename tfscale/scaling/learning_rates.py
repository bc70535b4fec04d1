"""Peak learning rate per model size: the searched sizes' rates, a power law through them for the rest.

Only the swept sizes had their rate searched; a candidate size the job trains without a search
(a size added beyond the sweep, a plan-check neighbour, the final model) takes
lr(N) = exp(b) N^a, a least-squares line through (log N, log lr) of the searched sizes.
"""
import math

import numpy as np

from tfscale.errors import ConfigError

KEY = "optimizer.learning_rate"


def fit(pairs):
    """(exponent a, coefficient exp(b)) of lr = exp(b) N^a through [(N, lr), ...]."""
    pairs = [(float(n), float(lr)) for n, lr in pairs]
    if not pairs or any(not (n > 0 and lr > 0) for n, lr in pairs):
        raise ConfigError(f"learning-rate interpolation needs positive (N, lr) pairs, got {pairs}")
    if len({n for n, _ in pairs}) < 2:  # one size: the same rate everywhere
        return 0.0, float(np.exp(np.mean([math.log(lr) for _, lr in pairs])))
    a, b = np.polyfit(np.log([n for n, _ in pairs]), np.log([lr for _, lr in pairs]), 1)
    return float(a), float(math.exp(b))


def predict(law, n):
    exponent, coefficient = law
    return coefficient * float(n) ** exponent


def best_from_results(rows):
    """{size label: peak lr} from a sweep that searched `optimizer.learning_rate`.

    Of each (size, budget) group the lowest-loss run counts; a size's budgets that disagree are
    averaged in log space, so the rate is one number per size, as the interpolation needs.
    """
    best = {}
    for r in rows:
        if r.get("status", "ok") != "ok" or r.get("learning_rate") is None or not _finite(r.get("loss")):
            continue
        key = r.get("group") or (r.get("size"), r.get("num_tokens"), r.get("compute_budget"))
        if key not in best or float(r["loss"]) < float(best[key]["loss"]):
            best[key] = r
    per_size = {}
    for r in best.values():
        per_size.setdefault(r.get("size"), []).append(math.log(float(r["learning_rate"])))
    return {size: float(math.exp(np.mean(logs))) for size, logs in per_size.items()}


def searched(config):
    """Whether the sweep's search varies the learning rate."""
    from tfscale.scaling import sweep  # pylint: disable=import-outside-toplevel
    return KEY in sweep.parse_search(config.sweep.search)


def rate_of(overrides, default=None):
    return dict(overrides).get(KEY, default)


def with_rate(overrides, lr):
    """`overrides` with the learning rate set to `lr` (replacing one that is there)."""
    return (*((k, v) for k, v in overrides if k != KEY), (KEY, float(lr)))


def assign(candidates, rates, costs, source="sweep"):
    """Every candidate (label, overrides) with its peak learning rate, and the table behind it.

    rates: {label: lr} of the swept sizes (their config entries, or a search's best), which the
    power law goes through. Other candidates keep a rate their entry sets, else take the law.
    Returns (candidates with rates, {"exponent", "coefficient", "sizes": [{size, num_params,
    learning_rate, source}]}).
    """
    law = fit([(costs[label][0], lr) for label, lr in rates.items()])
    out, table = [], []
    for label, overrides in candidates:
        if label in rates:
            lr, from_ = rates[label], source
        elif rate_of(overrides) is not None:
            lr, from_ = rate_of(overrides), "config"
        else:
            lr, from_ = predict(law, costs[label][0]), "interpolated"
        out.append((label, with_rate(overrides, lr)))
        table.append({"size": label, "num_params": costs[label][0], "learning_rate": float(lr), "source": from_})
    table.sort(key=lambda t: t["num_params"])
    return out, {"exponent": law[0], "coefficient": law[1], "sizes": table}


def markdown(info):
    lines = [f"Peak learning rate against N: lr = {info['coefficient']:.3g} · N^{info['exponent']:.3f} "
             "(least squares in log-log through the swept sizes).", "",
             "| size | N | peak lr | from |", "|---|---|---|---|"]
    lines += [f"| {t['size']} | {t['num_params']:,} | {t['learning_rate']:.3g} | {t['source']} |"
              for t in info["sizes"]]
    return lines


def _finite(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
