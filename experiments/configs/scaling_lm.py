"""The main job: a scaling sweep of byte-level transformer LMs on `pycode`, then fit and plan.

`python -m experiments.scaling --config=experiments/configs/scaling_lm.py --workdir=DIR` trains
5 sizes (about 57 k to 3 M non-embedding parameters) on 3 data budgets each, fits
L(N, D) = E + A/N^alpha + B/D^beta with bootstrap intervals, picks the compute-optimal size for
`scaling.compute_budget`, trains it with gradient accumulation, compresses and exports it.
`experiments.sweep` runs the sweep part alone. Variant `tiny`: seconds, for tests.

Learning rates per size come from a search sweep (README, "Scaling laws"); every run's schedule
is warmup (5 % of its updates) then cosine to its own last update.
"""
import ml_collections

from experiments.configs import lm
from tfscale.errors import ConfigError
from tfscale.scaling.sweep import sweep_defaults

SHAPE = "num_layers={},d_model={},num_heads={},d_ff={}"
# label -> (num_layers, d_model, num_heads, peak learning rate)
SIZES = {
    None: {"n14k": (2, 24, 2, 3e-3), "n25k": (2, 32, 2, 3e-3), "n57k": (2, 48, 2, 2.5e-3),
           "n150k": (3, 64, 4, 2e-3), "n448k": (4, 96, 4, 1.5e-3)},
    "tiny": {"a": (1, 8, 2, 1e-2), "b": (1, 16, 2, 1e-2), "c": (2, 16, 2, 1e-2), "e": (2, 24, 2, 1e-2)},
}
# Sizes the final model may take: the sweep's, and shapes between and beyond them.
CANDIDATES = {
    None: {"n6k": (2, 16, 2, 3e-3), "n40k": (2, 40, 2, 2.8e-3), "n95k": (2, 64, 4, 2.2e-3),
           "n260k": (3, 84, 4, 1.8e-3), "n650k": (4, 116, 4, 1.3e-3), "n1.2M": (4, 160, 4, 1e-3)},
    "tiny": {"d": (1, 12, 2, 1e-2)},
}
TOKENS = {None: (4e5, 8e5, 1.6e6), "tiny": (4096, 8192)}
SEQ_LEN = {None: 64, "tiny": 16}
BATCH = {None: 4, "tiny": 8}


def size_entry(label, shape):
    layers, d_model, heads, lr = shape
    return f"{label}: {SHAPE.format(layers, d_model, heads, 4 * d_model)},optimizer.learning_rate={lr}"


def get_config(arg=None):
    arg = arg or None
    if arg not in SIZES:
        raise ConfigError(f"unknown variant {arg!r}; variants: tiny")
    c = lm.get_config("tiny" if arg else None)
    c.unlock()
    c.model.seq_len = SEQ_LEN[arg]
    c.train.batch_size = BATCH[arg]
    c.train.steps_per_execution = 8 if arg is None else 1  # small steps: amortise the per-call overhead
    c.train.log_every_steps = 200 if arg is None else 4
    c.checkpoint.every_steps = 500 if arg is None else 4
    c.eval.max_examples = 1024 if arg is None else 64  # held-out windows each run's loss is measured on
    c.export.saved_model = False  # sweep runs are measured, not shipped

    c.sweep = sweep_defaults()
    c.sweep.sizes = tuple(size_entry(k, v) for k, v in SIZES[arg].items())
    c.sweep.num_tokens = TOKENS[arg]

    c.scaling = ml_collections.ConfigDict()
    c.scaling.compute_budget = 3e11 if arg is None else 0.0  # FLOPs of the final model; 0 = the sweep's largest run
    c.scaling.candidate_sizes = tuple(size_entry(k, v) for k, v in {**SIZES[arg], **CANDIDATES[arg]}.items())
    c.scaling.flops = "model"  # the runs' own FLOP counts (attention included), or 6nd
    c.scaling.bootstrap = 200 if arg is None else 20
    c.scaling.grid_stride = 3 if arg is None else 37  # every k-th start of the 4,500-point fit grid
    c.scaling.accum_steps = 2  # the final model trains with gradient accumulation
    c.compress.variants = "float32,dynamic_range,float16"
    c.compress.eval_examples = 256 if arg is None else 32  # held-out windows run through each .tflite
    c.compress.latency_runs = 50 if arg is None else 5
    return c.lock()
