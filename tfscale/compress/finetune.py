"""Fine-tuning phases (pruning, QAT, distillation) through the run's own trainer set-up.

Each phase is a fresh optimizer of the config's kind with its schedule stretched over the
phase's updates, the run's strategy, precision and accumulation, and the run's input pipeline
(order a function of seed and step, as in training).
"""
from absl import logging

from tfscale import optim, precision, trainer


def phase_config(config, steps, learning_rate):
    """The run's config with `steps` updates at peak `learning_rate` (warmup kept in range)."""
    c = config.copy_and_resolve_references()
    c.unlock()
    c.train.num_steps = steps
    c.optimizer.learning_rate = learning_rate
    c.schedule.warmup_steps = min(c.schedule.warmup_steps, steps // 10)
    return c


def fit(run, make_model, steps, learning_rate, seed_offset=0, name="phase", callbacks=(), dataset_fn=None):
    """Builds `make_model()` (an AccumulatingModel) in the run's strategy scope, compiles it like
    the run's model and trains it for `steps` optimizer updates; returns it. `dataset_fn`
    (global batch size, seed) -> `dataset_fn(input_context)` replaces the run's training data."""
    c = phase_config(run.config, steps, learning_rate)
    with run.strategy.scope():
        model = make_model()
        optimizer = precision.wrap_optimizer(optim.build_optimizer(c, model.network), run.policy)
        optimizer.build(model.network.trainable_variables)
        trainer.compile_model(model, optimizer, c.train.loss)
    make = dataset_fn or (lambda batch, seed: run.data.train_dataset_fn(batch, seed, 0, steps))
    train_fn = make(c.train.batch_size, c.seed + seed_offset)
    dataset = run.strategy.distribute_datasets_from_function(train_fn)
    history = model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=list(callbacks))
    logging.info("%s: %d updates, final training loss %.4f", name, steps, history.history["loss"][-1])
    return model
