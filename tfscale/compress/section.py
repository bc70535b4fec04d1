"""The `compress` section of a config: its defaults and its checks, asking the variant table.

`validate` checks what the config says, before anything runs; `check_network` what the built
network must allow (pruning and QAT clone it), before the workdir is written. Both raise
ConfigError with one line.
"""
import ml_collections

from tfscale import values
from tfscale.compress import variants
from tfscale.errors import ConfigError, require


def defaults():
    """The `compress` section: what `experiments.compress` makes of a trained model."""
    c = ml_collections.ConfigDict()
    c.variants = ",".join(v for v, row in variants.VARIANTS.items() if row.default)  # comma-separated
    c.finetune_steps = 200  # optimizer updates of each fine-tuning phase (pruning, QAT)
    c.learning_rate = 3e-4  # peak learning rate of fine-tuning (config.schedule over finetune_steps)
    c.int8_io = False  # int8 variants take int8 inputs and give int8 outputs
    c.representative_examples = 256  # training examples that calibrate post-training int8
    c.eval_examples = 0  # held-out examples run through each .tflite; 0 = all
    c.latency_runs = 200  # batch-1 invocations timed per variant (the median is reported)
    c.prune = ml_collections.ConfigDict()
    c.prune.target_sparsity = 0.8
    c.prune.begin_step = 0  # in optimizer updates of the fine-tuning phase
    c.prune.end_step = 100  # sparsity reaches the target exactly at this update
    c.prune.frequency = 10  # updates between mask updates; must divide end_step - begin_step
    c.prune.exclude = ""  # comma-separated layer names kept dense
    c.distill = ml_collections.ConfigDict()
    c.distill.teacher_workdir = ""  # "" = the model trained in the workdir teaches
    c.distill.temperature = 4.0
    c.distill.alpha = 0.1  # weight of the hard-label loss; 1 - alpha for the teacher's
    c.distill.steps = 0  # optimizer updates of the student; 0 = train.num_steps
    c.distill.learning_rate = 0.0  # the students' peak rate; 0 = optimizer.learning_rate (the teacher's)
    c.distill.student = ml_collections.ConfigDict()  # a `model` section: name + knobs
    # A transfer set: a data name whose training inputs (labels unused) the teacher also labels,
    # added to every update of the distilled student; "" = the labelled training data only.
    c.distill.transfer_data = ""
    c.distill.transfer_batch_size = 0  # transfer examples per update; 0 = train.batch_size
    return c


def validate(config):
    """Checks the `compress` section for `experiments.compress`."""
    c = config.compress
    wanted = values.names(c.variants)
    require(wanted, "compress.variants is empty; choose from " + ", ".join(variants.VARIANTS))
    for v in wanted:
        require(v in variants.VARIANTS, f"unknown compress variant {v!r}; choose one of "
                                       f"{', '.join(sorted(variants.VARIANTS))}")
    require(len(set(wanted)) == len(wanted), f"compress.variants names a variant twice: {c.variants}")
    require(c.representative_examples >= 1,
           f"compress.representative_examples must be >= 1, got {c.representative_examples}")
    require(c.eval_examples >= 0, f"compress.eval_examples must be >= 0, got {c.eval_examples}")
    require(c.latency_runs >= 1, f"compress.latency_runs must be >= 1, got {c.latency_runs}")
    require(c.learning_rate >= 0, f"compress.learning_rate must be >= 0, got {c.learning_rate}")
    phases = variants.phases(wanted)
    if phases & set(variants.FINETUNED):
        require(c.finetune_steps >= 1, f"compress.finetune_steps must be >= 1, got {c.finetune_steps}")
    if "prune" in phases:
        _validate_prune(c.prune, c.finetune_steps)
    if "distill" in phases:
        _validate_distill(c.distill)


def check_network(config, network):
    """Refuses, naming the layer, the variants whose fine-tuning `network` cannot go through:
    pruning and QAT fine-tune a keras.models.clone_model copy, QAT wraps every layer for tfmot.
    Cheap and free of side effects; called before anything is trained."""
    reasons = {}

    def refusal(variant):
        for phase in sorted(variants.phases([variant])):
            if phase not in reasons:
                reasons[phase] = _refusal(phase, network)
            if reasons[phase]:
                return reasons[phase]
        return None

    for v in values.names(config.compress.variants):
        why = refusal(v)
        if why:
            raise ConfigError(f"compress variant {v} is not available for {config.model.name} ({why}); "
                              f"use {', '.join(u for u in variants.VARIANTS if not refusal(u))}")


