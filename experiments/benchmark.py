r"""Benchmarks, side by side in one process: trainer vs plain fit, accumulation, memory, MFU, a
sweep with a pool of workers vs one process, and streaming (input pipeline vs trainer, peak RSS
on the large corpus vs pycode).

  python -m experiments.benchmark --workdir=/tmp/bench [--quick] [--precision=mixed_float16] \
      [--nosweep | --sweep_only] [--nostreaming | --streaming_only]

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
flags.DEFINE_bool("streaming", True, "Also the streaming rows: input pipeline vs trainer, and peak RSS on the large "
                  "corpus (site_packages, prepared on first use) vs pycode.")
flags.DEFINE_bool("streaming_only", False, "Only the streaming rows.")


def main():
    from experiments.configs import lm, scaling_lm  # pylint: disable=import-outside-toplevel
    from tfscale import benchmark, io  # pylint: disable=import-outside-toplevel
    f = flags.FLAGS
    if not f.workdir:
        cli.fail("--workdir is required")
    setting = f.setting or ("quick" if f.quick else "full")
    base = scaling_lm.get_config("tiny" if setting == "tiny" else None) if f.sweep or f.sweep_only else None
    os.makedirs(f.workdir, exist_ok=True)
    stream_base = lm.get_config("tiny" if setting == "tiny" else None) if f.streaming or f.streaming_only else None
    if f.streaming_only:
        result = {"setting": setting, **benchmark.streaming(stream_base, setting)}
        result["raw"] = {"stream": result.pop("stream")}
        io.write_json(os.path.join(f.workdir, "benchmark_streaming.json"), result)
        print("| benchmark | measured | goal |\n|---|---|---|\n" + "\n".join(
            "| {} | {} | {} |".format(*row) for row in benchmark.stream_rows(result)))
        return
    if f.sweep_only:
        spec = benchmark.SETTINGS[setting]["sweep"]
        ratio, raw = benchmark.pool_vs_serial(benchmark.sweep_config(base, setting), spec["workers"], spec["rounds"])
        io.write_json(os.path.join(f.workdir, "benchmark_sweep.json"), {"sweep_pool_vs_serial": ratio, "raw": raw})
        print("| benchmark | measured | goal |\n|---|---|---|\n| {} | {} | {} |".format(*benchmark.sweep_row(ratio, raw)))
        return
    result = benchmark.run_all(setting, f.precision, base, stream_base)
    io.write_json(os.path.join(f.workdir, "benchmark.json"), result)
    table = benchmark.markdown(result)
    with open(os.path.join(f.workdir, "benchmark.md"), "w") as out:
        out.write(table)
    print(table)


if __name__ == "__main__":
    cli.run(main)
