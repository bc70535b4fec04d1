"""Compression: pruning, quantization-aware training, post-training quantization, distillation,
and export of every variant as measured TFLite and SavedModel artifacts.

  variants.py   the table: each variant's network source, fine-tuning phase and TFLite mode
  section.py    the config's `compress` section: defaults and checks, asking that table
  prune.py      magnitude pruning on an update-counted schedule, 2:4, strip, sparsity report
  quantize.py   QAT and pruning-preserving QAT of the inner functional network
  distill.py    the distillation trainer (teacher in inference mode, KL at temperature T)
  finetune.py   one fine-tuning phase through the run's accumulating trainer
  tflite.py     conversion, verified atomic writing, LiteRT measurement
  artifacts.py  `export_variants`: every variant written and measured
  job.py        `compress`: what `experiments.compress` runs

Imports are lazy: `variants` and `section` load no TensorFlow, `tflite` and `artifacts` no tfmot.
"""


def compress(config, workdir):
    """See `tfscale.compress.job.compress`."""
    from tfscale.compress import job  # pylint: disable=import-outside-toplevel
    return job.compress(config, workdir)


def compress_run(run):
    """See `tfscale.compress.job.compress_run`: the variants of a trained `training.Run`."""
    from tfscale.compress import job  # pylint: disable=import-outside-toplevel
    return job.compress_run(run)


def check_network(config, network):
    """The config's `compress` section, and the variants `network` can go through (a
    `training.Run` calls this once the network is built, before anything is written)."""
    from tfscale.compress import section  # pylint: disable=import-outside-toplevel
    section.validate(config)
    section.check_network(config, network)


__all__ = ["check_network", "compress", "compress_run"]
