r"""Trains one config into a workdir; re-running the same command resumes it.

  python -m experiments.train --config=experiments/configs/digits_mlp.py --workdir=/tmp/run \
      [--config.train.accum_steps=4 ...]
"""
import json

from absl import flags

from experiments import cli

cli.define_config_and_workdir("experiments/configs/digits_mlp.py[:tiny]", "Folder of the run (created; resumed if it holds one).")


def main():
    import tfscale  # pylint: disable=import-outside-toplevel
    summary = tfscale.train(flags.FLAGS.config, flags.FLAGS.workdir)
    print(json.dumps(summary, indent=2, sort_keys=True))


if __name__ == "__main__":
    cli.run(main)
