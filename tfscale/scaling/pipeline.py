"""The main job: sweep -> fit -> plan -> train the compute-optimal size -> compress -> one table.

  DIR/sweep/results.jsonl, DIR/sweep/runs/NAME/   the sweep (`sweep.run_sweep`)
  DIR/fit/fit.json, scaling.png, report.md        the fit (`analysis.analyze`)
  DIR/final/                                      the recommended model: summary.json, export/,
                                                  compress/*.tflite, compression.json
  DIR/scaling.json, DIR/scaling.md                everything above in one place

Every stage resumes: finished sweep runs are skipped, the final run resumes from its
checkpoints, so re-running the command after an interruption finishes the job.
"""
import math
import time

from absl import logging

from tfscale import io
from tfscale.errors import ConfigError
from tfscale.scaling import analysis, laws, planning, report, results, sweep


def choose_size(config, num_params):
    """The candidate size whose parameter count is nearest `num_params` (in log space).

    Returns (label, overrides, its num_params, training FLOPs per example, tokens per example).
    """
    candidates = [sweep.parse_size(t, i) for i, t in enumerate(config.scaling.candidate_sizes)]
    if not candidates:
        raise ConfigError("scaling.candidate_sizes is empty")
    costs = sweep.size_costs(config, candidates)
    label, overrides = min(candidates, key=lambda c: abs(math.log(costs[c[0]][0] / num_params)))
    return (label, overrides, *costs[label])


def final_config(config, overrides, num_steps):
    """The recommended model's training config: the sweep's recipe at its own size and length,
    with gradient accumulation and an export."""
    c = sweep.apply_overrides(config, (
        *overrides, *sweep.length_overrides(config.sweep, num_steps),
        ("train.accum_steps", config.scaling.accum_steps), ("export.saved_model", True),
        ("checkpoint.every_steps", max(1, num_steps // 4))))
    return sweep.strip_sections(c)


def run(config, workdir):
    """Runs every stage into `workdir` and returns the scaling.json dict (see module doc)."""
    from tfscale import compress  # pylint: disable=import-outside-toplevel
    from tfscale import run as run_lib  # pylint: disable=import-outside-toplevel

    t0 = time.time()
    times = {}
    out = sweep.run_sweep(config, io.join(workdir, "sweep"))
    times["sweep"] = time.time() - t0
    rows = results.load(out["results"])
    if len(rows) < len(laws.LAWS["chinchilla"].param_names):
        raise ConfigError(f"only {len(rows)} sweep runs finished; see {out['results']}")

    t = time.time()
    budget = config.scaling.compute_budget or max(float(r["flops"]) for r in rows)
    result = analysis.analyze(rows, law="chinchilla", budgets=[budget], bootstrap=config.scaling.bootstrap,
                              flops=config.scaling.flops, seed=config.seed,
                              grid_stride=config.scaling.grid_stride)
    report.write(io.join(workdir, "fit"), result, rows)
    times["fit"] = time.time() - t
    plan = result["compute_optimal"][0]

    label, overrides, n, flops_per_example, tokens_per_example = choose_size(config, plan["num_params"])
    batch = config.train.batch_size
    steps = max(1, round(budget / flops_per_example / batch))
    logging.info("compute-optimal for C = %.3g: N = %.3g, D = %.3g; training %s (N = %d) for %d updates",
                 budget, plan["num_params"], plan["num_tokens"], label, n, steps)
    t = time.time()
    final = final_config(config, overrides, steps)
    final_dir = io.join(workdir, "final")
    summary = run_lib.train(final, final_dir)
    times["final_train"] = time.time() - t
    t = time.time()
    compression, table = compress.compress(final, final_dir)
    times["compress"] = time.time() - t
    predicted = float(planning.chinchilla_loss(result["params"], summary.get("non_embedding_params", n),
                                    summary.get("num_tokens", summary["examples_seen"])))
    job = {
        "sweep": {"runs": len(rows), "results": out["results"], "failed": out["failed"]},
        "fit": {k: result[k] for k in ("law", "params", "ci", "r2", "rmse", "n_points", "extrapolation")},
        "compute_optimal": plan,
        "final": {"size": label, "overrides": dict(overrides), "num_params": summary.get("non_embedding_params", n),
                  "num_tokens": summary.get("num_tokens"), "flops": summary["flops_per_example"] * summary["examples_seen"],
                  "steps": summary["steps"], "accum_steps": summary["accum_steps"], "eval_loss": summary["eval_loss"],
                  "predicted_loss": predicted, "bits_per_byte": summary.get("bits_per_byte"),
                  "saved_model": io.join(final_dir, "export", "saved_model")},
        "compression": [{k: v[k] for k in ("variant", "path", "size_bytes", "eval_loss", "accuracy", "latency_ms",
                                          "max_abs_diff_vs_keras")} for v in compression["variants"]],
        "seconds": {**times, "total": time.time() - t0},
    }
    io.write_json(io.join(workdir, "scaling.json"), job)
    text = markdown(job, rows, table)
    io.write_bytes(io.join(workdir, "scaling.md"), text.encode())
    return job, text


def markdown(job, rows, compression_table):
    """The final table of the main job (also printed by `experiments.scaling`)."""
    f = job["fit"]
    p, ci = f["params"], f["ci"]
    ex = f.get("extrapolation", {})
    plan, final = job["compute_optimal"], job["final"]
    lines = ["# Scaling sweep, fit and compute-optimal model", "",
             "| run | N (non-embedding) | D (tokens) | C (FLOPs) | eval loss |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (float(r["num_params"]), float(r["num_tokens"]))):
        lines.append(f"| {r.get('name', '')} | {float(r['num_params']):,.0f} | {float(r['num_tokens']):.3g} | "
                     f"{float(r['flops']):.3g} | {float(r['loss']):.4f} |")
    lines += ["", f"Fit {laws.LAWS[f['law']].formula} on {f['n_points']} runs: R² {f['r2']:.4f}, "
                  f"RMSE {f['rmse']:.4f}.", "", "| parameter | value | 95 % interval |", "|---|---|---|"]
    for name in laws.LAWS[f["law"]].param_names:
        interval = ci.get(name)
        lines.append(f"| {name} | {p[name]:.4g} | " + (f"{interval[0]:.4g} – {interval[1]:.4g} |" if interval else "– |"))
    if "max_abs_rel_error" in ex:
        lines += ["", f"Extrapolation: fitted without the largest model ({ex['n_fitted']} runs), its "
                      f"{len(ex['held_out'])} runs predicted within {100 * ex['max_abs_rel_error']:.2f} %."]
    n_ci = plan.get("num_params_ci")
    lines += ["", f"Compute-optimal for C = {plan['flops']:.3g} FLOPs: N_opt = {plan['num_params']:.3g}"
                  + (f" (95 %: {n_ci[0]:.3g} – {n_ci[1]:.3g})" if n_ci else "")
                  + f", D_opt = {plan['num_tokens']:.3g} tokens, predicted loss {plan['loss']:.4f}.",
              "", f"Final model `{final['size']}`: N = {final['num_params']:,}, {final['steps']} updates with "
                  f"accumulation {final['accum_steps']} (D = {final['num_tokens']:.3g} tokens): eval loss "
                  f"{final['eval_loss']:.4f} vs {final['predicted_loss']:.4f} predicted "
                  f"({100 * (final['eval_loss'] / final['predicted_loss'] - 1):+.2f} %).",
              "", "Exported: SavedModel `" + final["saved_model"] + "` and TFLite:", "", compression_table.rstrip(), "",
              "Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in job["seconds"].items()) + "."]
    return "\n".join(lines) + "\n"

