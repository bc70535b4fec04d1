r"""The main job: scaling sweep, fit with intervals, compute-optimal plan (the sweep grows until
N_opt lies inside its sizes), the plan checked against the candidate sizes beside it at the same
compute, then the chosen model compressed and exported, and one table printed. Re-running the
command resumes it.

  python -m experiments.scaling --config=experiments/configs/scaling_lm.py --workdir=runs/scaling_lm

Writes DIR/sweep/ (results.jsonl, runs/), DIR/fit/ (fit.json, scaling.png, report.md), DIR/final/
(the model, its SavedModel and .tflite files), DIR/check/ (its neighbours), DIR/scaling.json and
DIR/scaling.md.
"""
from absl import flags

from experiments import cli

cli.define_config_and_workdir("experiments/configs/scaling_lm.py[:tiny]", "Folder of the job (resumed if it holds one).")


def main():
    from tfscale.scaling import main_job  # pylint: disable=import-outside-toplevel
    _, table = main_job.run_main_job(flags.FLAGS.config, flags.FLAGS.workdir)
    print(table)


if __name__ == "__main__":
    cli.run(main)
