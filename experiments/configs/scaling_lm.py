"""The main job: a scaling sweep of byte-level transformer LMs on `pycode`, then fit and plan.

`python -m experiments.scaling --config=experiments/configs/scaling_lm.py --workdir=DIR` trains
4 sizes (22 k to 171 k parameters, embeddings included) on 5 data budgets each, fits
L(N, D) = E + A/N^alpha + B/D^beta with bootstrap intervals, picks the compute-optimal size for
`scaling.compute_budget`, trains it and its two neighbouring sizes at that compute (side by
side), compresses and exports it.
`experiments.sweep` runs the sweep part alone. Variant `tiny`: seconds, for tests; `gpu`: one
GPU host (see `_gpu` for its sizes and the arithmetic of its time); `wide` and `long`: wider
ranges in N and D, each measured once for what narrower exponent intervals take (README).

Learning rates per size come from a search sweep (README, "Scaling laws"). Each size trains once
(warmup, then its peak rate held: the wsd trunk); each data budget is a 20 % 1-sqrt cooldown
branched from the trunk's checkpoint where that cooldown begins (Hägele et al. 2024).
"""
import ml_collections

from experiments.configs import lm
from tfscale.errors import ConfigError
from tfscale.scaling.sweep import sweep_defaults

SHAPE = "num_layers={},d_model={},num_heads={},d_ff={}"
# label -> (num_layers, d_model, num_heads, peak learning rate)
SIZES = {
    None: {"n14k": (2, 24, 2, 3e-3), "n25k": (2, 32, 2, 3e-3), "n57k": (2, 48, 2, 2.5e-3),
           "n150k": (3, 64, 4, 2e-3)},
    "tiny": {"a": (1, 8, 2, 1e-2), "b": (1, 16, 2, 1e-2), "c": (2, 16, 2, 1e-2), "e": (2, 24, 2, 1e-2)},
    # no rates: the gpu sweep searches them (sweep.search) and the job takes the best per size
    "gpu": {"g0": (2, 64, 2), "g1": (3, 96, 4), "g2": (4, 128, 4), "g3": (4, 192, 4), "g4": (6, 256, 4),
            "g5": (8, 320, 5), "g6": (8, 448, 7)},
}
# Sizes the final model may take: the sweep's, and shapes between and beyond them (the job adds
# one beyond the swept range when N_opt falls there). Their learning rates come from a power law
# in N through the swept sizes' rates (`tfscale/scaling/learning_rates.py`).
CANDIDATES = {
    None: {"n6k": (2, 16, 2), "n40k": (2, 40, 2), "n95k": (2, 64, 4), "n260k": (3, 84, 4), "n448k": (4, 96, 4, 1.5e-3),
           "n650k": (4, 116, 4), "n1.2M": (4, 160, 4)},
    "tiny": {"z": (1, 4, 2), "d": (1, 12, 2), "f": (2, 32, 2)},
    "gpu": {"gz": (2, 48, 2), "g1h": (3, 112, 4), "g2h": (4, 160, 4), "g3h": (5, 224, 4), "g4h": (6, 288, 4),
            "g5h": (8, 384, 6), "g7": (10, 512, 8)},
}
# `wide`: the default sweep with a fifth size and a fourth, 2x larger budget (2.2 epochs of pycode):
# what narrower intervals of the fitted exponents take, measured once (README, "The main job").
SIZES["wide"] = {**SIZES[None], "n448k": CANDIDATES[None]["n448k"]}
CANDIDATES["wide"] = {k: v for k, v in CANDIDATES[None].items() if k != "n448k"}
# `long`: the default sizes and four more budgets on the same sqrt(2) ladder, to 25.6 M tokens
# (4.5 epochs of pycode; the trunks 4x longer): what exponent intervals under 0.3 take, measured
# once (42 min; alpha's interval 0.18 wide, beta's 0.36; README, "The main job").
SIZES["long"], CANDIDATES["long"] = SIZES[None], CANDIDATES[None]
PYCODE_EPOCH = 5.74e6  # training bytes of pycode (11,213 windows of 512)
# 6,250 to 25,000 updates of 4 x 64 bytes, sqrt(2) apart: five budgets from one trunk per size
# (a budget between two others costs only its cooldown, 20 % of its length). Below 6,250 updates
# every size ends near the same loss (training is limited by its updates, not by N), which no
# additive law can follow, and a smaller first budget shortens every trunk's warmup.
TOKENS = {None: (1.6e6, 2.26e6, 3.2e6, 4.53e6, 6.4e6), "tiny": (4096, 8192), "gpu": tuple(k * PYCODE_EPOCH for k in (1, 2, 4, 8)),
          "wide": (1.6e6, 3.2e6, 6.4e6, 12.8e6), "long": tuple(round(1.6e6 * 2 ** (k / 2), -4) for k in range(9))}
