"""The compression variants: where each one's network comes from, whether that network is
fine-tuned, and how it is converted to TFLite: the tables VARIANTS and SOURCES, after the makers.

Validation (`section`), the pipeline and the export (`artifacts`) ask these tables and name no
variant themselves: a variant is one row of VARIANTS, a new kind of network one row of SOURCES
and its maker here. Light to import: only the makers load TensorFlow and tfmot.
"""
import collections
import functools

# Fine-tuning phases. "prune" and "qat" train a keras.models.clone_model copy of their start
# for compress.finetune_steps updates ("prune" under compress.prune); "distill" trains
# compress.distill.student from scratch for compress.distill.steps.
FINETUNED = ("prune", "qat")

Variant = collections.namedtuple("Variant", "source mode default")
Source = collections.namedtuple("Source", "phase start saved_model make")


def _fit(run, make_model, seed_offset, name):
    from tfscale.compress import finetune  # pylint: disable=import-outside-toplevel

    c = run.config.compress
    return finetune.fit(run, make_model, c.finetune_steps, c.learning_rate, seed_offset, name).network


def _pruned(run, start, structured=False):
    from tfscale.compress import prune  # pylint: disable=import-outside-toplevel  (tfmot)

    c, k = run.config.compress, run.config.train.accum_steps
    network = _fit(run, lambda: prune.PruningModel(prune.apply(start[0], c.prune, structured), k),
                   1, "pruning 2:4" if structured else "pruning")
    stripped = prune.strip(network)
    return stripped, prune.sparsity_report(stripped)


def _qat(run, start, preserve_sparsity=False):
    """QAT keeps its start's sparsity (PQAT) and so its sparsity report."""
    from tfscale.compress import quantize  # pylint: disable=import-outside-toplevel  (tfmot)

    k = run.config.train.accum_steps
    network = _fit(run, lambda: quantize.QATModel(quantize.apply(start[0], preserve_sparsity), k),
                   3 if preserve_sparsity else 2, "PQAT" if preserve_sparsity else "QAT")
    return network, start[1]


def _student(run, start, distilled=True):
    """compress.distill.student, taught by `start` (the trained network, or the teacher `build`
    was given) or trained alone on the labels: same initial weights, updates and data order."""
    import tf_keras as keras  # pylint: disable=import-outside-toplevel
    from tfscale import models, trainer  # pylint: disable=import-outside-toplevel
    from tfscale.compress import distill, finetune  # pylint: disable=import-outside-toplevel

    d, k = run.config.compress.distill, run.config.train.accum_steps
    teacher = start[0] if distilled else None

    def model():
        keras.utils.set_random_seed(run.config.seed)  # both students start from the same weights
        network = models.build(d.student, run.data.info)
        if teacher is None:
            return trainer.AccumulatingModel(network, k)
        return distill.DistillationModel(network, teacher, k, d.temperature, d.alpha)

    steps = d.steps or run.config.train.num_steps
    name = "distillation" if distilled else "student alone"
    transfer = d.get("transfer_data", "") if distilled else ""
    dataset_fn = distill.transfer_dataset_fn(run, transfer, d.get("transfer_batch_size", 0), steps) if transfer else None
    rate = d.get("learning_rate", 0.0) or run.config.optimizer.learning_rate
    return finetune.fit(run, model, steps, rate, 0, name, dataset_fn=dataset_fn).network, None


# network source -> Source(fine-tuning phase (None: the trained network as it is), the source
# it starts from, whether a SavedModel is written beside its .tflite files (QAT networks ship as
# their int8 .tflite), make(run, (start network, start's sparsity report)) -> (network, report)).
# Listed so that a source comes after the one it starts from.
SOURCES = {
    "float32": Source(None, None, True, None),  # the trained network
    "pruned": Source("prune", "float32", True, _pruned),
    "pruned_2x4": Source("prune", "float32", True, functools.partial(_pruned, structured=True)),
    "qat": Source("qat", "float32", False, _qat),
    "pqat": Source("qat", "pruned", False, functools.partial(_qat, preserve_sparsity=True)),
    "distilled": Source("distill", "float32", True, _student),
    "student_alone": Source("distill", None, True, functools.partial(_student, distilled=False)),
}

# variant -> Variant(network source, TFLite mode (tflite.MODES), in compress.variants by default)
VARIANTS = {
    "float32": Variant("float32", "float32", True),
    "dynamic_range": Variant("float32", "dynamic_range", True),
    "int8": Variant("float32", "int8", True),
    "float16": Variant("float32", "float16", True),
    "pruned": Variant("pruned", "float32", True),
    "pruned_int8": Variant("pruned", "int8", True),
    "pruned_2x4": Variant("pruned_2x4", "float32", True),
    "qat_int8": Variant("qat", "qat", True),
    "pqat_int8": Variant("pqat", "qat", False),
    "distilled": Variant("distilled", "float32", False),
    "student_alone": Variant("student_alone", "float32", False),
    "distilled_int8": Variant("distilled", "int8", False),
    "distilled_dynamic_range": Variant("distilled", "dynamic_range", False),
}


def sources(variants):
    """The sources `variants` are converted from, and those they start from, in table order."""
    wanted, todo = set(), [VARIANTS[v].source for v in variants]
    while todo:
        name = todo.pop()
        if name and name not in wanted:
            wanted.add(name)
            todo.append(SOURCES[name].start)
    return [name for name in SOURCES if name in wanted]


def phases(variants):
    """The fine-tuning phases making `variants` takes."""
    return {SOURCES[s].phase for s in sources(variants)} - {None}


def build(run, variants, teacher=None):
    """({source: network}, {source: sparsity report}) for `variants`, made from `run`'s network
    through its trainer set-up; the trained network is always there, as "float32". `teacher`:
    another run's network (`distill.load_teacher`) that teaches instead of the trained one."""
    made = {"float32": (run.network, None)}
    for name in sources(variants):
        source = SOURCES[name]
        if source.make is not None:
            start = made.get(source.start)
            if teacher is not None and source.phase == "distill" and source.start:
                start = (teacher, None)
            made[name] = source.make(run, start)
    return ({name: network for name, (network, _) in made.items()},
            {name: report for name, (_, report) in made.items() if report is not None})
