r"""Benchmarks, side by side in one process: trainer vs plain fit, accumulation, memory, MFU, and a
sweep with a pool of workers vs one process.

  python -m experiments.benchmark --workdir=/tmp/bench [--quick] [--precision=mixed_float16] \
      [--nosweep | --sweep_only]

Writes DIR/benchmark.json and DIR/benchmark.md and prints the table. The sweep benchmark runs the
first sizes of experiments/configs/scaling_lm.py on short budgets.
"""
import os

from absl import flags

from experiments import cli

flags.DEFINE_string("workdir", None, "Where benchmark.json and benchmark.md go.")
flags.DEFINE_bool("quick", False, "The quick setting (within 5 minutes on 2 CPU cores).")
flags.DEFINE_enum("setting", None, ["tiny", "quick", "full"], "Explicit setting (overrides --quick).")
flags.DEFINE_string("precision", "auto", "auto | float32 | mixed_float16 | mixed_bfloat16")
flags.DEFINE_bool("sweep", True, "Also time a small sweep with a pool of workers against one process.")
flags.DEFINE_bool("sweep_only", False, "Only the sweep benchmark.")


def main():
    from experiments.configs import scaling_lm  # pylint: disable=import-outside-toplevel
    from tfscale import benchmark, io  # pylint: disable=import-outside-toplevel
    f = flags.FLAGS
    if not f.workdir:
        cli.fail("--workdir is required")
    setting = f.setting or ("quick" if f.quick else "full")
    base = scaling_lm.get_config("tiny" if setting == "tiny" else None) if f.sweep or f.sweep_only else None
    os.makedirs(f.workdir, exist_ok=True)
    if f.sweep_only:
        spec = benchmark.SETTINGS[setting]["sweep"]
        ratio, raw = benchmark.pool_vs_serial(benchmark.sweep_config(base, setting), spec["workers"], spec["rounds"])
        io.write_json(os.path.join(f.workdir, "benchmark_sweep.json"), {"sweep_pool_vs_serial": ratio, "raw": raw})
        print("| benchmark | measured | goal |\n|---|---|---|\n| {} | {} | {} |".format(*benchmark.sweep_row(ratio, raw)))
        return
    result = benchmark.run_all(setting, f.precision, base)
    io.write_json(os.path.join(f.workdir, "benchmark.json"), result)
    table = benchmark.markdown(result)
    with open(os.path.join(f.workdir, "benchmark.md"), "w") as out:
        out.write(table)
    print(table)


if __name__ == "__main__":
    cli.run(main)
