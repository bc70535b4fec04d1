r"""The BERT-style text-classification recipe as one command: pretrain, fine-tune, distil, quantize.

  python -m experiments.recipe --config=experiments/configs/text_classifier.py --workdir=runs/recipe
  python -m experiments.recipe --config=experiments/configs/text_classifier.py:tiny --workdir=/tmp/r

Every stage is an ordinary run in its own folder of the workdir (see `tfscale.recipe`); a re-run
skips the finished ones. Prints one line per stage and the table, written to DIR/recipe.md and
DIR/recipe.json.
"""
from absl import flags

from experiments import cli

cli.define_config_and_workdir("experiments/configs/text_classifier.py[:tiny]", "Folder of the recipe's runs.")


def main():
    from tfscale import recipe  # pylint: disable=import-outside-toplevel
    _, markdown = recipe.run(flags.FLAGS.config, flags.FLAGS.workdir)
    print(markdown)


if __name__ == "__main__":
    cli.run(main)
