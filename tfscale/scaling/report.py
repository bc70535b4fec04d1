"""fit.json, scaling.png and report.md from an analysis (see `analysis.analyze`)."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfscale import io  # noqa: E402
from tfscale.errors import ConfigError  # noqa: E402
from tfscale.scaling import laws as laws_lib  # noqa: E402
from tfscale.scaling import planning  # noqa: E402
from tfscale.scaling import results as results_lib  # noqa: E402

LABELS = {"num_params": "parameters N", "num_tokens": "training tokens D", "flops": "training FLOPs C",
          "frontier": "training FLOPs C"}
COUNTING = {  # models/card.py
    "total": "N counts every parameter (embeddings included, a tied table once) and C every training FLOP "
             "(output logits and attention included)",
    "non_embedding": "N counts non-embedding parameters and C Kaplan's FLOPs (6N + 6 n_layer n_ctx d_model "
                     "per token, no output logits)",
}
SYMBOLS = {"num_params": "N", "num_tokens": "D", "flops": "C"}


def check_workdir(workdir):
    """Raises ConfigError unless `write` can create its files in `workdir`; leaves nothing behind.

    A probe file is created and removed where the first write would go: `os.access` says yes to
    root on a read-only mount or under /proc, and a fit should fail before it runs, not after.
    """
    if io.is_remote(workdir):
        return
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"workdir {workdir} exists and is not a folder")
    parent = os.path.abspath(workdir)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"workdir {workdir} cannot be written ({parent} is not a folder)")
    probe = os.path.join(parent, f".write-probe-{os.getpid()}")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"workdir {workdir} cannot be written "
                          f"(creating a file in {parent}: {e.strerror})") from None


def write(workdir, result, rows):
    """Writes the three files; fit.json leaves out the bootstrap samples (report.md says how many)."""
    if result.get("params_convention") == "non_embedding":  # plot the points the fit saw
        rows, _ = results_lib.in_convention(rows, "non_embedding")
    os.makedirs(workdir, exist_ok=True)
    io.write_json(os.path.join(workdir, "fit.json"), {k: v for k, v in result.items() if k != "samples"})
    plot(os.path.join(workdir, "scaling.png"), result, rows)
    with open(os.path.join(workdir, "report.md.tmp"), "w", encoding="utf-8") as f:
        f.write(markdown(result))
    os.replace(os.path.join(workdir, "report.md.tmp"), os.path.join(workdir, "report.md"))


def _curves(law, params_list, rows_fn, xs):
    """Loss along `xs` for each parameter set -> [len(params_list), len(xs)]."""
    return np.array([law.predict(p, rows_fn(xs)) for p in params_list])


def _band(ax, law, result, rows_fn, xs, color):
    ax.plot(xs, law.predict(result["params"], rows_fn(xs)), color=color, lw=1.5)
    if result.get("samples"):
        curves = _curves(law, result["samples"], rows_fn, xs)
        ax.fill_between(xs, *np.nanpercentile(curves, [2.5, 97.5], axis=0), color=color, alpha=0.15, lw=0)


def plot(path, result, rows):
    """Loss against each of the law's variables with the fitted curves and 95 % bootstrap bands;
    the compute-optimal frontier against C; isoFLOP profiles when the sweep has them."""
    law = laws_lib.LAWS[result["law"]]
    panels = list(law.panels)
    if result.get("isoflop"):
        panels.append("isoflop")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "isoflop":
            _isoflop_panel(ax, result, rows)
        elif panel == "frontier":
            _frontier_panel(ax, law, result, rows)
        elif len(law.columns) > 1:
            _by_other_panel(ax, law, result, rows, panel)
        else:
            x = np.array([float(r[panel]) for r in rows])
            ax.scatter(x, [float(r["loss"]) for r in rows], s=18, color="k", zorder=3)
            xs = np.geomspace(x.min() / 2, x.max() * 4, 100)
            _band(ax, law, result, lambda v: [{panel: t} for t in v], xs, "C0")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if panel != "isoflop":  # a wide bootstrap band must not hide the points
            observed = [float(r["loss"]) for r in rows]
            span = max(observed) - min(observed)
            ax.set_ylim(min(observed) - 0.5 * span, max(observed) + 0.5 * span)
        ax.set_xlabel(LABELS.get(panel, "parameters N (isoFLOP profiles)"))
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3, which="both")
    held = result.get("extrapolation", {}).get("held_out", [])
    fig.suptitle(f"{law.formula}   R² {result['r2']:.4f}" + (
        f", held-out largest runs within {100 * result['extrapolation']['max_abs_rel_error']:.1f} %" if held else ""))
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)


def _by_other_panel(ax, law, result, rows, column):
    """Loss against `column`, one colour and curve per value of the law's other column."""
    other = next(c for c in law.columns if c != column)
    values = sorted({float(r[other]) for r in rows})
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(values)))
    x = np.array([float(r[column]) for r in rows])
    xs = np.geomspace(x.min() / 2, x.max() * 4, 100)
    for value, color in zip(values, colors):
        mine = [r for r in rows if float(r[other]) == value]
        ax.scatter([float(r[column]) for r in mine], [float(r["loss"]) for r in mine], s=18, color=color,
                   zorder=3, label=f"{SYMBOLS[other]} = {value:.3g}" if len(values) <= 8 else None)
        if len(values) <= 8:
            _band(ax, law, result, lambda v, value=value: [{column: t, other: value} for t in v], xs, color)
    if len(values) <= 8:
        ax.legend(fontsize=7)


