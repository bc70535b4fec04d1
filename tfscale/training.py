"""One training run, from config to summary.json.

flags + config -> validate -> strategy -> precision -> data -> model (in strategy scope) ->
optimizer + schedule -> accumulating wrapper -> fit with callbacks -> evaluation -> export ->
summary.json. Everything that can be wrong with the config, the devices, the data or the workdir
is checked before the workdir is touched.
"""
import math
import shutil
import signal
import sys
import tempfile
import time

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfscale import (branch, callbacks, checkpoint, config as config_lib, data, distribute, evaluation,
                     export, io, launch, lock, models, optim, periodic_eval, precision, throughput, trainer,
                     warm_start, workdir as workdir_lib)
from tfscale.data import checks as data_checks


def _jit_compile(setting, device_kind, num_replicas):
    """`auto` = XLA on GPU and TPU; never across logical CPU devices, where XLA fails."""
    setting = str(setting).lower()
    on = device_kind != "CPU" if setting == "auto" else setting == "true"
    if on and device_kind == "CPU" and num_replicas > 1:
        logging.warning("train.jit_compile is off: XLA does not run across logical CPU devices")
        on = False
    return on


TPU_STEPS_PER_EXECUTION = 32  # updates per host round trip when train.steps_per_execution=0


def _steps_per_execution(setting, device_kind):
    """`0` (auto) = several updates per call on TPU, where each call is a host round trip."""
    return setting or (TPU_STEPS_PER_EXECUTION if device_kind == "TPU" else 1)


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


