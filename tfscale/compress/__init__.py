"""Compression: pruning, quantization-aware training, post-training quantization, distillation,
and export of every variant as measured TFLite and SavedModel artifacts.

  prune.py     magnitude pruning on an update-counted schedule, 2:4, strip, sparsity report
  quantize.py  QAT and pruning-preserving QAT of the inner functional network
  distill.py   the distillation trainer (teacher in inference mode, KL at temperature T)
  finetune.py  one fine-tuning phase through the run's accumulating trainer
  tflite.py    conversion, atomic verified writing, LiteRT measurement
  variants.py  `export_variants`: every variant written and measured
  pipeline.py  `compress`: what `experiments.compress` runs

Imports are lazy: `tfscale.compress.tflite` and `export_variants` do not load tfmot.
"""


def export_variants(networks, data, outdir, variants=("float32", "dynamic_range"), **kwargs):
    """See `tfscale.compress.variants.export_variants`."""
    from tfscale.compress import variants as variants_lib  # pylint: disable=import-outside-toplevel
    return variants_lib.export_variants(networks, data, outdir, variants, **kwargs)


def compress(config, workdir):
    """See `tfscale.compress.pipeline.compress`."""
    from tfscale.compress import pipeline  # pylint: disable=import-outside-toplevel
    return pipeline.compress(config, workdir)


__all__ = ["compress", "export_variants"]
