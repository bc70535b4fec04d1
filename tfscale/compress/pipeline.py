"""`experiments.compress`: train (or load) the baseline, make every variant, measure, report.

workdir/compress/VARIANT.tflite, workdir/compress/SOURCE/saved_model, workdir/compression.json
and workdir/compression.md. Fine-tuning phases are not checkpointed: they are short, and a
re-run repeats them from the trained baseline.
"""
import os
import time

from absl import logging
import tensorflow as tf
import tf_keras as keras

from tfscale import checkpoint, config as config_lib, io, models, run as run_lib, trainer
from tfscale import workdir as workdir_lib
from tfscale.compress import distill, finetune, variants as variants_lib
from tfscale.errors import ConfigError


def load_teacher(teacher_workdir, run):
    """The trained network of another workdir (same data set), in the run's strategy scope."""
    tconfig = workdir_lib.load_config(teacher_workdir)
    if tconfig.data.name != run.config.data.name:
        raise ConfigError(f"teacher in {teacher_workdir} was trained on {tconfig.data.name!r}, "
                          f"not {run.config.data.name!r}")
    path = tf.train.latest_checkpoint(os.path.join(teacher_workdir, "checkpoints"))
    if path is None:
        raise ConfigError(f"teacher workdir {teacher_workdir} has no checkpoint")
    with run.strategy.scope():
        teacher = models.build(tconfig.model, run.data.info)
    tf.train.Checkpoint(network=teacher).restore(path).expect_partial()
    logging.info("teacher: %s (%d params) from %s", tconfig.model.name, models.num_params(teacher), path)
    return teacher


def _check_before_training(config):
    config_lib.validate(config)
    config_lib.validate_compress(config)
    teacher_dir = config.compress.distill.teacher_workdir
    wants_student = any(v in ("distilled", "student_alone") for v in config_lib.names(config.compress.variants))
    if teacher_dir and wants_student:
        workdir_lib.load_config(teacher_dir)  # a ConfigError if it is not a run


def build_networks(run, wanted):
    """The Keras networks the wanted sources need, fine-tuned or trained through the trainer."""
    from tfscale.compress import prune, quantize  # pylint: disable=import-outside-toplevel  (tfmot)

    c, k = run.config.compress, run.config.train.accum_steps
    networks, reports = {"float32": run.network}, {}

    def pruned(structured):
        model = finetune.fit(run, lambda: prune.PruningModel(prune.apply(run.network, c.prune, structured), k),
                             c.finetune_steps, c.learning_rate, 1, "pruning 2:4" if structured else "pruning")
        stripped = prune.strip(model.network)
        return stripped, prune.sparsity_report(stripped)

    if wanted & {"pruned", "pqat"}:
        networks["pruned"], reports["pruned"] = pruned(False)
    if "pruned_2x4" in wanted:
        networks["pruned_2x4"], reports["pruned_2x4"] = pruned(True)
    if "qat" in wanted:
        networks["qat"] = finetune.fit(run, lambda: quantize.QATModel(quantize.apply(run.network), k),
                                       c.finetune_steps, c.learning_rate, 2, "QAT").network
    if "pqat" in wanted:
        networks["pqat"] = finetune.fit(
            run, lambda: quantize.QATModel(quantize.apply(networks["pruned"], preserve_sparsity=True), k),
            c.finetune_steps, c.learning_rate, 3, "PQAT").network
        reports["pqat"] = reports["pruned"]
    if wanted & {"distilled", "student_alone"}:
        d = c.distill
        teacher = load_teacher(d.teacher_workdir, run) if d.teacher_workdir else run.network
        steps = d.steps or run.config.train.num_steps
        lr = run.config.optimizer.learning_rate

        def student():
            keras.utils.set_random_seed(run.config.seed)  # both students start from the same weights
            return models.build(d.student, run.data.info)

        if "distilled" in wanted:
            networks["distilled"] = finetune.fit(
                run, lambda: distill.DistillationModel(student(), teacher, k, d.temperature, d.alpha),
                steps, lr, 0, "distillation").network
        if "student_alone" in wanted:
            networks["student_alone"] = finetune.fit(
                run, lambda: trainer.AccumulatingModel(student(), k), steps, lr, 0, "student alone").network
    return networks, reports


def compress(config, workdir):
    """Trains (or loads) `config` in `workdir`, writes every variant of `compress.variants` and
    `compression.json` / `compression.md`; returns the report."""
    t0 = time.time()
    _check_before_training(config)
    run_lib.train(config, workdir)  # resumes, or returns at once if the run is finished
    run = run_lib.Run(config, workdir)
    checkpoint.restore_latest(run.manager)
    c = config.compress
    names = config_lib.names(c.variants)
    networks, reports = build_networks(run, {variants_lib.VARIANTS[v][0] for v in names})
    records = variants_lib.export_variants(
        networks, run.data, os.path.join(workdir, "compress"), names, int8_io=c.int8_io,
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
    io.write_json(os.path.join(workdir, "compression.json"), report)
    table = variants_lib.markdown(records, c.latency_runs)
    with open(os.path.join(workdir, "compression.md.tmp"), "w", encoding="utf-8") as f:
        f.write(f"# {config.model.name} on {config.data.name}: compressed variants\n\n{table}")
    os.replace(os.path.join(workdir, "compression.md.tmp"), os.path.join(workdir, "compression.md"))
    return report, table
