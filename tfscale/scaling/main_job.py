"""The main job: sweep -> fit -> plan -> check the plan -> compress -> one table.

  DIR/sweep/results.jsonl, DIR/sweep/runs/NAME/   the sweep (`sweep.run_sweep`), grown by
                                                  `rounds` until N_opt lies inside its sizes
  DIR/fit/fit.json, scaling.png, report.md        the last fit (`analysis.analyze`)
  DIR/final/                                      the chosen model: summary.json, export/,
                                                  compress/*.tflite, compression.json
  DIR/check/LABEL/                                the candidates beside it at the same compute
  DIR/check/results.jsonl, logs/                  the three trainings' rows and pool logs (`check_runs`)
  DIR/scaling.json, DIR/scaling.md                everything above in one place

Every stage resumes: finished sweep runs are skipped, the other runs resume from their
checkpoints, so re-running the command after an interruption finishes the job.
"""
import math
import time

from absl import logging

from tfscale import io
from tfscale.errors import ConfigError
from tfscale.scaling import analysis, check_runs, laws, learning_rates, plan_check, report, results, rounds, sweep


def choose_size(candidates, costs, num_params, swept_range):
    """The candidate inside `swept_range` (the swept sizes' N, ends included) nearest `num_params`
    in log N: the law is only trusted where it has data. Returns (label, overrides)."""
    lo, hi = swept_range
    inside = [c for c in candidates if lo <= costs[c[0]][0] <= hi]
    if not inside:
        raise ConfigError(f"no entry of scaling.candidate_sizes has N in the swept range {lo:,} – {hi:,}")
    return min(inside, key=lambda c: abs(math.log(costs[c[0]][0] / num_params)))


def size_entry(label, overrides):
    """A `sweep.sizes` entry for (label, overrides), as `sweep.parse_size` reads it back."""
    return f"{label}: " + ",".join(f"{k}={v}" for k, v in overrides)


def _rated(config, sizes, candidates, costs):
    """candidates_fn for `rounds`: the candidates with peak learning rates, from the swept sizes'
    entries, or from the sweep's search where it varies the rate; `info` keeps the last table."""
    info = {}

    def rated(rows):
        if learning_rates.searched(config):
            rates, source = learning_rates.best_from_results(rows), "search"
            rates = {k: v for k, v in rates.items() if k in costs}
        else:
            rates = {label: learning_rates.rate_of(o, config.optimizer.learning_rate) for label, o in sizes}
            source = "sweep"
        out, info["table"] = learning_rates.assign(candidates, rates, costs, source)
        return out

    return rated, info


