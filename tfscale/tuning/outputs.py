"""What a study leaves in its workdir, all rebuilt from the study itself (so any process may write
them, and a re-run writes them again): best_config.py, report.md, history.png, importances.png,
the TensorBoard HParams dashboard under tensorboard/, and a progress line per trial.
"""
import io as bytes_io
import json
import math
import pprint
import warnings

from tfscale import io
from tfscale.tuning import section, space as space_lib
from tfscale.tuning.trial import trial_workdir

MIN_TRIALS_FOR_IMPORTANCES = 4  # complete trials fANOVA needs to say anything


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cell(value):
    return "" if value is None else _fmt(value)


def state_of(trial):
    """COMPLETE, PRUNED, FAIL, or INTERRUPTED (a FAIL that was stopped, not failed: run again)."""
    name = trial.state.name
    if name == "FAIL" and "error" not in trial.user_attrs:
        return "INTERRUPTED"
    return name


def _retry_of(trial):
    history = trial.system_attrs.get("retry_history") or []
    return history[0] if history else None


def rows(study):
    """One dict per trial: number, state, workdir, params, value, steps, num_steps, wall_seconds, note."""
    out = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        note = a.get("error") or (a.get("interrupted") if t.state.name == "FAIL" else "") or ""
        if t.state.name == "PRUNED" and "pruned_at" in a:
            note = f"pruned at update {a['pruned_at']}"
        if _retry_of(t) is not None:
            note = f"resumes #{_retry_of(t)}" + (f"; {note}" if note else "")
        value = t.value if t.state.name == "COMPLETE" else a.get("value")
        out.append({"number": t.number, "state": state_of(t), "workdir": trial_workdir(t),
                    "params": dict(t.params), "value": value, "steps": a.get("steps"),
                    "num_steps": a.get("num_steps"), "wall_seconds": a.get("wall_seconds"), "note": note})
    return out


def best_trial(study):
    """The best complete trial, or None."""
    return study.best_trial if any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)) else None


def update_counts(study):
    """(updates trained, updates the same trials would have trained unpruned) over done trials.

    A failed trial counts what it trained on both sides (unpruned, it would have failed there
    too). Interrupted attempts are left out: the retry that resumed one counts its workdir's
    updates (summary.json `steps`), the ones before the interruption included."""
    from tfscale.tuning.study import is_done  # pylint: disable=import-outside-toplevel
    trained = unpruned = 0
    for t in study.get_trials(deepcopy=False):
        if not is_done(t):
            continue
        steps = t.user_attrs.get("steps") or 0
        trained += steps
        unpruned += steps if t.state.name == "FAIL" else t.user_attrs.get("num_steps", steps)
    return trained, unpruned


def progress_line(study, trial, num_trials, metric):
    """`trial 3/20 #3 PRUNED at 200/600 updates  eval_loss 0.1234  lr=...  best 0.1100 (#1)`."""
    from tfscale.tuning.study import is_done  # pylint: disable=import-outside-toplevel
    done = sum(is_done(t) for t in study.get_trials(deepcopy=False))
    a = trial.user_attrs
    state = state_of(trial)
    steps = f"{a.get('steps', '?')}/{a.get('num_steps', '?')} updates"
    value = trial.value if state == "COMPLETE" else a.get("value")
    shown = f"{metric} {_fmt(value)}" if value is not None else (a.get("error") or "")
    params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
    best = best_trial(study)
    best_text = f"best {_fmt(best.value)} (#{best.number})" if best else "best -"
    return (f"trial {done}/{num_trials} #{trial.number} {state} {steps}  {shown}  {params}  {best_text}")


