r"""Trains (or loads) a config's model, then writes and measures every compressed variant.

  python -m experiments.compress --config=experiments/configs/digits_cnn.py --workdir=/tmp/cnn \
      [--config.compress.variants=float32,int8 --config.compress.prune.target_sparsity=0.9 ...]

Writes DIR/compress/*.tflite (+ SavedModels), DIR/compression.json and DIR/compression.md.
"""
from absl import flags
from ml_collections import config_flags

from experiments import cli

config_flags.DEFINE_config_file("config", None, "Config file, e.g. experiments/configs/digits_cnn.py[:tiny].",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Folder of the run (trained if it holds none).")
flags.mark_flags_as_required(["config", "workdir"])


def main():
    from tfscale import compress  # pylint: disable=import-outside-toplevel
    _, table = compress.compress(flags.FLAGS.config, flags.FLAGS.workdir)
    print(table)


if __name__ == "__main__":
    cli.run(main)