def run_main_job(config, workdir):
    """Runs every stage into `workdir` and returns (the scaling.json dict, scaling.md text)."""
    import tf_keras as keras  # pylint: disable=import-outside-toplevel
    from tfscale import compress, training  # pylint: disable=import-outside-toplevel
    from tfscale.scaling import sweep_pool  # pylint: disable=import-outside-toplevel

    t0 = time.time()
    sweep_pool.resolve(config)  # first: on a multi-GPU host this process then leaves GPU memory to pool workers
    times = {"sweep": 0.0, "fit": 0.0}
    sizes = [sweep.parse_size(t, i) for i, t in enumerate(config.sweep.sizes)]
    candidates = [sweep.parse_size(t, i) for i, t in enumerate(config.scaling.candidate_sizes)]
    if not candidates:
        raise ConfigError("scaling.candidate_sizes is empty")
    costs = sweep.size_costs(config, list({label: o for label, o in [*sizes, *candidates]}.items()))
    state = {}

    def sweep_fn(entries):
        t = time.time()
        c = sweep.apply_overrides(config, (("sweep.sizes", tuple(size_entry(*e) for e in entries)),))
        state["out"] = out = sweep.run_sweep(c, io.join(workdir, "sweep"))
        # This round's runs only: the folder may also hold rows of sizes an earlier invocation
        # added, or of budgets since taken out of the config.
        planned = set(out["planned"])
        state["raw"] = [r for r in results.read(out["results"]) if r.get("name") in planned]
        rows = [r for r in results.load(out["results"]) if r["name"] in planned]
        times["sweep"] += time.time() - t
        if len(rows) < len(laws.LAWS["chinchilla"].param_names):
            raise ConfigError(f"only {len(rows)} sweep runs finished; see {out['results']}")
        return rows

    def fit_fn(rows):
        t = time.time()
        if "budget" not in state:  # 0: the original sweep's largest run, not one of a size added later
            state["budget"] = config.scaling.compute_budget or max(float(r["flops"]) for r in rows)
        budget = state["budget"]
        result = analysis.analyze(rows, law="chinchilla", budgets=[budget], bootstrap=config.scaling.bootstrap,
                                  flops=config.scaling.flops, seed=config.seed,
                                  grid_stride=config.scaling.grid_stride, params=config.scaling.get("params", "total"))
        times["fit"] += time.time() - t
        return result

    rated, lr_info = _rated(config, sizes, candidates, costs)
    planned = rounds.plan_in_range(sizes, costs, sweep_fn, fit_fn, lambda rows: rated(state["raw"]),
                                   config.scaling.get("max_added_sizes", 3))
    rows, result, plan, budget = planned["rows"], planned["result"], planned["plan"], state["budget"]
    write_fit_report(io.join(workdir, "fit"), result, rows)
    candidates = rated(state["raw"])
    label, overrides = choose_size(candidates, costs, plan["num_params"], planned["swept_range"])
    batch = config.train.batch_size
    logging.info("compute-optimal for C = %.3g: N = %.3g, D = %.3g; training %s (N = %d) and its neighbours",
                 budget, plan["num_params"], plan["num_tokens"], label, costs[label][0])

    final_dir = io.join(workdir, "final")
    below, above = plan_check.neighbours(candidates, costs, label)
    by_label = dict(candidates)
    entries = [(role, size, by_label[size]) for role, size in (("chosen", label), ("below", below), ("above", above))
               if size]
    runs, configs = check_runs.plan(config, workdir, entries, budget, costs, batch)
    _check_compressible(configs[label])  # before anything trains
    t = time.time()
    check_runs.train(config, workdir, runs)  # side by side; then each opened here as trained
    times["plan_check_train"] = time.time() - t
    models, summaries, times["plan_check_eval"], times["compress"] = [], {}, 0.0, 0.0
    for r in runs:
        cfg = configs[r.name]
        t_eval = time.time()
        with training.Run(cfg, r.run_dir) as run:
            summary = run.train()  # finished: its summary, and its last weights restored
            losses = run.heldout_losses()
            times["plan_check_eval"] += time.time() - t_eval
            if r.role == "chosen":
                t_compress = time.time()
                compression, table = compress.compress_run(run)
                times["compress"] += time.time() - t_compress
        keras.backend.clear_session()
        summaries[r.name] = (cfg, summary)
        n, d, c = results.ndc_from_summary(summary, result["params_convention"])
        models.append({"size": r.name, "role": r.role, "num_params": n, "num_tokens": d, "flops": c,
                       "steps": summary["steps"], "learning_rate": cfg.optimizer.learning_rate,
                       "eval_loss": summary["eval_loss"], "workdir": r.run_dir, "losses": losses,
                       "predicted_loss": float(laws.LAWS[result["law"]].loss(result["params"], n, d))})
    check = {"flops": budget, **plan_check.compare(models, label)}
    logging.info("plan check: %s", check["sentence"])
    final, summary = summaries[label]
    chosen = next(m for m in models if m["role"] == "chosen")
    job = {
        "sweep": {"runs": len(rows), "results": state["out"]["results"], "failed": state["out"]["failed"],
                  "sizes": [label_ for label_, _ in planned["sizes"]]},
        "fit": {k: result[k] for k in ("law", "params", "ci", "r2", "rmse", "n_points", "extrapolation")},
        "compute_optimal": plan,
        "planning_rounds": planned["rounds"],
        "learning_rates": lr_info["table"],
        "final": {"size": label, "overrides": dict(overrides), "num_params": chosen["num_params"],
                  "num_tokens": summary.get("num_tokens"), "flops": chosen["flops"],
                  "steps": summary["steps"], "accum_steps": summary["accum_steps"], "eval_loss": summary["eval_loss"],
                  "predicted_loss": chosen["predicted_loss"], "bits_per_byte": summary.get("bits_per_byte"),
                  "saved_model": io.join(final_dir, "export", "saved_model")},
        "plan_check": check,
        "compression": [{k: v[k] for k in ("variant", "path", "size_bytes", "eval_loss", "accuracy", "latency_ms",
                                          "max_abs_diff_vs_keras")} for v in compression["variants"]],
        "seconds": {**times, "total": time.time() - t0},
    }
    io.write_json(io.join(workdir, "scaling.json"), job)
    text = markdown(job, rows, table)
    io.write_bytes(io.join(workdir, "scaling.md"), text.encode())
    return job, text


def _check_compressible(cfg):
    """The chosen size's compression variants, refused (one error) before anything trains."""
    import tf_keras as keras  # pylint: disable=import-outside-toplevel
    from tfscale import compress, data, models  # pylint: disable=import-outside-toplevel
    info = data.load(cfg.data, cfg.model.get("seq_len")).info
    compress.check_network(cfg, models.build(cfg.model, info))
    keras.backend.clear_session()


def write_fit_report(fit_dir, result, rows):
    """fit.json, scaling.png and report.md, with where N_opt lies against the swept sizes."""
    report.write(fit_dir, result, rows)
    plan = result["compute_optimal"][0]
    path = io.join(fit_dir, "report.md")
    with io.gfile.GFile(path, "rb") as f:
        text = f.read().decode().rstrip("\n")
    lines = ["", "", "## The plan against the swept sizes", "", plan["range_note"], "",
             *rounds.markdown(result["planning_rounds"]), ""]
    io.write_bytes(path, (text + "\n".join(lines)).encode())


def markdown(job, rows, compression_table):
    """The final table of the main job (also printed by `experiments.scaling`)."""
    f = job["fit"]
    p, ci = f["params"], f["ci"]
    ex = f.get("extrapolation", {})
    plan, final = job["compute_optimal"], job["final"]
    lines = ["# Scaling sweep, fit and compute-optimal model", "",
             "| run | N | D (tokens) | C (FLOPs) | eval loss |", "|---|---|---|---|---|"]
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
              "", plan["range_note"], "", *rounds.markdown(job["planning_rounds"]),
              "", *learning_rates.markdown(job["learning_rates"]),
              "", *plan_check.markdown(job["plan_check"]),
              "", f"Final model `{final['size']}`: N = {final['num_params']:,}, {final['steps']} updates with "
                  f"accumulation {final['accum_steps']} (D = {final['num_tokens']:.3g} tokens): eval loss "
                  f"{final['eval_loss']:.4f} vs {final['predicted_loss']:.4f} predicted "
                  f"({100 * (final['eval_loss'] / final['predicted_loss'] - 1):+.2f} %).",
              "", "Exported: SavedModel `" + final["saved_model"] + "` and TFLite:", "", compression_table.rstrip(), "",
              "Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in job["seconds"].items()) + "."]
    return "\n".join(lines) + "\n"

