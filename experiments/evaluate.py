r"""Evaluates a saved run's export on its held-out split: eval.json (+ confusion_matrix.png for a
classifier) and TensorBoard.

  python -m experiments.evaluate --workdir=/tmp/run
"""
from absl import flags

from experiments import cli

flags.DEFINE_string("workdir", None, "Folder of a finished training run.")
flags.mark_flags_as_required(["workdir"])


def main():
    from tfscale import evaluation  # pylint: disable=import-outside-toplevel
    report = evaluation.evaluate_workdir(flags.FLAGS.workdir)
    if "per_class" in report:
        auc = report["roc_auc_ovr"]
        print(f"accuracy {report['accuracy']:.4f}  macro F1 {report['macro']['f1']:.4f}  "
              f"ROC-AUC (ovr) {'n/a' if auc is None else f'{auc:.4f}'}  log loss {report['log_loss']:.4f}  "
              f"({report['num_examples']} examples)")
    else:
        print(f"loss {report['loss']:.4f} nats/token  {report['bits_per_byte']:.4f} bits/byte  "
              f"perplexity {report['perplexity']:.3f}  token accuracy {report['accuracy']:.4f}  "
              f"({report['num_examples']} windows, {report['num_tokens']} tokens)")


if __name__ == "__main__":
    cli.run(main)
