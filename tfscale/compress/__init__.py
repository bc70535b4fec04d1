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
  pipeline.py   `compress`: what `experiments.compress` runs

Imports are lazy: `variants` and `section` load no TensorFlow, `tflite` and `artifacts` no tfmot.
"""


def compress(config, workdir):
    """See `tfscale.compress.pipeline.compress`."""
    from tfscale.compress import pipeline  # pylint: disable=import-outside-toplevel
    return pipeline.compress(config, workdir)


__all__ = ["compress"]