SEQ_LEN = {None: 64, "wide": 64, "long": 64, "tiny": 16, "gpu": 512}
BATCH = {None: 4, "wide": 4, "long": 4, "tiny": 8, "gpu": 32}


def size_entry(label, shape):
    layers, d_model, heads, *lr = shape
    rate = f",optimizer.learning_rate={lr[0]}" if lr else ""
    return f"{label}: {SHAPE.format(layers, d_model, heads, 4 * d_model)}{rate}"


def get_config(arg=None):
    arg = arg or None
    if arg not in SIZES:
        raise ConfigError(f"unknown variant {arg!r}; variants: tiny, gpu, wide, long")
    c = lm.get_config("tiny" if arg == "tiny" else None)
    c.unlock()
    c.model.seq_len = SEQ_LEN[arg]
    c.train.batch_size = BATCH[arg]
    cpu = arg in (None, "wide", "long")
    c.train.steps_per_execution = 8 if cpu else 1  # small steps: amortise the per-call overhead
    c.train.log_every_steps = 200 if cpu else 4
    c.checkpoint.every_steps = 500 if cpu else 4
    c.eval.max_examples = 1024 if cpu else 64  # held-out windows each run's loss is measured on
    c.export.saved_model = False  # sweep runs are measured, not shipped

    c.sweep = sweep_defaults()
    c.sweep.sizes = tuple(size_entry(k, v) for k, v in SIZES[arg].items())
    c.sweep.num_tokens = TOKENS[arg]
    # One constant-rate trunk per size, each budget a 20 % 1-sqrt cooldown branched from it.
    c.sweep.schedule = "wsd"
    c.sweep.workers = 1 if arg == "tiny" else 0  # 0: as many runs at once as the cores or GPUs allow

    c.scaling = ml_collections.ConfigDict()
    c.scaling.compute_budget = 2e12 if cpu else 0.0  # FLOPs of the final model; 0 = the sweep's largest run
    c.scaling.candidate_sizes = tuple(size_entry(k, v) for k, v in {**SIZES[arg], **CANDIDATES[arg]}.items())
    c.scaling.flops = "model"  # the runs' own FLOP counts (attention included), or 6nd
    c.scaling.params = "total"  # N and C count embeddings and logits; or non_embedding (Kaplan)
    c.scaling.bootstrap = 200 if cpu else 20
    c.scaling.grid_stride = 3 if cpu else 37  # every k-th start of the 4,500-point fit grid
    c.scaling.accum_steps = 2  # the final model trains with gradient accumulation
    c.scaling.max_added_sizes = 3  # sizes the job may add beyond the sweep to bracket N_opt
    c.scaling.check_workers = 0  # the plan check's pool; 0: one worker per model on CPUs, the sweep's on GPUs
    c.compress.variants = "float32,dynamic_range,float16"
    c.compress.eval_examples = c.eval.max_examples  # the same held-out windows as the runs' eval_loss
    c.compress.latency_runs = 50 if cpu else 5
    if arg == "gpu":
        _gpu(c)
    return c.lock()


def _gpu(c):
    """One GPU host. Sizes g0-g6 (0.15 M to 20 M parameters, embeddings included) x 1, 2, 4 and
    8 epochs of pycode x 3 learning rates; the plan for C = 1e15 FLOPs and its check.

    FLOPs (the models' own counts per token at context 512: g0 1.49e6, g1 3.93e6, g2 8.10e6,
    g3 1.57e7, g4 3.83e7, g5 7.54e7, g6 1.39e8; sum 2.81e8):
      sweep       2.81e8 x (1 + 2 + 4 + 8) x 5.74e6 tokens x 3 rates = 7.3e16
      plan check  3 sizes x 1e15                                    = 3e15
      total 7.6e16 / (0.4 x 989e12 FLOP/s, 40 % MFU of an H100 in bf16) = 190 s;
      each size added beyond g6 (g7: 2.21e8 per token) adds 5.7e16, 145 s.
    pycode holds 5.7 M training bytes, so D stops at 8 epochs (repeats beyond ~4 already cost
    loss, Muennighoff et al. 2023) and N near 20 M: larger models would only memorise. An hour
    of FLOPs (1.4e18) needs a corpus about 20x larger. Wall time will be longer than the FLOPs
    say (84 short runs each build and compile their graphs; MFU at d_model <= 448 is well below
    40 %); it has not been measured.
    """
    c.train.steps_per_execution = 16
    c.train.log_every_steps = 100
    c.checkpoint.every_steps = 400
    c.eval.max_examples = 0  # all 557 held-out windows
    c.sweep.search = "optimizer.learning_rate=1e-3,2e-3,4e-3"
    c.scaling.compute_budget = 1e15
    c.scaling.bootstrap = 200
    c.scaling.grid_stride = 1  # all 4,500 starts
    c.compress.eval_examples = 256
    c.compress.latency_runs = 50
