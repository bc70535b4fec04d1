"""`experiments.compress`: train (or load) the baseline, make every variant, measure, report.

workdir/compress/VARIANT.tflite, workdir/compress/SOURCE/saved_model, workdir/compression.json
and workdir/compression.md, all written through `tfscale.io` (a `gs://` workdir works). The
fine-tuning phases are not checkpointed: they are short, and a re-run repeats them from the
trained baseline.
"""
import time

from tfscale import config as config_lib, io, models, training
from tfscale import values, workdir as workdir_lib
from tfscale.compress import artifacts, distill, section, variants


def _check_before_training(config):
    config_lib.validate(config)
    section.validate(config)
    teacher_dir = config.compress.distill.teacher_workdir
    if teacher_dir and "distill" in variants.phases(values.names(config.compress.variants)):
        workdir_lib.load_config(teacher_dir)  # a ConfigError if it is not a run


def compress(config, workdir):
    """Trains (or loads) `config` in `workdir`, writes every variant of `compress.variants` and
    `compression.json` / `compression.md`; returns the report and the Markdown table."""
    t0 = time.time()
    _check_before_training(config)
    # The network is checked against the wanted variants as soon as it is built: a refused
    # variant fails before the workdir is written or anything is trained.
    with training.Run(config, workdir, check_network=section.check_network) as run:
        run.train()  # resumes, or returns at once if the run is finished
        return compress_run(run, t0)


def compress_run(run, t0=None):
    """Every variant of `run.config.compress.variants` from the trained `run` (its network holds
    the final weights), written into its workdir; returns the report and the Markdown table."""
    t0 = time.time() if t0 is None else t0
    config, workdir = run.config, run.workdir
    c = config.compress
    names = values.names(c.variants)
    d = c.distill
    teacher = (distill.load_teacher(d.teacher_workdir, workdir_lib.load_config(d.teacher_workdir), run)
               if d.teacher_workdir and "distill" in variants.phases(names) else None)
    networks, reports = variants.build(run, names, teacher)
    records = artifacts.export_variants(
        networks, run.data, io.join(workdir, "compress"), names, int8_io=c.int8_io,
        representative_examples=c.representative_examples, eval_examples=c.eval_examples,
        latency_runs=c.latency_runs, sparsity_reports=reports)
    report = {
        "variants": records,
        "latency": f"batch 1, 1 interpreter thread, median of {c.latency_runs} invocations",
        "model": config.model.name,
        "data": config.data.name,
        "num_params": {k: models.num_params(v) for k, v in networks.items()},
        "wall_seconds": time.time() - t0,
    }
    io.write_json(io.join(workdir, "compression.json"), report)
    table = artifacts.markdown(records, c.latency_runs)
    io.write_bytes(io.join(workdir, "compression.md"),
                   f"# {config.model.name} on {config.data.name}: compressed variants\n\n{table}")
    return report, table