def _frontier_panel(ax, law, result, rows):
    per_token = planning.flops_per_token_fn(rows) if result.get("flops_model") == "model" else None
    c = np.array([float(r["flops"]) for r in rows])
    ax.scatter(c, [float(r["loss"]) for r in rows], s=18, color="k", zorder=3, label="runs")
    cs = np.geomspace(c.min() / 2, max(c.max(), *[p["flops"] for p in result.get("compute_optimal", [])]) * 2, 60)
    ax.plot(cs, [law.optimal_loss(result["params"], v, per_token) for v in cs], color="C3",
            label="compute-optimal L(C)")
    if result.get("samples"):
        curves = np.array([[law.optimal_loss(p, v, per_token) for v in cs] for p in result["samples"][:200]])
        ax.fill_between(cs, *np.nanpercentile(curves, [2.5, 97.5], axis=0), color="C3", alpha=0.15, lw=0)
    ax.legend(fontsize=7)


def _isoflop_panel(ax, result, rows):
    groups = planning.isoflop_groups(rows)
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(groups)))
    for group, minimum, color in zip(groups, result["isoflop"]["minima"], colors):
        n = np.array([float(r["num_params"]) for r in group])
        loss = np.array([float(r["loss"]) for r in group])
        ax.scatter(n, loss, s=14, color=color)
        ns = np.geomspace(n.min(), n.max(), 50)
        ax.plot(ns, np.polyval(np.polyfit(np.log(n), loss, 2), np.log(ns)), color=color, lw=1)
        ax.scatter([minimum["num_params"]], [minimum["loss"]], marker="x" if minimum["at_edge"] else "*",
                   s=60, color=color, zorder=4)


def _fmt(value):
    return f"{value:.4g}"


