r"""Fits a scaling law to sweep results and plans compute-optimal runs.

  python -m experiments.fit --results=DIR/results.jsonl --workdir=DIR/fit \
      [--law=chinchilla|n|d|c] [--compute_budget=1e18 --compute_budget=1e19] [--target_loss=1.5] \
      [--bootstrap=200] [--flops=6nd|model] [--params=total|non_embedding] [--drop_highest_loss=K]
      [--grid_stride=1]

Writes DIR/fit.json, DIR/scaling.png and DIR/report.md, and prints the report.
"""
from absl import flags

from experiments import cli

flags.DEFINE_string("results", None, "results.jsonl (or .csv with the same columns) from experiments.sweep.")
flags.DEFINE_string("workdir", None, "Folder for fit.json, scaling.png and report.md.")
flags.DEFINE_enum("law", "auto", ["auto", "chinchilla", "n", "d", "c", "kaplan"],
                  "auto: chinchilla when both N and D vary, else the law of the one that varies; "
                  "kaplan: Kaplan et al.'s L(N, D), whose N and D terms interact.")
flags.DEFINE_multi_float("compute_budget", [], "FLOP budgets to plan for (default: 1x to 100x the largest run).")
flags.DEFINE_float("target_loss", None, "Also report the smallest compute predicted to reach this loss.")
flags.DEFINE_integer("bootstrap", 200, "Bootstrap refits for the intervals (0: none).", lower_bound=0)
flags.DEFINE_enum("flops", "6nd", ["6nd", "model"], "Compute model: C = 6ND, or the runs' own FLOP counts.")
flags.DEFINE_enum("params", "total", ["total", "non_embedding"],
                  "How N and C are counted: total (embeddings, output logits and attention included) or "
                  "non_embedding (Kaplan et al. 2020); results without non_embedding_params are the latter.")
flags.DEFINE_integer("drop_highest_loss", 0, "Leave out the K highest-loss points (extraction outliers).",
                     lower_bound=0)
flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
flags.DEFINE_integer("grid_stride", 1, "Start L-BFGS from every k-th point of the law's initialisation grid "
                     "(Chinchilla: 4,500 points, as Hoffmann et al.; 1: all of them; larger: a quicker look).", lower_bound=1)
flags.mark_flags_as_required(["results", "workdir"])


def main():
    from tfscale import scaling  # pylint: disable=import-outside-toplevel
    f = flags.FLAGS
    result = scaling.fit_results(f.results, f.workdir, law=None if f.law == "auto" else f.law,
                                 budgets=f.compute_budget, target_loss=f.target_loss, bootstrap=f.bootstrap,
                                 flops=f.flops, drop_highest_loss=f.drop_highest_loss, seed=f.seed,
                                 grid_stride=f.grid_stride, params=f.params)
    print(scaling.report.markdown(result))


if __name__ == "__main__":
    cli.run(main)
