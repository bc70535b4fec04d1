"""The plan checked: the chosen size and its neighbouring candidates trained at the same compute.

If the law's N_opt is right, the chosen size should reach the lowest held-out loss of the three
at budget C. Each model's loss is measured on the same held-out windows, so the comparison is
paired: the evaluation noise of a difference is the standard error of the per-window
difference, estimated from the means of contiguous blocks (parts of different files). Seed to
seed variation of training is not measured, so a win here is a win within evaluation noise.
"""
import math

import numpy as np
from scipy import stats

BLOCKS = 8  # contiguous eighths of the held-out windows
LEVEL = 0.95  # differences inside the two-sided t interval (BLOCKS - 1 degrees of freedom) are ties


def neighbours(candidates, costs, label):
    """(candidate just below `label` in N, just above), either None at the end of the list."""
    order = sorted((costs[c][0], c) for c, _ in candidates)
    labels = [c for _, c in order]
    i = labels.index(label)
    return (labels[i - 1] if i > 0 else None), (labels[i + 1] if i + 1 < len(labels) else None)


def steps_at(budget, flops_per_example, batch_size):
    """Updates that spend `budget` FLOPs: C / (FLOPs per example) examples, in global batches."""
    return max(1, round(budget / flops_per_example / batch_size))


def block_se(values, blocks=BLOCKS):
    """Standard error of the mean of `values` from the spread of `blocks` contiguous block means."""
    means = [float(np.mean(p)) for p in np.array_split(np.asarray(values, np.float64), blocks) if len(p)]
    return float(np.std(means, ddof=1) / math.sqrt(len(means))) if len(means) > 1 else float("nan")


def compare(models, chosen):
    """models: [{"size", "role", "losses" (per window), ...}] -> the rows and the verdict.

    Each row gets `heldout_loss`, `se` (its own evaluation noise) and, beside the chosen one,
    `diff_vs_chosen` and `diff_se` (paired). The chosen size wins if every neighbour is worse
    by more than the 95 % t interval of the difference, loses if one is better by more, and
    ties otherwise.
    """
    t = float(stats.t.ppf(0.5 + LEVEL / 2, BLOCKS - 1))
    base = np.asarray(next(m for m in models if m["size"] == chosen)["losses"])
    rows, outcomes = [], []
    for m in models:
        losses = np.asarray(m["losses"])
        row = {k: v for k, v in m.items() if k != "losses"}
        row.update(heldout_loss=float(losses.mean()), se=block_se(losses), windows=int(len(losses)))
        if m["size"] != chosen:
            diff = losses - base
            row.update(diff_vs_chosen=float(diff.mean()), diff_se=block_se(diff))
            margin = t * row["diff_se"]
            outcomes.append((m["size"], "worse" if row["diff_vs_chosen"] > margin else
                             "better" if row["diff_vs_chosen"] < -margin else "tie"))
        rows.append(row)
    if not outcomes:
        verdict = "unchecked"
    elif any(o == "better" for _, o in outcomes):
        verdict = "loses"
    else:
        verdict = "wins" if all(o == "worse" for _, o in outcomes) else "ties"
    return {"models": sorted(rows, key=lambda r: r["num_params"]), "verdict": verdict,
            "outcomes": dict(outcomes), "sentence": _sentence(chosen, verdict, rows, outcomes),
            "noise": {"method": f"paired per-window differences, standard error from {BLOCKS} contiguous "
                                f"blocks of the held-out windows; ties inside the {100 * LEVEL:g} % t interval "
                                f"(± {t:.2f} SE); evaluation noise only, not seed to seed"}}


def _sentence(chosen, verdict, rows, outcomes):
    if verdict == "unchecked":
        return f"`{chosen}` has no neighbouring candidate to compare with."
    by = {r["size"]: r for r in rows}
    parts = ", ".join(f"`{s}` {by[s]['diff_vs_chosen']:+.4f} ± {by[s]['diff_se']:.4f} ({o})" for s, o in outcomes)
    head = {"wins": "wins", "ties": "ties within evaluation noise", "loses": "loses"}[verdict]
    return f"`{chosen}` {head} at the same compute: neighbours' loss minus its own {parts}."


def markdown(check):
    """The plan-check table: the three sizes at C with the law's prediction beside each loss."""
    lines = [f"## Plan check at C = {check['flops']:.3g} FLOPs", "",
             "| size | role | N | updates | D (tokens) | C (FLOPs) | eval loss | ± SE | predicted | vs chosen |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in check["models"]:
        diff = f"{r['diff_vs_chosen']:+.4f} ± {r['diff_se']:.4f}" if "diff_vs_chosen" in r else "–"
        lines.append(f"| {r['size']} | {r['role']} | {r['num_params']:,} | {r['steps']} | {r['num_tokens']:.3g} | "
                     f"{r['flops']:.3g} | {r['heldout_loss']:.4f} | {r['se']:.4f} | {r['predicted_loss']:.4f} | "
                     f"{diff} |")
    return lines + ["", check["sentence"], f"Noise: {check['noise']['method']}."]
