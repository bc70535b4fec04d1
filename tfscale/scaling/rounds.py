"""Planning that stays inside its data: the sweep grows until N_opt lies within its sizes.

A law fitted on sizes N_1..N_k says little about N_opt beyond them (the fitted alpha is the
least determined parameter at these scales). When the plan falls outside, the candidate size
nearest the edge on that side joins the sweep, trained on the sweep's budgets, and the law is
refitted and the plan made again, for at most `max_added` added sizes.
"""
from absl import logging

from tfscale.errors import ConfigError
from tfscale.scaling import planning


def plan_in_range(sizes, costs, sweep_fn, fit_fn, candidates_fn, max_added=3):
    """Sweeps, fits and plans until the plan lies inside the swept sizes (or no size is left).

    sizes: the sweep's [(label, overrides)]; costs: {label: (N, ...)} of every size and candidate;
    sweep_fn(sizes) -> usable result rows (runs only what is missing); fit_fn(rows) -> an
    `analysis.analyze` result planned for one budget; candidates_fn(rows) -> [(label, overrides)]
    the sweep may add (with their learning rates).
    Returns {"rows", "result", "plan", "sizes", "rounds", "swept_range"}; the plan carries
    `in_swept_range`, `swept_range` and `range_note`. An undeterminable plan is a ConfigError.
    """
    sizes, rounds = list(sizes), []
    while True:
        rows = sweep_fn(sizes)
        result = fit_fn(rows)
        plan = result["compute_optimal"][0]
        if plan.get("num_params") is None:
            raise ConfigError(plan.get("undetermined") or "the fitted law gives no compute-optimal size")
        present = {r.get("size") for r in rows}
        swept = [label for label, _ in sizes if label in present] or [label for label, _ in sizes]
        check = planning.range_check(plan["num_params"], [costs[label][0] for label in swept])
        entry = {"round": len(rounds), "sizes": swept, "runs": len(rows), "num_params_opt": plan["num_params"],
                 "in_swept_range": check["in_swept_range"], "note": check["sentence"]}
        rounds.append(entry)
        plan.update(in_swept_range=check["in_swept_range"], swept_range=check["swept_range"],
                    range_note=check["sentence"])
        if check["in_swept_range"]:
            entry["action"] = "the plan stands"
            break
        candidates = dict(candidates_fn(rows))
        taken = {label for label, _ in sizes}
        added = planning.next_beyond(check["side"], {k: costs[k][0] for k in candidates if k not in taken},
                                     [costs[label][0] for label in swept])
        edge = "largest" if check["side"] == "above" else "smallest"
        if added is None:
            entry["action"] = f"no candidate size lies {check['side']} them: the final size is the {edge} swept size"
        elif len(rounds) > max_added:
            entry["action"] = f"stopped after {max_added} added sizes: the final size is the {edge} swept size"
        else:
            sizes.append((added, candidates[added]))
            entry["action"] = f"added {added} (N = {costs[added][0]:,}) to the sweep and refitted"
        logging.info("plan round %d: %s; %s", entry["round"], check["sentence"], entry["action"])
        if added is None or len(rounds) > max_added:
            break
    result["planning_rounds"] = rounds
    return {"rows": rows, "result": result, "plan": plan, "sizes": sizes, "rounds": rounds,
            "swept_range": check["swept_range"]}


def markdown(rounds):
    """One line per round: where N_opt fell and what the job did about it."""
    return [f"- round {r['round']} ({r['runs']} runs, sizes {', '.join(r['sizes'])}): {r['note']} "
            f"{r['action'][0].upper()}{r['action'][1:]}." for r in rounds]
