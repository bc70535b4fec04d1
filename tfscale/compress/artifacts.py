"""Every compressed variant of a trained network, written and measured as deployed.

`export_variants` converts each variant to TFLite (and writes a SavedModel for each distinct
Keras network that ships as one), verifies each file against the Keras network it came from,
and measures the file itself in the LiteRT interpreter: held-out accuracy and loss, size, gzip
size, batch-1 latency and weight sparsity. What each variant is: `variants`.
"""
from absl import logging
import numpy as np
import tf_keras as keras

from tfscale import export, io
from tfscale.compress import tflite, variants as variants_lib
from tfscale.errors import ConfigError


def model_inputs(x):
    """Raw uint8 pixels as float32 (the model rescales them); token ids stay integers."""
    return x.astype(np.float32) if x.dtype == np.uint8 else x


def export_variants(networks, data, outdir, variants=("float32", "dynamic_range"), *, int8_io=False,
                    representative_examples=256, eval_examples=0, latency_runs=200,
                    saved_models=True, sparsity_reports=None):
    """Writes `outdir/VARIANT.tflite` for each variant and returns one record per variant.

    `networks`: a trained keras.Model (the float32 network) or a dict from the sources in
    `variants.SOURCES` (float32, pruned, qat, ...) to networks. `data`: a `tfscale.data.DataSource` (the
    representative set for int8 comes from its training split, the measurements from its
    held-out split). A variant that cannot be converted, or whose file differs from its Keras
    network by more than its mode's `tflite.BOUNDS`, raises ConfigError naming it.
    """
    if isinstance(networks, keras.Model):
        networks = {"float32": networks}
    classifier = data.task == "classifier"
    # Evenly spaced, as the run's own evaluation picks them: a prefix of a text split would
    # come from its first files only, and its loss would not compare with the run's.
    eval_x, eval_y = data.eval_arrays(eval_examples)
    eval_x = model_inputs(eval_x)
    representative = model_inputs(data.train_sample(representative_examples, seed=0))
    sample = eval_x[:256 if classifier else 16]
    batch = 256 if classifier else 16
    records, saved = [], {}
    for variant in variants:
        if variant not in variants_lib.VARIANTS:
            raise ConfigError(f"unknown compress variant {variant!r}; choose one of "
                              f"{', '.join(variants_lib.VARIANTS)}")
        source, mode, _ = variants_lib.VARIANTS[variant]
        if source not in networks:
            raise ConfigError(f"variant {variant} needs the {source} network, which was not given")
        network = networks[source]
        path = io.join(outdir, f"{variant}.tflite")
        try:
            check = tflite.save(network, path, mode, sample, representative, int8_io)
        except ConfigError as e:
            raise ConfigError(f"variant {variant}: {e}") from e
        model = tflite.TFLiteModel(path)
        measured = model.evaluate(eval_x, eval_y, batch)
        size, gzipped = tflite.file_sizes(path)
        record = {
            "variant": variant,
            "path": path,
            "accuracy": measured["accuracy"],
            "eval_loss": measured["loss"],
            **({"macro_f1": measured["macro_f1"]} if "macro_f1" in measured else {}),
            "size_bytes": size,
            "gzip_bytes": gzipped,
            "latency_ms": model.latency_ms(eval_x[0], latency_runs),
            "sparsity": model.weight_sparsity(),
            "max_abs_diff_vs_keras": check["max_abs_diff"],
            "rel_diff_vs_keras": check["rel_diff"],
            "argmax_agreement_vs_keras": check["argmax_agreement"],
            "weight_dtypes": model.weight_dtypes(),
            "eval_examples": int(len(eval_y)),
        }
        if sparsity_reports and source in sparsity_reports:
            record["layers"] = sparsity_reports[source]["layers"]
        if saved_models and variants_lib.SOURCES[source].saved_model:
            if source not in saved:
                saved_path = io.join(outdir, source, "saved_model")
                try:
                    saved[source] = (saved_path, export.save_saved_model(network, saved_path, sample, classifier))
                except ConfigError as e:
                    raise ConfigError(f"variant {variant}: {e}") from e
            record["saved_model"], saved_check = saved[source]
            record["saved_model_max_abs_diff"] = saved_check["max_abs_diff"]
        logging.info("%s: accuracy %.4f, %d bytes (gzip %d), %.3f ms", variant, record["accuracy"],
                     size, gzipped, record["latency_ms"])
        records.append(record)
    return records


def markdown(records, latency_runs):
    """The records as a Markdown table, ratios against the float32 variant where there is one."""
    base = next((r for r in records if r["variant"] == "float32"), None)

    def ratio(r, key):
        return f" ({r[key] / base[key]:.2f}x)" if base else ""

    def points(r):
        return f" ({100 * (r['accuracy'] - base['accuracy']):+.1f})" if base else ""

    lines = [
        "| variant | size (bytes) | gzip (bytes) | accuracy (pts vs float32) | eval loss | "
        f"latency ms, batch 1, median of {latency_runs} | sparsity | max abs diff vs Keras |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['variant']} | {r['size_bytes']}{ratio(r, 'size_bytes')} | {r['gzip_bytes']}"
            f"{ratio(r, 'gzip_bytes')} | {r['accuracy']:.4f}{points(r)} | {r['eval_loss']:.4f} | "
            f"{r['latency_ms']:.4f}{ratio(r, 'latency_ms')} | {r['sparsity']:.3f} | "
            f"{r['max_abs_diff_vs_keras']:.3g} |")
    return "\n".join(lines) + "\n"