def write_best_config(workdir, config, study):
    """best_config.py: the best trial's full training config (with `tune.best_config_overrides`),
    a file `experiments.train --config=` takes. Returns its path, or None without a complete trial."""
    best = best_trial(study)
    if best is None:
        return None
    c = space_lib.trial_config(config, best.params).copy_and_resolve_references()
    overrides = best_config_overrides(config)
    if overrides:
        from tfscale.scaling.sweep_spec import apply_overrides  # pylint: disable=import-outside-toplevel
        c = apply_overrides(c, overrides)
    t = config.tune
    body = pprint.pformat(c.to_dict(), indent=1, width=100, sort_dicts=True)
    text = f'''"""Best trial #{best.number} of study {t.study_name!r}: {t.metric} {best.value:.6g} ({section.direction(t)}).

Values: {", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())}; trained in {trial_workdir(best)}.
Changed from that trial: {", ".join(f"{k}={v!r}" for k, v in overrides) or "nothing"} (tune.best_config_overrides).
Written by experiments.tune; train it with
    python -m experiments.train --config=THIS_FILE --workdir=DIR
"""
import ml_collections

from tfscale.config import defaults

CONFIG = {body}


def get_config(arg=None):
    del arg  # no variants
    config = defaults()  # keeps the types of keys whose value is None (placeholders)
    config.update(ml_collections.ConfigDict(CONFIG))
    return config.lock()
'''
    path = io.join(workdir, "best_config.py")
    io.write_bytes(path, text)
    return path


def best_config_overrides(config):
    """`tune.best_config_overrides` as ((key, value), ...), keys checked against the config."""
    from tfscale.errors import require  # pylint: disable=import-outside-toplevel
    from tfscale.scaling.sweep_spec import parse_value  # pylint: disable=import-outside-toplevel
    out = []
    for entry in config.tune.best_config_overrides:
        key, eq, value = str(entry).partition("=")
        require(eq and key.strip(), f"tune.best_config_overrides entry {entry!r} is not key=value")
        space_lib.leaf(config, key.strip(), "tune.best_config_overrides")
        out.append((key.strip(), parse_value(value.strip())))
    return tuple(out)


def _save_axes(ax, path):
    buffer = bytes_io.BytesIO()
    figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    plt.close(figure)
    io.write_bytes(path, buffer.getvalue())