class Run:
    """Everything a run is made of, set up and checked; `train()` is the usual entry point."""

    def __init__(self, config, workdir, check_network=None):
        """`check_network(config, network)`: a later job's own check of the built network (e.g.
        the compression variants it can make), run before anything is written."""
        self.config, self.workdir = config, workdir
        config_lib.validate(config)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.strategy = distribute.build_strategy(config.distribute)
        self.num_replicas = self.strategy.num_replicas_in_sync
        config_lib.check_replicas(config, self.num_replicas)
        self.device_kind = distribute.device_kind(self.strategy)
        self.policy = precision.resolve(config.precision, self.device_kind)
        self.jit_compile = _jit_compile(config.train.jit_compile, self.device_kind, self.num_replicas)
        self.steps_per_execution = _steps_per_execution(config.train.steps_per_execution,
                                                        self.device_kind)
        self.data = data.load(config.data, config.model.get("seq_len"), config.seed)
        data.check_batch_size(self.data.info.num_train, config.train.batch_size)
        workdir_lib.check(workdir, config)
        self.tokenizer = self.data.tokenizer()
        workdir_lib.check_tokenizer(workdir, self.tokenizer)
        branch.check(config, workdir)  # train.init_from, before the workdir is written
        warm_start.check(config)  # model.init_from too
        self.chief = _is_chief(self.strategy)
        # One label per example: a classifier (eval.json, probabilities in the export).
        self.classifier = self.data.task == "classifier"
        self._build()  # a model knob Keras would refuse fails here, before any write
        self._check_examples()  # records against their declared shapes, classes and the model
        if check_network is not None:
            check_network(config, self.network)
        # Nothing above writes to the workdir; from here on the run owns it. One process at a
        # time: the chief locks it (the other workers never write there).
        self.lock = lock.WorkdirLock(workdir).acquire() if self.chief else None
        launch.watch_launcher()
        try:
            # Saving is collective, so every worker writes checkpoints and exports; only the
            # chief's land in the workdir, the others go to a temporary folder of their own
            # (`close()` removes it) and every worker resumes from the chief's checkpoints.
            self.own_dir = workdir if self.chief else tempfile.mkdtemp(
                prefix=f"tfscale-worker{self.strategy.cluster_resolver.task_id}-")
            workdir_lib.prepare(self.own_dir, self.config)
            workdir_lib.save_tokenizer(self.own_dir, self.tokenizer)
            self.stopping = periodic_eval.StoppingState()
            self.manager = checkpoint.manager_for(self.own_dir, self.network, self.optimizer,
                                                  self.config.checkpoint.keep,
                                                  objects={"early_stopping": self.stopping})
            self.best = periodic_eval.best_manager(self.own_dir, self.network)
            self.restore_manager = self.manager if self.chief else checkpoint.reader_for(
                self.manager, self.workdir)
        except BaseException:
            self.close()
            raise

    def _build(self):
        c = self.config
        keras.utils.set_random_seed(c.seed)
        keras.backend.experimental.enable_tf_random_generator()  # dropout RNG is checkpointed
        precision.set_policy(self.policy)
        with self.strategy.scope():
            self.network = models.build(c.model, self.data.info)
            self.optimizer = precision.wrap_optimizer(
                optim.build_optimizer(c, self.network, self.jit_compile), self.policy)
            self.optimizer.build(self.network.trainable_variables)
            self.model = trainer.AccumulatingModel(self.network, c.train.accum_steps)
            trainer.compile_model(self.model, self.optimizer, c.train.loss,
                                  steps_per_execution=self.steps_per_execution,
                                  jit_compile=self.jit_compile)

    def _check_examples(self):
        """The first training batch and the evaluated held-out examples, read as training will
        read them, against the data's declared values and the network's output."""
        c, source = self.config, self.data
        output_shape = getattr(self.network, "output_shape", None)
        first = np.arange(min(c.train.batch_size, source.info.num_train))
        self._eval_arrays = source.eval_arrays(c.eval.max_examples)  # what `evaluate` measures, read once
        for split, (inputs, labels) in (("train", source.read("train", first)), ("eval", self._eval_arrays)):
            data_checks.check_examples(source, split, inputs, labels, c.train.loss,
                                       output_shape if isinstance(output_shape, tuple) else None)

    def close(self):
        """Releases the workdir; removes a non-chief worker's temporary folder."""
        if getattr(self, "lock", None) is not None:
            self.lock.release()
        if not self.chief and getattr(self, "own_dir", None):
            shutil.rmtree(self.own_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def train(self, extra_callbacks=(), t0=None):
        """Trains to `train.num_steps`, evaluates, exports and writes summary.json; returns the
        summary. A finished run (summary.json at its last step) does nothing and returns it. The
        network keeps the final weights, so a later job (compression, the plan check) goes on
        from this object rather than rebuilding the run."""
        return _train(self, extra_callbacks, time.time() if t0 is None else t0)

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    def fit(self, extra_callbacks=()):
        """Trains from the newest checkpoint to `train.num_steps`; returns the metrics logger.

        `extra_callbacks` are the caller's own Keras callbacks, run after tfscale's. Raises
        `callbacks.Preempted` when SIGTERM or Ctrl-C stopped training (after saving a
        checkpoint), and `callbacks.Diverged` at the first update that was not finite.
        """
        c = self.config
        if checkpoint.restore_latest(self.restore_manager) is None:  # fresh: maybe a branch
            branch.restore(c, self.restore_manager.checkpoint, self.optimizer)
            if c.model.get("init_from"):  # fine-tuning: the pretrained weights, once
                self.warm_started = warm_start.load(self.network, c)
        start = self.started_at = self.step
        done = start >= c.train.num_steps or self.stopped_early
        # A finished run opens no TensorBoard writer: each writer is a new event file.
        writer = (tf.summary.create_file_writer(io.join(self.workdir, "tensorboard"))
                  if self.chief and not done else None)
        card = models.describe(self.network, c.model, self.data.task)  # MFU from every FLOP, logits included
        logger = callbacks.MetricsLogger(
            self.own_dir, c.train.log_every_steps, c.train.batch_size, c.train.num_steps, writer,
            flops_per_example=card.flops_per_example, tokens_per_example=card.tokens_per_example,
            peak_flops=throughput.peak_flops(self.device_kind, self.num_replicas))
        if self.chief:
            logger.resume_at(start)
        if start >= c.train.num_steps:
            logging.info("already trained: step %d of %d", start, c.train.num_steps)
            return logger
        if self.stopped_early:
            logging.info("already stopped early at update %d of %d: nothing left to train", start,
                         c.train.num_steps)
            return logger
        train_fn = self.data.train_dataset_fn(c.train.batch_size, c.seed, start, c.train.num_steps)
        if c.data.get("service"):  # the same batches, made by a tf.data service's worker
            train_fn = data.service.distribute(train_fn, c.data.service, f"tfscale-seed{c.seed}")
        dataset = self.strategy.distribute_datasets_from_function(train_fn)
        logging.info("training %s (%d params) on %s: steps %d..%d, batch %d = %d replicas x %d "
                     "micro-batches x %d, %s", c.model.name, models.num_params(self.network),
                     c.data.name, start, c.train.num_steps, c.train.batch_size, self.num_replicas,
                     c.train.accum_steps, c.train.batch_size // (self.num_replicas * c.train.accum_steps),
                     self.policy)
        saver = callbacks.CheckpointSaver(self.manager, c.checkpoint.every_steps, self.strategy,
                                          on_save=self.lock.refresh if self.lock else None,
                                          keep_steps=c.checkpoint.keep_steps)
        guard = callbacks.StopOnDivergence()
        own = [guard, logger]
        if c.eval.every_steps:
            own.append(periodic_eval.PeriodicEvaluation(
                self.evaluate, c.eval.every_steps, c.train.num_steps, self.stopping, c.train.early_stopping,
                metrics_path=logger.path if self.chief else None, writer=writer, best_saver=self.best,
                pause=logger.exclude))
        profile = config_lib.profile_range(c.train.profile_steps)
        if profile is not None and self.chief:
            own.append(callbacks.ProfileSteps(io.join(self.workdir, "tensorboard"), *profile))
        try:
            self.model.fit(dataset, epochs=1, steps_per_epoch=c.train.num_steps - start,
                           verbose=1 if sys.stdout.isatty() else 0,
                           callbacks=[*own, saver, *extra_callbacks])
        except tf.errors.OpError as e:  # data damaged after the run started: one line, resumable
            text = data.source.unreadable(e)
            if text is None:
                raise
            raise config_lib.ConfigError(f"{text}; then re-run this command to resume from "
                                         f"{self.manager.latest_checkpoint or 'the start'}") from None
        if guard.diverged_at is not None:
            raise callbacks.Diverged(guard.diverged_at, self.manager.latest_checkpoint,
                                     c.optimizer.learning_rate)
        if saver.preempted_at is not None:
            raise callbacks.Preempted(saver.preempted_at, self.manager.latest_checkpoint,
                                      saver.signal or signal.SIGTERM)
        return logger

    @property
    def stopped_early(self):
        return int(self.stopping.stopped_at.numpy()) >= 0

    def evaluate(self):
        """Loss (and accuracy) on the held-out split, or on `eval.max_examples` of it.

        The training metrics are left as they were: an evaluation in the middle of a logging
        window (`eval.every_steps`) must not reset or add to the window's running means.
        """
        if getattr(self, "_eval_ds", None) is None:
            # Rounded up to a multiple of the replicas, so every replica's batch has one static shape.
            batch = -(-self.config.eval.batch_size // self.num_replicas) * self.num_replicas
            self._eval_ds = data.eval_dataset(self._eval_arrays, batch)
        variables = [v for m in self.model.metrics for v in m.variables]
        saved = [v.numpy() for v in variables]
        results = self.model.evaluate(self._eval_ds, verbose=0, return_dict=True)
        for v, value in zip(variables, saved):
            v.assign(value)
        return results

    def restore_best(self):
        """Puts the best weights of the periodic evaluations into the network, when there are
        any and `train.early_stopping.restore_best` asks for them; returns their update or None."""
        best_step = self.stopping.as_dict()["best_step"]
        if not (self.config.eval.every_steps and self.config.train.early_stopping.restore_best) or best_step is None:
            return None
        if best_step != self.step:
            periodic_eval.restore_best(
                self.best if self.chief else periodic_eval.best_manager(self.workdir, self.network), best_step)
        return best_step

    def heldout_losses(self):
        """Loss of every held-out example `evaluate` averages (`eval.max_examples`, evenly spaced),
        with the weights the network holds now: the plan check's evaluation noise comes from these."""
        per_example = trainer.per_example_loss_fn(self.config.train.loss)
        arrays = self.data.eval_arrays(self.config.eval.max_examples)
        out = []
        for x, y, w in data.eval_dataset(arrays, self.config.eval.batch_size):
            losses = per_example(y, self.network(x, training=False)).numpy()
            out.append(losses[w.numpy() > 0])
        return np.concatenate(out).astype(np.float64)

    def export(self):
        """SavedModel under export/saved_model, verified against Keras on held-out inputs.

        Every worker saves (saving distributed variables is collective); only the chief's copy
        lands in the workdir, the others go to their own temporary folders.
        """
        path = io.join(self.own_dir, "export", "saved_model")
        sample = self.data.sample(self.config.eval.batch_size)
        tokenizer = self.tokenizer if self.data.task == "lm" else None  # raw strings in, next-token logits out
        check = export.save_saved_model(self.network, path, sample, self.classifier, tokenizer=tokenizer)
        logging.info("exported %s (max abs diff vs Keras %.2g)", path, check["max_abs_diff"])
        return check


def train(config, workdir, callbacks=()):
    """Trains `config` into `workdir` (resuming what is there) and returns the summary dict.

    `callbacks`: extra Keras callbacks (e.g. early stopping, a custom logger) for `fit`.
    """
    t0 = time.time()
    with Run(config, workdir) as run:
        return run.train(callbacks, t0)


def _train(run, extra_callbacks, t0):
    config, workdir = run.config, run.workdir
    c = config
    summary_path = io.join(workdir, "summary.json")
    previous = io.read_json(summary_path) if io.exists(summary_path) else {}
    logger = run.fit(extra_callbacks)
    best_step = run.restore_best()
    finished = run.started_at >= c.train.num_steps or (run.stopped_early and run.started_at == run.step)
    if finished and previous.get("steps") == run.step:
        logging.info("%s is finished: summary.json kept, nothing evaluated or exported again", workdir)
        return previous
    results = run.evaluate()
    card = models.describe(run.network, c.model, run.data.task)
    summary = {
        "model": c.model.name,
        "data": c.data.name,
        "num_params": card.total_params,  # embeddings included (models/card.py)
        "flops_per_example": card.flops_per_example,
        "steps": run.step,
        "examples_seen": run.step * c.train.batch_size,
        "train_loss": logger.last_logs.get("loss", previous.get("train_loss")),
        "eval_loss": float(results["loss"]),
        **{k: v if v is not None else previous.get(k) for k, v in logger.throughput().items()},
        "peak_flops": logger.peak_flops,
        "strategy": distribute.strategy_name(run.strategy),
        "num_replicas": run.num_replicas,
        "precision": run.policy,
        "batch_size": c.train.batch_size,
        "accum_steps": c.train.accum_steps,
        "jit_compile": run.jit_compile,
        "steps_per_execution": run.steps_per_execution,
    }
    if c.eval.every_steps:
        state = run.stopping.as_dict()
        summary["evaluated_weights"] = {"which": "best" if best_step is not None else "last",
                                        "step": best_step if best_step is not None else run.step}
        summary["early_stopping"] = {"monitor": c.train.early_stopping.monitor, "best": state["best"],
                                     "best_step": state["best_step"], "stopped_at": state["stopped_at"],
                                     "reason": periodic_eval.stop_reason(c.train.early_stopping, run.stopping)}
    if card.task == "lm":  # language models: per-token figures, and Kaplan's counts beside them
        summary.update(
            non_embedding_params=card.non_embedding_params,
            flops_per_token=card.flops_per_token(),
            flops_per_token_kaplan=card.flops_per_token("non_embedding"),
            num_tokens=summary["examples_seen"] * card.tokens_per_example,
            bits_per_byte=summary["eval_loss"] / math.log(2) / run.data.info.bytes_per_token)
    if "accuracy" in results:
        summary["eval_accuracy"] = float(results["accuracy"])
        summary["train_accuracy"] = logger.last_logs.get("accuracy", previous.get("train_accuracy"))
    if c.export.saved_model:
        summary["export"] = run.export()
    if run.chief:
        if c.export.saved_model and run.classifier:
            report = evaluation.evaluate_workdir(workdir, run.data, run.step)
            logging.info("eval.json: accuracy %.4f, macro F1 %.4f", report["accuracy"],
                         report["macro"]["f1"])
        summary["wall_seconds"] = time.time() - t0
        io.write_json(summary_path, summary)
    logging.info("done: %s", {k: summary[k] for k in ("steps", "eval_loss", "eval_accuracy") if k in summary})
    return summary
