r"""Tunes a config's hyperparameters with Optuna; re-running the same command resumes the study.

  python -m experiments.tune --config=experiments/configs/digits_cnn_tune.py --workdir=/tmp/tune \
      [--config.tune.num_trials=40 --config.tune.storage=postgresql://user:pass@host/db ...]

docs/tuning.md describes the `tune` section and what the workdir holds.
"""
from absl import flags

from experiments import cli

cli.define_config_and_workdir("experiments/configs/digits_cnn_tune.py[:tiny]",
                              "Folder of the study (created; resumed if it holds one).")


def main():
    from tfscale import tuning  # pylint: disable=import-outside-toplevel
    tuning.tune(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    cli.run(main)