def write_plots(workdir, study, params, seed=0):
    """history.png and importances.png; returns {file: why it was not written} for those left out."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import optuna  # pylint: disable=import-outside-toplevel
    from optuna.visualization import matplotlib as plots  # pylint: disable=import-outside-toplevel

    complete = sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))
    missing = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if complete:
            _save_axes(plots.plot_optimization_history(study), io.join(workdir, "history.png"))
        else:
            missing["history.png"] = "no complete trial yet"
        if len(params) < 2:
            missing["importances.png"] = f"{len(params)} searched key: importances need 2 or more"
        elif complete < MIN_TRIALS_FOR_IMPORTANCES:
            missing["importances.png"] = (f"{complete} complete trial(s): importances need "
                                          f"{MIN_TRIALS_FOR_IMPORTANCES} or more")
        else:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
            try:
                axes = plots.plot_param_importances(study, evaluator=evaluator)
            except (RuntimeError, ValueError) as e:  # e.g. every complete trial scored the same
                missing["importances.png"] = f"fANOVA could not rank the keys ({' '.join(str(e).split())[:200]})"
            else:
                _save_axes(axes, io.join(workdir, "importances.png"))
    for name in missing:
        if io.exists(io.join(workdir, name)):
            io.gfile.remove(io.join(workdir, name))
    return missing


def _domain(param, hp):
    if param.kind == "choice":
        return hp.Discrete(list(param.choices))
    if param.kind == "int":
        return hp.IntInterval(int(param.lo), int(param.hi))
    return hp.RealInterval(float(param.lo), float(param.hi))


def write_hparams(workdir, study, params, metric):
    """TensorBoard's HParams dashboard over every trial: `tensorboard --logdir DIR/tensorboard`.

    Rewritten from the study each time (one folder per trial, with its values, state, metric and
    updates), so it never holds a trial twice: written beside it, then moved into place."""
    import os  # pylint: disable=import-outside-toplevel
    final = io.join(workdir, "tensorboard")
    tmp = f"{final}.tmp-{os.getpid()}"
    io.rmtree(tmp)
    _write_hparams(tmp, study, params, metric)
    io.replace_dir(tmp, final)
    return final


def _write_hparams(root, study, params, metric):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorboard.plugins.hparams import api as hp  # pylint: disable=import-outside-toplevel

    hparams = [hp.HParam(p.key, _domain(p, hp)) for p in params]
    state = hp.HParam("state", hp.Discrete(["COMPLETE", "PRUNED", "FAIL", "INTERRUPTED"]))
    writer = tf.summary.create_file_writer(root)
    with writer.as_default():
        hp.hparams_config(hparams=[*hparams, state],
                          metrics=[hp.Metric(metric, display_name=metric),
                                   hp.Metric("updates", display_name="updates trained")])
    writer.close()
    for row in rows(study):
        writer = tf.summary.create_file_writer(io.join(root, f"trial_{row['number']:04d}"))
        with writer.as_default():
            values = {h: row["params"][h.name] for h in hparams if h.name in row["params"]}
            hp.hparams({**values, state: row["state"]}, trial_id=f"trial_{row['number']:04d}")
            step = row["steps"] or 0
            if row["value"] is not None and math.isfinite(row["value"]):
                tf.summary.scalar(metric, row["value"], step=step)
            tf.summary.scalar("updates", step, step=step)
        writer.close()  # all on disk before the folder is moved into place


def write_report(workdir, config, study, params, notes=None, url=""):
    """report.md: the study, the best trial, the updates pruning saved and the trial table."""
    t = config.tune
    table = rows(study)
    best = best_trial(study)
    trained, unpruned = update_counts(study)
    from tfscale.tuning.study import is_done  # pylint: disable=import-outside-toplevel
    done = sum(is_done(x) for x in study.get_trials(deepcopy=False))
    counts = {s: sum(r["state"] == s for r in table) for s in ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED")}
    lines = [f"# Study {t.study_name}", "",
             f"- storage: `{url}`",
             f"- metric: `{t.metric}` ({section.direction(t)}); sampler `{t.sampler}` (seed {t.seed}), "
             f"pruner `{t.pruner}`",
             f"- space: " + "; ".join(f"`{p.key}={p.spec()}`" for p in params),
             f"- trials done: {done} of {t.num_trials} ("
             + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) + ")"]
    if unpruned:
        lines.append(f"- updates trained: {trained:,} of the {unpruned:,} the same trials take unpruned "
                     f"({100 * trained / unpruned:.1f} %)")
    if best is not None:
        lines += [f"- best: trial #{best.number}, {t.metric} {best.value:.6g}: "
                  + ", ".join(f"`{k}={_fmt(v)}`" for k, v in best.params.items())
                  + f" (`{trial_workdir(best)}`); its config: `best_config.py`"]
    else:
        lines.append("- best: none yet (no complete trial), so no best_config.py")
    lines += ["", "| # | state | " + " | ".join(p.key for p in params)
              + f" | {t.metric} | updates | wall s | workdir | note |",
              "|---" * (len(params) + 7) + "|"]
    for r in table:
        updates = "" if r["steps"] is None else f"{r['steps']}" + (f"/{r['num_steps']}" if r["num_steps"] else "")
        wall = "" if r["wall_seconds"] is None else f"{r['wall_seconds']:.1f}"
        cells = [r["number"], r["state"], *(_cell(r["params"].get(p.key)) for p in params), _cell(r["value"]),
                 updates, wall, r["workdir"], r["note"].replace("|", "/")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "## Plots", ""]
    for name, title in (("history.png", "optimisation history"), ("importances.png", "parameter importances")):
        why = (notes or {}).get(name)
        lines.append(f"{title}: {why}" if why else f"![{title}]({name})")
        lines.append("")
    lines.append("TensorBoard HParams over all trials: `tensorboard --logdir "
                 f"{io.join(workdir, 'tensorboard')}`")
    path = io.join(workdir, "report.md")
    io.write_bytes(path, "\n".join(lines) + "\n")
    return path


def write_results(workdir, config, study):
    """results.json: the rows of report.md as data, with the update counts."""
    trained, unpruned = update_counts(study)
    best = best_trial(study)
    io.write_json(io.join(workdir, "results.json"), {
        "metric": config.tune.metric, "direction": section.direction(config.tune),
        "best": {"number": best.number, "value": best.value, "params": best.params} if best else None,
        "updates_trained": trained, "updates_unpruned": unpruned, "trials": json.loads(json.dumps(
            rows(study), default=str))})
