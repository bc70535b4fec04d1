r"""Runs a scaling sweep; re-running the same command resumes it.

  python -m experiments.sweep --config=experiments/configs/scaling_lm.py --workdir=DIR \
      [--shard_index=0 --num_shards=1] [--config.sweep.workers=0] \
      [--config.sweep.search='optimizer.learning_rate=1e-3,3e-3' ...]

Every run trains into DIR/runs/NAME and writes its row to DIR/results/NAME.json; DIR/results.jsonl,
assembled from those, is what `experiments.fit --results=DIR/results.jsonl` reads. With
`sweep.workers` other than 1, runs go side by side in worker processes (logs in DIR/logs/).
"""
from absl import flags

from experiments import cli

cli.define_config_and_workdir("experiments/configs/scaling_lm.py[:tiny]", "Sweep folder: results.jsonl and runs/.")
flags.DEFINE_integer("shard_index", 0, "This machine's shard (0-based).", lower_bound=0)
flags.DEFINE_integer("num_shards", 1, "Machines sharing DIR; each runs every num_shards-th run.", lower_bound=1)


def main():
    from tfscale.scaling import sweep  # pylint: disable=import-outside-toplevel
    f = flags.FLAGS
    out = sweep.run_sweep(f.config, f.workdir, f.shard_index, f.num_shards)
    print(f"{len(out['ran'])} runs ran ({len(out['failed'])} failed), {out['skipped']} already finished; "
          f"results: {out['results']}")
    for name in out["failed"]:
        print(f"  failed: {name} (see its row in results.jsonl)")


if __name__ == "__main__":
    cli.run(main)
