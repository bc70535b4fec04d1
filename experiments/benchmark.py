r"""Benchmarks, side by side in one process: trainer vs plain fit, accumulation, memory, MFU.

  python -m experiments.benchmark --workdir=/tmp/bench [--quick] [--precision=mixed_float16]

Writes DIR/benchmark.json and DIR/benchmark.md and prints the table.
"""
import json
import os

from absl import flags

from experiments import cli

flags.DEFINE_string("workdir", None, "Where benchmark.json and benchmark.md go.")
flags.DEFINE_bool("quick", False, "The quick setting (within 5 minutes on 2 CPU cores).")
flags.DEFINE_enum("setting", None, ["tiny", "quick", "full"], "Explicit setting (overrides --quick).")
flags.DEFINE_string("precision", "auto", "auto | float32 | mixed_float16 | mixed_bfloat16")
flags.DEFINE_string("memory_probe", None, "Internal: one memory measurement, as JSON arguments.")


def main():
    from tfscale import benchmark, io  # pylint: disable=import-outside-toplevel
    f = flags.FLAGS
    if f.memory_probe:
        print(json.dumps(benchmark.memory_probe(*json.loads(f.memory_probe))))
        return
    if not f.workdir:
        cli.fail("--workdir is required")
    setting = f.setting or ("quick" if f.quick else "full")
    result = benchmark.run_all(setting, f.precision)
    os.makedirs(f.workdir, exist_ok=True)
    io.write_json(os.path.join(f.workdir, "benchmark.json"), result)
    table = benchmark.markdown(result)
    with open(os.path.join(f.workdir, "benchmark.md"), "w") as out:
        out.write(table)
    print(table)


if __name__ == "__main__":
    cli.run(main)
