r"""Evaluates a saved run on its held-out split: eval.json, confusion_matrix.png, TensorBoard.

  python -m experiments.evaluate --workdir=/tmp/run
"""
from absl import flags

from experiments import cli

flags.DEFINE_string("workdir", None, "Folder of a finished training run.")
flags.mark_flags_as_required(["workdir"])


def main():
    from tfscale import evaluation  # pylint: disable=import-outside-toplevel
    report = evaluation.evaluate_workdir(flags.FLAGS.workdir)
    print(f"accuracy {report['accuracy']:.4f}  macro F1 {report['macro']['f1']:.4f}  "
          f"ROC-AUC (ovr) {report['roc_auc_ovr']:.4f}  log loss {report['log_loss']:.4f}  "
          f"({report['num_examples']} examples)")


if __name__ == "__main__":
    cli.run(main)
