"""The recipe's table: one row per model, mean ± standard deviation over the seeds, and the goals.

Teacher and encoder-from-scratch figures come from each run's eval.json (the whole held-out
split, the final weights); the students' from their .tflite files as `experiments.compress`
measured them (the same split); size and latency are the teacher's and students' .tflite files
(batch 1, one interpreter thread). Standard deviations are sample ones (n - 1); one seed has 0.
"""
import numpy as np

ROWS = (  # key, label
    ("teacher", "teacher (pretrained, fine-tuned)"),
    ("scratch", "same encoder from scratch"),
    ("student_alone", "student alone"),
    ("distilled", "distilled student"),
    ("int8", "distilled student, int8 TFLite"),
    ("baseline", "bag-of-bytes logistic regression"),
)
FIGURES = ("accuracy", "macro_f1", "size_bytes", "latency_ms")
COMPRESSED = {"teacher": "float32", "student_alone": "student_alone", "distilled": "distilled"}


def stats(values):
    """{mean, std, values} of a list of numbers (None where there are none)."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": values}


def _per_seed(results, key, quantized):
    """{figure: value} of one row in one seed's results."""
    out = {}
    if key in ("teacher", "scratch"):
        out.update(accuracy=results[key]["accuracy"], macro_f1=results[key]["macro"]["f1"])
    variant = quantized if key == "int8" else COMPRESSED.get(key)
    if variant:
        record = next(r for r in results["compression"]["variants"] if r["variant"] == variant)
        out.update(size_bytes=record["size_bytes"], latency_ms=record["latency_ms"])
        if key != "teacher":
            out.update(accuracy=record["accuracy"], macro_f1=record.get("macro_f1"))
    return out


def report(per_seed, baseline, pretrain, teacher_params, student_params, recipe_config):
    """The recipe's figures: rows of {params, accuracy, macro_f1, size_bytes, latency_ms}."""
    params = {"teacher": teacher_params, "scratch": teacher_params, "student_alone": student_params,
              "distilled": student_params, "int8": student_params, "baseline": baseline["num_params"]}
    rows = {}
    for key, label in ROWS:
        if key == "baseline":
            seeds = [{"accuracy": baseline["accuracy"], "macro_f1": baseline["macro_f1"],
                      "size_bytes": baseline.get("size_bytes"), "latency_ms": baseline.get("latency_ms")}]
        else:
            seeds = [_per_seed(r, key, recipe_config.quantized) for r in per_seed]
        if key == "int8" and recipe_config.quantized != "distilled_int8":
            label = "distilled student, int8 weights (dynamic range) TFLite"
        rows[key] = {"label": label, "params": params[key],
                     **{f: stats([s.get(f) for s in seeds]) for f in FIGURES}}
    return {"rows": rows,
            "pretraining": {k: pretrain.get(k) for k in ("steps", "eval_accuracy", "eval_loss", "wall_seconds")},
            "student_share": student_params / teacher_params,
            "max_student_share": recipe_config.max_student_share}


def goals(report_, recipe_config):
    """Each goal of the recipe with the figures that decide it, as measured."""
    rows = report_["rows"]

    def mean(key, figure="accuracy"):
        return rows[key][figure]["mean"]

    def std(key):
        return rows[key]["accuracy"]["std"]

    helps = mean("teacher") - mean("scratch")
    margin = mean("distilled") - mean("student_alone")
    noise = 2 * max(std("distilled"), std("student_alone"))
    points = 100 * (mean("int8") - mean("distilled"))
    size_ratio = mean("int8", "size_bytes") / mean("distilled", "size_bytes")
    out = {
        "pretraining_helps": {"teacher_minus_scratch": helps, "met": helps > 0,
                              "beyond_twice_std": helps > 2 * max(std("teacher"), std("scratch"))},
        "distillation_helps": {"distilled_minus_alone": margin, "twice_larger_std": noise, "met": margin > noise},
        "int8_close": {"points_vs_float": points, "size_ratio": size_ratio,
                       "met": abs(points) <= 1.0 and size_ratio <= 0.3},
        "student_share": {"share": report_["student_share"],
                          "met": report_["student_share"] <= report_["max_student_share"]},
    }
    wall = report_["wall_seconds"]
    out["wall_time"] = {"seconds": wall, "goal_seconds": recipe_config.wall_goal_seconds,
                        "measured": report_["every_stage_ran"],
                        "met": (wall <= recipe_config.wall_goal_seconds) if report_["every_stage_ran"] else None}
    return out


def _cell(s, fmt):
    if s is None:
        return "–"
    return format(s["mean"], fmt) + (f" ± {format(s['std'], fmt)}" if len(s["values"]) > 1 else "")


def markdown(report_):
    """The table and the goals as Markdown."""
    n = len(report_["seeds"])
    lines = [f"# Text-classification recipe: {n} seed{'s' if n > 1 else ''} (mean ± std)", "",
             "| model | parameters | accuracy | macro F1 | size (bytes) | latency ms (batch 1) |",
             "|---|---|---|---|---|---|"]
    for key, row in report_["rows"].items():
        lines.append(f"| {row['label']} | {row['params']:,} | {_cell(row['accuracy'], '.4f')} | "
                     f"{_cell(row['macro_f1'], '.4f')} | {_cell(row['size_bytes'], '.0f')} | "
                     f"{_cell(row['latency_ms'], '.3f')} |")
    p, g = report_["pretraining"], report_["goals"]
    lines += ["", f"Pretraining: {p['steps']} updates, held-out masked-token accuracy {p['eval_accuracy']:.4f}."]
    d = report_.get("distillation")
    if d:
        transfer = (f"; each update adds {d['transfer_batch_size']} inputs of {d['transfer_data']} that only the "
                    "teacher labels" if d["transfer_data"] else "")
        lines.append(f"Distillation: T = {d['temperature']}, alpha {d['alpha']}, {d['steps']} updates{transfer}.")
    lines += ["", "Goals, as measured:", ""]

    def verdict(ok):
        return "not measured" if ok is None else ("met" if ok else "NOT met")

    d = g["pretraining_helps"]
    lines.append(f"- pretraining helps (teacher - scratch accuracy {100 * d['teacher_minus_scratch']:+.2f} points): "
                 f"{verdict(d['met'])}")
    d = g["distillation_helps"]
    lines.append(f"- distillation helps beyond noise (distilled - alone {100 * d['distilled_minus_alone']:+.2f} "
                 f"points vs 2 x larger std {100 * d['twice_larger_std']:.2f}): {verdict(d['met'])}")
    d = g["int8_close"]
    lines.append(f"- int8 within 1 point at <= 0.3x size ({d['points_vs_float']:+.2f} points, "
                 f"{d['size_ratio']:.2f}x): {verdict(d['met'])}")
    d = g["student_share"]
    lines.append(f"- student <= 1/10 of the teacher's parameters ({d['share']:.3f}): {verdict(d['met'])}")
    d = g["wall_time"]
    lines.append(f"- whole recipe <= {d['goal_seconds']:.0f} s ({d['seconds']:.0f} s"
                 f"{'' if d['measured'] else ', some stages were skipped'}): {verdict(d['met'])}")
    return "\n".join(lines) + "\n"