def markdown(result):
    """report.md: the law, parameters with intervals, goodness of fit, extrapolation and the plan."""
    law = laws_lib.LAWS[result["law"]]
    lines = [f"# Scaling-law fit: {law.formula}", "",
             f"{result['n_points']} runs; Huber (delta 1e-3) on log loss, L-BFGS from "
             f"{result.get('initialisations', 'a grid of')} initialisations; 95 % intervals from {result['bootstrap']} bootstrap refits.", ""]
    if result.get("params_convention"):
        note = f" ({result['params_note']})" if result.get("params_note") else ""
        lines += [f"Counting `{result['params_convention']}`: {COUNTING[result['params_convention']]}{note}.", ""]
    lines += ["| parameter | value | 95 % interval |", "|---|---|---|"]
    for name in law.param_names:
        ci = result["ci"].get(name)
        lines.append(f"| {name} | {_fmt(result['params'][name])} | "
                     + (f"{_ci(ci[0])} – {_ci(ci[1])} |" if ci else "– |"))
    lines += ["", f"R² {result['r2']:.4f}, RMSE {result['rmse']:.4g}, largest relative error "
                  f"{100 * result['max_rel_error']:.2f} %.", ""]
    ex = result.get("extrapolation")
    if ex and "held_out" in ex:
        lines += [f"## Extrapolation: fitted on {ex['n_fitted']} runs, predicting the largest", "",
                  "| run | N | D | loss | predicted | error |", "|---|---|---|---|---|---|"]
        lines += [f"| {h['name']} | {_fmt(h['num_params'])} | {_fmt(h['num_tokens'])} | {h['loss']:.4f} | "
                  f"{h['predicted']:.4f} | {100 * h['rel_error']:+.2f} % |" for h in ex["held_out"]]
        lines.append("")
    elif ex:
        lines += [f"Extrapolation check skipped: {ex['skipped']}.", ""]
    plans = [p for p in result.get("compute_optimal", []) if not p.get("undetermined")]
    if result.get("compute_optimal"):
        lines += [f"## Compute-optimal allocation (C = {'6ND' if result['flops_model'] == '6nd' else 'model FLOPs'})", ""]
    if plans:
        lines += ["| FLOPs | N_opt | 95 % | D_opt | 95 % | tokens/param | loss |", "|---|---|---|---|---|---|---|"]
        for p in plans:
            nci, dci = (" – ".join(map(_ci, p[k])) if k in p else "–" for k in ("num_params_ci", "num_tokens_ci"))
            lines.append(f"| {_fmt(p['flops'])} | {_fmt(p['num_params'])} | {nci} | "
                         f"{_fmt(p['num_tokens'])} | {dci} | "
                         f"{p['num_tokens'] / p['num_params']:.1f} | {p['loss']:.4f} |")
        lines.append("")
    for p in result.get("compute_optimal", []):
        if p.get("undetermined"):
            lines += [f"No compute-optimal allocation for C = {_fmt(p['flops'])}: {p['undetermined']}.", ""]
    if result.get("isoflop"):
        lines += ["## isoFLOP minima (Approach 2)", "", "| FLOPs | N_opt | runs | at the edge |", "|---|---|---|---|"]
        lines += [f"| {_fmt(m['flops'])} | {_fmt(m['num_params'])} | {m['points']} | {'yes' if m['at_edge'] else ''} |"
                  for m in result["isoflop"]["minima"]]
        if "n_opt_exponent" in result["isoflop"]:
            lines.append(f"\nN_opt ∝ C^{result['isoflop']['n_opt_exponent']:.3f} (minima not at an edge).")
        lines.append("")
    t = result.get("target")
    if t:
        if t.get("reachable") is False:
            lines += [f"## Target loss {t['loss']}", "", f"Not reachable: the fitted E is {law.irreducible(result['params']):.4g}.", ""]
        elif t.get("undetermined"):
            lines += [f"## Target loss {t['loss']}", "", f"No compute is predicted: {t['undetermined']}.", ""]
        else:
            lines += [f"## Target loss {t['loss']}", ""]
            lines += [f"- {k}: {_fmt(v)}" + (f" (95 %: {_ci(t['ci'][k][0])} – {_ci(t['ci'][k][1])})"
                                             if t.get("ci", {}).get(k) else "")
                      for k, v in t.items() if k not in ("loss", "ci")]
            if t.get("ci"):
                lines.append(f"- reachable in {100 * t['ci']['reachable_fraction']:.0f} % of bootstrap refits")
            lines.append("")
    return "\n".join(lines)


def _ci(value):
    """An interval end; "–" where the bootstrap refits gave no finite value."""
    return value if isinstance(value, str) else _fmt(value) if np.isfinite(value) else "–"
