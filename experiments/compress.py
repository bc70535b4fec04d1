r"""Trains (or loads) a config's model, then writes and measures every compressed variant.

  python -m experiments.compress --config=experiments/configs/digits_cnn.py --workdir=/tmp/cnn \
      [--config.compress.variants=float32,int8 --config.compress.prune.target_sparsity=0.9 ...]

Writes DIR/compress/*.tflite (+ SavedModels), DIR/compression.json and DIR/compression.md.
"""
from absl import flags

from experiments import cli

cli.define_config_and_workdir("experiments/configs/digits_cnn.py[:tiny]", "Folder of the run (trained if it holds none).")


def main():
    from tfscale import compress  # pylint: disable=import-outside-toplevel
    _, table = compress.compress(flags.FLAGS.config, flags.FLAGS.workdir)
    print(table)


if __name__ == "__main__":
    cli.run(main)
