"""digits_cnn with a `tune` section: learning rate, weight decay and width by TPE with median
pruning, chosen on a validation split carved out of the training data (docs/tuning.md).

  python -m experiments.tune --config=experiments/configs/digits_cnn_tune.py --workdir=DIR

Trials train on the first 80 % of `train` and are judged on the other 20 % (never on `test`);
best_config.py trains the best values on the whole `train` split and evaluates on `test`.
Variants: default, `tiny` (the tiny CNN, 4 trials of 40 updates: tests and smoke runs).
"""
from experiments.configs import digits_cnn
from tfscale import tuning


def get_config(arg=None):
    c = digits_cnn.get_config(arg)
    c.unlock()
    c.data.train_split = "train[:80%]"  # 1,150 images
    c.data.eval_split = "train[80%:]"  # 287 images: the validation split trials are judged on
    c.eval.every_steps = 25  # the pruner's intermediate values: validation loss every 25 updates
    # A trial is judged on its last weights, as the final run (no periodic evaluation) will be.
    c.train.early_stopping.restore_best = False
    c.export.saved_model = False  # trials are measured, not served
    c.tune = tuning.defaults()
    c.tune.space = (
        "optimizer.learning_rate=loguniform(1e-3, 1e-1)",
        "optimizer.weight_decay=loguniform(1e-5, 1e-1)",
        "model.width=int(8, 256, log)",
    )
    c.tune.num_trials = 20
    c.tune.metric = "eval_loss"
    c.tune.sampler_startup_trials = 5  # random trials before TPE models the good region
    c.tune.pruner = "median"
    c.tune.pruner_startup_trials = 3  # trials that run to the end before any is pruned
    c.tune.pruner_warmup_steps = 50  # none is pruned during the learning-rate warmup (30 updates)
    # The final run: all of train, evaluated on test once at the end (no periodic evaluation:
    # nothing may be chosen on test), exported like the default config's.
    c.tune.best_config_overrides = ("data.train_split=train", "data.eval_split=test",
                                    "eval.every_steps=0", "export.saved_model=true")
    if arg == "tiny":
        c.train.num_steps = 40
        c.eval.every_steps = 10
        c.tune.num_trials = 4
        c.tune.sampler_startup_trials = 2
        c.tune.pruner_startup_trials = 1
        c.tune.pruner_warmup_steps = 0
        c.tune.heartbeat_seconds = 1
    return c.lock()