def _refusal(phase, network):
    if phase not in variants.FINETUNED:
        return None
    failure = _clone_failure(network)
    if failure:
        return f"pruning and QAT clone the network, and {failure}"
    if phase == "qat":
        from tfscale.compress import quantize  # pylint: disable=import-outside-toplevel  (tfmot)
        layer = quantize.foreign_layer(network)
        if layer is not None:
            return (f"QAT wraps every layer for tfmot, which takes Keras' own layers only, and its "
                    f"layer {layer.name} ({type(layer).__name__}) is not one")
    return None


def _clone_failure(network):
    """Why keras.models.clone_model would fail on `network`, in one line, or None.

    clone_model rebuilds every layer from its config; that is tried here layer by layer, with
    no weights made and no random state drawn (a trial clone would do both, and one in a
    throwaway graph invalidates the network itself).
    """
    for layer in network.layers:
        try:
            type(layer).from_config(layer.get_config())
        except Exception as e:  # pylint: disable=broad-except  (whatever a layer raises)
            return f"its layer {layer.name} ({type(layer).__name__}) cannot be cloned: {_sentence(e)}"
    return None


def _sentence(error):
    """The first sentence of an exception's message (Keras' span paragraphs and examples)."""
    text = " ".join(str(error).strip().split("\n\n")[0].split()) or type(error).__name__
    return text.split(". ")[0].rstrip(".")[:200]


def _validate_prune(p, finetune_steps):
    require(0 < p.target_sparsity < 1,
           f"compress.prune.target_sparsity must be in (0, 1), got {p.target_sparsity}")
    require(p.begin_step >= 0, f"compress.prune.begin_step must be >= 0, got {p.begin_step}")
    require(p.end_step > p.begin_step, f"compress.prune.end_step {p.end_step} must be after "
                                      f"compress.prune.begin_step {p.begin_step}")
    require(p.end_step <= finetune_steps,
           f"compress.prune.end_step {p.end_step} is beyond compress.finetune_steps "
           f"{finetune_steps}: the target sparsity {p.target_sparsity} would never be reached")
    require(p.frequency >= 1, f"compress.prune.frequency must be >= 1, got {p.frequency}")
    window = p.end_step - p.begin_step
    require(p.frequency <= window,
           f"compress.prune.frequency {p.frequency} is longer than the pruning window end_step - "
           f"begin_step = {window}: the mask would be updated only at update {p.begin_step}, at "
           "sparsity 0, and the model would stay dense")
    last = p.begin_step + window // p.frequency * p.frequency
    require(window % p.frequency == 0,
           f"compress.prune.frequency {p.frequency} does not divide end_step - begin_step = "
           f"{window}: the last mask update would be at update {last}, below the target sparsity "
           f"{p.target_sparsity} (use end_step {last} or {last + p.frequency})")


def _validate_distill(d):
    from tfscale import models  # pylint: disable=import-outside-toplevel  (imports TensorFlow)

    require(d.temperature > 0, f"compress.distill.temperature must be > 0, got {d.temperature}")
    require(0 <= d.alpha <= 1, f"compress.distill.alpha must be in [0, 1], got {d.alpha}")
    require(d.steps >= 0, f"compress.distill.steps must be >= 0, got {d.steps}")
    require(d.get("learning_rate", 0.0) >= 0,
            f"compress.distill.learning_rate must be >= 0 (0: optimizer.learning_rate), got {d.get('learning_rate')}")
    require(d.get("transfer_batch_size", 0) >= 0,
            f"compress.distill.transfer_batch_size must be >= 0, got {d.get('transfer_batch_size')}")
    require("name" in d.student, "compress.distill.student has no model name; set "
                                "compress.distill.student.name and its knobs in the config")
    require(d.student.name in models.MODELS, f"unknown compress.distill.student model {d.student.name!r}; "
                                            f"choose one of {', '.join(sorted(models.MODELS))}")
    try:
        models.check_knobs(d.student)
    except ConfigError as e:
        raise ConfigError(f"compress.distill.student: {e}") from None
