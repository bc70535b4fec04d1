"""The BERT-style recipe's stages on the standard library's source: masked-LM pretraining of an
encoder on `pycode`, then classifying which package a 128-byte window comes from
(`pycode_package`), fine-tuned from the pretrained run or trained from scratch.

  python -m experiments.train --config=experiments/configs/text_classifier.py:pretrain --workdir=runs/tc/pretrain
  python -m experiments.train --config=experiments/configs/text_classifier.py:finetune \
      --config.model.init_from=runs/tc/pretrain --workdir=runs/tc/finetune
  python -m experiments.train --config=experiments/configs/text_classifier.py:scratch --workdir=runs/tc/scratch

Add `,tiny` to a stage (`:pretrain,tiny`) for a seconds-long smoke run.
"""
from tfscale.config import defaults
from tfscale.errors import ConfigError

ENCODER = {None: dict(num_layers=2, d_model=64, num_heads=4, d_ff=256, seq_len=128),
           "tiny": dict(num_layers=1, d_model=32, num_heads=2, d_ff=64, seq_len=128)}
STEPS = {None: {"pretrain": 2000, "finetune": 800, "scratch": 800},
         "tiny": {"pretrain": 20, "finetune": 20, "scratch": 20}}
STAGES = ("pretrain", "finetune", "scratch")


def get_config(arg="pretrain"):
    stage, _, size = (arg or "pretrain").partition(",")
    size = size or None
    if stage not in STAGES or size not in ENCODER:
        raise ConfigError(f"unknown variant {arg!r}; stages: {', '.join(STAGES)}, each optionally ',tiny'")
    c = defaults()
    c.model.name = "transformer_encoder"
    for key, value in ENCODER[size].items():
        c.model[key] = value
    c.model.dropout = 0.1 if stage != "pretrain" else 0.0
    c.train.batch_size = 32
    c.train.num_steps = STEPS[size][stage]
    c.train.log_every_steps = 100 if size is None else 5
    c.checkpoint.every_steps = 200 if size is None else 10
    c.optimizer.name = "adamw"
    c.optimizer.weight_decay = 0.01
    c.optimizer.global_clipnorm = 1.0
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_steps = c.train.num_steps // 10
    c.eval.batch_size = 256
    if stage == "pretrain":
        c.data.name, c.data.eval_split = "pycode", "validation"
        c.data.mask_rate, c.train.loss = 0.15, "masked_lm"
        c.optimizer.learning_rate = 2e-3
        c.eval.max_examples = 1024
        c.export.saved_model = False
    else:
        c.data.name, c.data.eval_split = "pycode_package", "validation"
        c.optimizer.learning_rate = 5e-4 if stage == "finetune" else 1e-3
        c.eval.every_steps = 100 if size is None else 10
        if stage == "finetune":
            c.model.init_from = ""  # the pretrain run's workdir (--config.model.init_from=DIR)
    return c.lock()
