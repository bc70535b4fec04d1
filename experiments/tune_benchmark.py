r"""The tuning benchmark: a pruned study on digits_cnn, then its best config against the default.

  python -m experiments.tune_benchmark --config=experiments/configs/digits_cnn_tune.py --workdir=DIR
      [--seeds=5] [--config.tune.pruner=successive_halving ...]

1. The study (`experiments.tune`) in DIR/study: trials train on train[:85%] and are judged on
   the validation split train[85%:]; the test split is never looked at.
2. Its best_config.py (the best values, trained on the whole train split, evaluated on test) and
   the default digits_cnn config are trained side by side in DIR/final/{best,default}_sN, for
   `--seeds` seeds (seed 0 is the configs' own).
3. Prints the figures: updates the study trained against the updates the same trials take
   unpruned, both configs' test accuracy, and wall times. Re-running resumes every part.
"""
import json
import os
import time

from absl import flags

from experiments import cli

cli.define_config_and_workdir("experiments/configs/digits_cnn_tune.py", "Folder of the benchmark.")
flags.DEFINE_string("default_config", "experiments/configs/digits_cnn.py",
                    "The config the tuned one is compared with.")
flags.DEFINE_integer("seeds", 5, "Seeds each final config is trained with (0, 1, ...).")


def _final(config, workdir, seed):
    import tfscale  # pylint: disable=import-outside-toplevel
    c = config.copy_and_resolve_references()
    c.seed = seed
    t0 = time.time()
    summary = tfscale.train(c.lock(), workdir)
    return summary["eval_accuracy"], summary["eval_loss"], summary.get("wall_seconds", time.time() - t0)


def main():
    from tfscale import tuning  # pylint: disable=import-outside-toplevel
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    study_dir = os.path.join(workdir, "study")
    t0 = time.time()
    summary = tuning.tune(config, study_dir)
    study_seconds = time.time() - t0
    if summary["best"] is None:
        cli.fail("the study has no complete trial, so no best config to compare")
    best = cli.load_config_file(summary["best_config"])
    default = cli.load_config_file(flags.FLAGS.default_config)
    rows = []
    t1 = time.time()
    for seed in range(flags.FLAGS.seeds):
        rows.append((seed, _final(best, os.path.join(workdir, "final", f"best_s{seed}"), seed),
                     _final(default, os.path.join(workdir, "final", f"default_s{seed}"), seed)))
    final_seconds = time.time() - t1
    trained, unpruned = summary["updates_trained"], summary["updates_unpruned"]
    states = [r["state"] for r in summary["trials"]]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    best_acc = [r[1][0] for r in rows]
    default_acc = [r[2][0] for r in rows]
    figures = {
        "trials": len(states), "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"), "updates_trained": trained, "updates_unpruned": unpruned,
        "updates_fraction": trained / unpruned if unpruned else None,
        "best_trial": summary["best"], "best_test_accuracy": best_acc, "default_test_accuracy": default_acc,
        "best_test_loss": [r[1][1] for r in rows], "default_test_loss": [r[2][1] for r in rows],
        "study_seconds": study_seconds, "final_seconds": final_seconds,
    }
    with open(os.path.join(workdir, "benchmark.json"), "w", encoding="utf-8") as f:
        json.dump(figures, f, indent=2, sort_keys=True)
    p = summary["best"]["params"]
    print(f"\nstudy: {len(states)} trials ({states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
          f"{states.count('FAIL')} failed) in {study_seconds:.0f} s")
    print(f"updates: {trained:,} trained of {unpruned:,} unpruned = {100 * trained / unpruned:.1f} %")
    print("best trial #{}: validation {} {:.4f}; ".format(summary["best"]["number"], config.tune.metric,
                                                           summary["best"]["value"])
          + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items()))
    print("\n| seed | tuned test accuracy | default test accuracy | tuned test loss | default test loss |")
    print("|---|---|---|---|---|")
    for seed, b, d in rows:
        print(f"| {seed} | {b[0]:.4f} | {d[0]:.4f} | {b[1]:.4f} | {d[1]:.4f} |")
    print(f"| mean | {mean(best_acc):.4f} | {mean(default_acc):.4f} | {mean([r[1][1] for r in rows]):.4f} | "
          f"{mean([r[2][1] for r in rows]):.4f} |")
    from tfscale import data  # pylint: disable=import-outside-toplevel
    num_test = data.load(default.data).info.num_eval
    right = lambda accs: [round(a * num_test) for a in accs]  # noqa: E731  (test images right: exact ties)
    one = "met" if right(best_acc)[0] >= right(default_acc)[0] else "not met"
    many = "met" if sum(right(best_acc)) >= sum(right(default_acc)) else "not met"
    print(f"\ngoal, test accuracy at least the default's: seed 0 {best_acc[0]:.4f} vs {default_acc[0]:.4f} "
          f"({one}); mean of {len(rows)} seeds {mean(best_acc):.4f} vs {mean(default_acc):.4f} ({many}). "
          f"One of the {num_test} test images is {1 / num_test:.4f}.")
    print(f"goal, updates <= 50 % of unpruned: {100 * trained / unpruned:.1f} % "
          f"({'met' if trained <= unpruned / 2 else 'not met'}); final trainings {final_seconds:.0f} s; "
          f"figures in {os.path.join(workdir, 'benchmark.json')}")


if __name__ == "__main__":
    cli.run(main)
