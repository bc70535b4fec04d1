r"""Trains one config into a workdir; re-running the same command resumes it.

  python -m experiments.train --config=experiments/configs/digits_mlp.py --workdir=/tmp/run \
      [--config.train.accum_steps=4 ...]
"""
import json

from absl import flags
from ml_collections import config_flags

from experiments import cli

config_flags.DEFINE_config_file("config", None, "Config file, e.g. experiments/configs/digits_mlp.py[:tiny].",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Folder of the run (created; resumed if it holds one).")
flags.mark_flags_as_required(["config", "workdir"])


def main():
    import tfscale  # pylint: disable=import-outside-toplevel
    summary = tfscale.train(flags.FLAGS.config, flags.FLAGS.workdir)
    print(json.dumps(summary, indent=2, sort_keys=True))


if __name__ == "__main__":
    cli.run(main)
