"""The benchmark suite runs end to end (tiny setting); its figures are printed, not judged."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {"trainer_vs_fit", "accum8_vs_accum1", "memory_accum_vs_plain_b", "mfu", "mfu_jit", "raw",
        "device", "precision", "sweep_pool_vs_serial", "input_pipeline_vs_trainer", "rss_large_vs_pycode"}


def test_benchmark_writes_json_and_table(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.benchmark", f"--workdir={tmp_path}",
                           "--setting=tiny"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    with open(tmp_path / "benchmark.json") as f:
        result = json.load(f)
    assert KEYS <= set(result)
    for key in ("trainer_vs_fit", "accum8_vs_accum1", "memory_accum_vs_plain_b", "mfu", "mfu_jit",
                "sweep_pool_vs_serial", "input_pipeline_vs_trainer", "rss_large_vs_pycode"):
        assert result[key] > 0, key
    sweep = result["raw"]["sweep"]  # the same planned FLOPs, timed with a pool and in one process
    assert sweep["workers"] == 2 and sweep["runs"] == 2 and sweep["pool"]["cpu_seconds"] > 0 and sweep["pool"]["seconds"] > 0
    assert sweep["serial"]["flops_per_sec"] * sweep["serial"]["seconds"] == pytest.approx(sweep["planned_flops"])
    rates = result["raw"]["trainer_vs_fit"]
    assert len(rates["tfscale"]) == len(rates["keras_fit"]) == result["raw"]["setting"]["repeats"]
    stream = result["raw"]["stream"]  # one pipeline's batches against the same config's training rate
    assert stream["pipeline_examples_per_sec"] > 0 and stream["trainer_examples_per_sec"] > 0
    assert stream["rss"]["pycode"]["steps"] == 5 and stream["rss"]["pycode"]["peak_bytes"] > 2**20
    assert (tmp_path / "benchmark.md").read_text().count("\n|") >= 9 and "| sweep FLOP/s" in proc.stdout
    assert "| input pipeline / trainer" in proc.stdout and "| peak RSS training the default LM" in proc.stdout


def test_memory_probe_is_the_librarys_own_entry_point():
    probe = subprocess.run([sys.executable, "-m", "tfscale.benchmark", "--memory_probe", '["tiny", "float32", 2, 8]'],
                           capture_output=True, text=True, timeout=300, cwd="/")  # no scripts needed
    assert probe.returncode == 0, probe.stderr[-3000:]
    peak = json.loads(probe.stdout.strip().splitlines()[-1])
    assert peak["peak_bytes"] >= peak["before_bytes"] > 0


def test_throughput_figures_are_sane_on_a_known_workload():
    from tfscale import throughput  # pylint: disable=import-outside-toplevel
    peak = throughput.cpu_matmul_peak()
    assert 1e8 < peak < 1e14  # a CPU, not nothing and not a GPU
    rates = throughput.derived(1000.0, 6e6, 128, peak)
    assert rates["model_flops_per_sec"] == 6e9 and rates["tokens_per_sec"] == 128000
    assert rates["mfu"] == 6e9 / peak
    assert throughput.lookup("NVIDIA H100 80GB HBM3") == 989.4e12
    assert throughput.lookup("NVIDIA H100 PCIe") == 756e12
    assert throughput.lookup("v5litepod-8") == 197e12 and throughput.lookup("unknown") is None
