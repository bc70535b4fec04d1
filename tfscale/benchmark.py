"""Side-by-side training benchmarks: tfscale's trainer against plain Keras, accumulation, memory, MFU,
and a sweep's throughput with a pool of workers against one process.

Each comparison builds both sides once (compiled, traced, warmed up), then times them in
alternation, `repeats` times, so machine noise hits both alike; ratios are medians of the
per-round ratios. Memory is measured in a fresh process per setting (peak RSS on CPU, the
allocator's peak on GPU), because a process's peak never goes down.
"""
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfscale import data, distribute, models, precision, throughput, trainer

SETTINGS = {  # model and batch sizes per mode; `tiny` is for tests
    "tiny": dict(mlp=dict(width=64, depth=2), features=32, micro_batch=16, accum=4, steps=3, repeats=2,
                 lm=dict(num_layers=1, d_model=32, num_heads=2, d_ff=64, seq_len=16), lm_batch=4,
                 lm_steps=2, lm_repeats=2,
                 sweep=dict(sizes=1, num_tokens=(2048,), learning_rates=(1e-2, 2e-2), workers=2, rounds=1),
                 stream=dict(large="pycode", pipeline_steps=20, trainer_steps=10, rss_steps=5)),
    "quick": dict(mlp=dict(width=1024, depth=3), features=256, micro_batch=128, accum=8, steps=40,
                  repeats=7, lm=dict(num_layers=4, d_model=256, num_heads=4, d_ff=1024, seq_len=128),
                  lm_batch=16, lm_steps=8, lm_repeats=5,
                  sweep=dict(sizes=2, num_tokens=(4e5,), learning_rates=(2e-3, 3e-3), workers=2, rounds=2),
                  stream=dict(large="site_packages", pipeline_steps=300, trainer_steps=100, rss_steps=100)),
    "full": dict(mlp=dict(width=2048, depth=4), features=512, micro_batch=256, accum=8, steps=60,
                 repeats=9, lm=dict(num_layers=8, d_model=512, num_heads=8, d_ff=2048, seq_len=256),
                 lm_batch=32, lm_steps=10, lm_repeats=7,
                 sweep=dict(sizes=3, num_tokens=(8e5,), learning_rates=(2e-3, 3e-3), workers=2, rounds=3),
                 stream=dict(large="site_packages", pipeline_steps=1000, trainer_steps=300, rss_steps=300)),
}


@dataclasses.dataclass
class Case:
    """One trainable setting, ready to be timed for `steps` updates at a time."""
    name: str
    model: keras.Model
    dataset: tf.data.Dataset
    batch_size: int

    def __post_init__(self):
        self.iterator = iter(self.dataset)
        self.time(1)  # trace and warm up

    def time(self, steps):
        """Examples per second over `steps` updates."""
        start = time.perf_counter()
        self.model.fit(self.iterator, steps_per_epoch=steps, epochs=1, verbose=0)
        return steps * self.batch_size / (time.perf_counter() - start)


def _synthetic(batch_size, features, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((max(batch_size, 1024), features)).astype(np.float32)
    y = rng.integers(0, classes, len(x)).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch_size, drop_remainder=True).prefetch(4)


def _tokens(batch_size, seq_len, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (max(batch_size, 64), seq_len + 1)).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((x[:, :-1], x[:, 1:]))
    return ds.repeat().batch(batch_size, drop_remainder=True).prefetch(4)


def _mlp(setting):
    info = data.DataInfo("synthetic", (setting["features"],), 10, 1.0, 0, 0)
    keras.utils.set_random_seed(0)
    return models.MODELS["mlp"](info, **setting["mlp"])


def _lm(setting):
    info = data.DataInfo("pycode", (setting["lm"]["seq_len"],), 256, 1.0, 0, 0)
    keras.utils.set_random_seed(0)
    return models.MODELS["transformer_lm"](info, **setting["lm"])


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _optimizer(policy):
    return precision.wrap_optimizer(keras.optimizers.AdamW(1e-4), policy)


def _tfscale(network, accum, policy, jit=False):
    model = trainer.AccumulatingModel(network, accum)
    model.compile(_optimizer(policy), _loss(), jit_compile=jit)
    return model


def interleaved(cases, steps, repeats):
    """{name: [examples/s per round]}, timing the cases in turn in every round."""
    rates = {c.name: [] for c in cases}
    for _ in range(repeats):
        for case in cases:
            rates[case.name].append(case.time(steps))
    return rates


def median_ratio(numerator, denominator):
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def trainer_vs_fit(setting, policy):
    b = setting["micro_batch"]
    plain = _mlp(setting)
    plain.compile(_optimizer(policy), _loss())
    cases = [Case("tfscale", _tfscale(_mlp(setting), 1, policy), _synthetic(b, setting["features"]), b),
             Case("keras_fit", plain, _synthetic(b, setting["features"]), b)]
    rates = interleaved(cases, setting["steps"], setting["repeats"])
    return median_ratio(rates["tfscale"], rates["keras_fit"]), rates


def accum8_vs_accum1(setting, policy):
    b, k = setting["micro_batch"], setting["accum"]
    cases = [Case(f"accum{k}", _tfscale(_mlp(setting), k, policy), _synthetic(k * b, setting["features"]), k * b),
             Case("accum1", _tfscale(_mlp(setting), 1, policy), _synthetic(b, setting["features"]), b)]
    rates = interleaved(cases, setting["steps"], setting["repeats"])
    return median_ratio(rates[f"accum{k}"], rates["accum1"]), rates


def mfu(setting, policy, device_kind):
    """MFU of the LM, XLA on and off (off only where XLA cannot run)."""
    b = setting["lm_batch"]
    peak = throughput.peak_flops(device_kind, 1)
    network = _lm(setting)
    flops = models.training_flops_per_example(network)
    cases = [Case("jit_off", _tfscale(network, 1, policy, jit=False), _tokens(b, setting["lm"]["seq_len"]), b),
             Case("jit_on", _tfscale(_lm(setting), 1, policy, jit=True), _tokens(b, setting["lm"]["seq_len"]), b)]
    rates = interleaved(cases, setting["lm_steps"], setting["lm_repeats"])
    result = {name: statistics.median(r) * flops / peak for name, r in rates.items()}
    return result, {"rates": rates, "peak_flops": peak, "flops_per_example": flops,
                    "num_params": models.num_params(network)}


def _reset_peak_memory(device_kind):
    """Starts a new peak: the allocator's on GPU; on Linux, the process's high-water mark
    (writing 5 to /proc/self/clear_refs resets VmHWM), so import-time spikes do not count."""
    if device_kind == "GPU":
        tf.config.experimental.reset_memory_stats("GPU:0")
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        logging.warning("cannot reset the peak RSS; memory figures include start-up")


def _peak_memory_bytes(device_kind):
    if device_kind == "GPU":
        return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def memory_probe(setting_name, policy, accum, batch_size):
    """Run in a fresh process: peak memory of training the LM with `accum` micro-batches."""
    setting = SETTINGS[setting_name]
    strategy = distribute.build_strategy(_OneDevice())
    kind = distribute.device_kind(strategy)
    precision.set_policy(policy)
    model = _tfscale(_lm(setting), accum, policy)
    dataset = _tokens(batch_size, setting["lm"]["seq_len"])
    _reset_peak_memory(kind)
    before = _peak_memory_bytes(kind)
    model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)
    return {"peak_bytes": _peak_memory_bytes(kind), "before_bytes": before}


class _OneDevice:
    strategy, cpu_devices, tpu = "one_device", 0, ""


def memory(setting_name, policy):
    """Peak memory of batch k*b by accumulation vs plain b vs plain k*b, one process each, side by side."""
    setting = SETTINGS[setting_name]
    b, k = setting["lm_batch"], setting["accum"]
    out = _probes({name: ["--memory_probe", json.dumps([setting_name, policy, accum, batch])]
                   for name, accum, batch in (("plain_b", 1, b), ("accum_kb", k, k * b), ("plain_kb", 1, k * b))})
    for name, probe in out.items():
        logging.info("memory %s: %.1f MiB peak", name, probe["peak_bytes"] / 2**20)
    return out


def _probes(arguments):
    """{name: JSON result} of `python -m tfscale.benchmark ARGS` for each name, all processes at
    once: each measures its own peak, which other processes do not change."""
    procs = {name: subprocess.Popen([sys.executable, "-m", "tfscale.benchmark", *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, args in arguments.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"benchmark probe {name} failed: {stderr[-2000:]}")
        out[name] = json.loads(stdout.strip().splitlines()[-1])
    return out


def sweep_config(config, setting_name):
    """The setting's small sweep: the first sizes of a sweep config (e.g. scaling_lm's) on a short
    budget, each with a few learning rates: runs in pairs of equal cost, so the pool's figure
    measures its throughput, not how well run lengths happen to pack onto the workers."""
    s = SETTINGS[setting_name]["sweep"]
    c = config.copy_and_resolve_references()
    c.unlock()
    c.sweep.sizes, c.sweep.num_tokens, c.sweep.compute_budgets = c.sweep.sizes[:s["sizes"]], s["num_tokens"], ()
    c.sweep.search, c.sweep.search_mode = "optimizer.learning_rate=" + ",".join(map(str, s["learning_rates"])), "grid"
    if "schedule" in c.sweep:
        c.sweep.schedule = "cosine"  # independent runs (a wsd branch waits for its trunk)
    return c.lock()


def _cpu_seconds():
    """CPU time of this process and of its finished children (a pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pool_vs_serial(config, workers=2, rounds=1):
    """Planned sweep FLOPs per second: the sweep run by a pool of `workers` processes against the
    same sweep one run after another in this process, each into a fresh folder, alternating for
    `rounds` rounds; the ratio is the median of the per-round ratios."""
    from tfscale.scaling import sweep  # pylint: disable=import-outside-toplevel
    flops = sum(r.cost for r in sweep.plan(config))
    raw = {"planned_flops": flops, "runs": len(sweep.plan(config)), "workers": workers,
           "sizes": list(config.sweep.sizes), "num_tokens": list(config.sweep.num_tokens),
           "load_before": os.getloadavg(), "rounds": []}
    for _ in range(rounds):
        timed = {}
        for name, count in (("serial", 1), ("pool", workers)):
            c = config.copy_and_resolve_references()
            c.unlock()
            c.sweep.workers = count
            with tempfile.TemporaryDirectory(prefix=f"tfscale-bench-sweep-{name}-") as workdir:
                start, cpu = time.perf_counter(), _cpu_seconds()
                out = sweep.run_sweep(c.lock(), workdir)
                seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
            if out["failed"]:
                raise RuntimeError(f"benchmark sweep ({name}): runs failed: {out['failed']}")
            timed[name] = {"seconds": seconds, "flops_per_sec": flops / seconds, "cpu_seconds": cpu}
            logging.info("sweep %s: %.1f s (%.0f CPU s), %.3g FLOP/s", name, seconds, cpu, flops / seconds)
        raw["rounds"].append(timed)
    for name in ("serial", "pool"):
        raw[name] = {k: statistics.median(r[name][k] for r in raw["rounds"]) for k in raw["rounds"][0][name]}
    raw["load_average"] = os.getloadavg()
    ratio = statistics.median(r["pool"]["flops_per_sec"] / r["serial"]["flops_per_sec"] for r in raw["rounds"])
    return ratio, raw


def input_pipeline_vs_trainer(config, pipeline_steps, trainer_steps):
    """Examples/s the input pipeline alone delivers for `config`'s training batches (one input
    pipeline, as on one host, nothing else running) against the examples/s its trainer consumes
    (the steady-state rate of a short run of the same config). Returns (ratio, raw)."""
    c = config.unlock() if config.is_locked else config
    source = data.load(c.data, c.model.get("seq_len"), c.seed)
    batch = c.train.batch_size
    iterator = iter(source.train_dataset_fn(batch, c.seed, 0, pipeline_steps + 10)())
    for _ in range(10):  # warm up: the first batches start the readers and the prefetch
        next(iterator)
    start = time.perf_counter()
    for _ in range(pipeline_steps):
        next(iterator)
    pipeline = pipeline_steps * batch / (time.perf_counter() - start)
    c.train.num_steps, c.train.log_every_steps = trainer_steps, max(1, trainer_steps // 5)
    c.eval.every_steps, c.export.saved_model, c.checkpoint.every_steps = 0, False, trainer_steps
    c.eval.max_examples = min(c.eval.max_examples or 512, 512)  # the rate is training's, not evaluation's
    from tfscale import training  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory(prefix="tfscale-bench-input-") as workdir:
        summary = training.train(c.lock(), workdir)
    ratio = pipeline / summary["examples_per_sec"]
    logging.info("input pipeline %.0f examples/s, trainer %.0f: %.1fx", pipeline, summary["examples_per_sec"], ratio)
    return ratio, {"data": c.data.name, "pipeline_examples_per_sec": pipeline,
                   "trainer_examples_per_sec": summary["examples_per_sec"], "batch_size": batch,
                   "num_train": source.info.num_train}


def rss_probe(config_json):
    """Run in a fresh process: peak RSS of training a config (JSON of a config dict) briefly."""
    import ml_collections  # pylint: disable=import-outside-toplevel
    from tfscale import config as config_lib, training  # pylint: disable=import-outside-toplevel
    c = config_lib.defaults()
    c.update(ml_collections.ConfigDict(json.loads(config_json)))
    with tempfile.TemporaryDirectory(prefix="tfscale-bench-rss-") as workdir:
        summary = training.train(c.lock(), workdir)
    return {"peak_bytes": _peak_memory_bytes("CPU"), "steps": summary["steps"], "data": c.data.name}


def streaming_memory(config, data_configs, steps):
    """Peak RSS of the same short training run on each of `data_configs` ({label: data
    overrides}), each in a fresh process (a process's peak never goes down), side by side."""
    configs = {}
    for label, overrides in data_configs.items():
        c = json.loads(config.to_json())
        c["data"].update(overrides)
        c["train"].update(num_steps=steps, log_every_steps=max(1, steps // 5))
        c["eval"]["every_steps"], c["export"]["saved_model"], c["checkpoint"]["every_steps"] = 0, False, steps
        c["eval"]["max_examples"] = 512  # the same held-out count on both data sets
        configs[label] = ["--rss_probe", json.dumps(c)]
    out = _probes(configs)
    for label, probe in out.items():
        logging.info("peak RSS training on %s: %.0f MiB", label, probe["peak_bytes"] / 2**20)
    return out


def streaming(lm_config, setting_name):
    """The streaming rows: the input pipeline against the trainer on the large corpus, and peak
    RSS on it (ArrayRecord shards) against the same run on `pycode` held in memory."""
    spec = SETTINGS[setting_name]["stream"]
    c = lm_config.unlock() if lm_config.is_locked else lm_config
    c.data.name = spec["large"]
    ratio, raw = input_pipeline_vs_trainer(c.copy_and_resolve_references(), spec["pipeline_steps"], spec["trainer_steps"])
    rss = streaming_memory(c, {"pycode": {"name": "pycode"}, spec["large"]: {"name": spec["large"]}}, spec["rss_steps"])
    raw["rss"] = rss
    return {"input_pipeline_vs_trainer": ratio,
            "rss_large_vs_pycode": rss[spec["large"]]["peak_bytes"] / rss["pycode"]["peak_bytes"], "stream": raw}


def stream_rows(result):
    raw = result["raw"]["stream"]
    large = raw["data"]
    mib = lambda n: f"{n / 2**20:.0f} MiB"  # noqa: E731
    return [(f"input pipeline / trainer, examples/s (default LM on {large}, one pipeline)",
             f"{result['input_pipeline_vs_trainer']:.1f} ({raw['pipeline_examples_per_sec']:.0f} / "
             f"{raw['trainer_examples_per_sec']:.0f})", ">= 5"),
            (f"peak RSS training the default LM: {large} / pycode in memory",
             f"{result['rss_large_vs_pycode']:.3f} ({mib(raw['rss'][large]['peak_bytes'])} / "
             f"{mib(raw['rss']['pycode']['peak_bytes'])})", "<= 1.2")]


def run_all(setting_name, policy_name="auto", sweep_base=None, stream_base=None):
    """All benchmarks of one setting; returns the benchmark.json dictionary. `sweep_base`: a sweep
    config whose first sizes the pool benchmark runs (none: no sweep row); `stream_base`: the LM
    config of the streaming rows (none: none)."""
    setting = SETTINGS[setting_name]
    kind = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    policy = precision.resolve(policy_name, kind)
    precision.set_policy(policy)
    t0 = time.time()
    ratio_fit, raw_fit = trainer_vs_fit(setting, policy)
    logging.info("trainer_vs_fit %.3f", ratio_fit)
    ratio_accum, raw_accum = accum8_vs_accum1(setting, policy)
    logging.info("accum%d_vs_accum1 %.3f", setting["accum"], ratio_accum)
    mfu_result, raw_mfu = mfu(setting, policy, kind)
    logging.info("mfu %s", mfu_result)
    mem = memory(setting_name, policy)
    growth = {k: v["peak_bytes"] - v["before_bytes"] for k, v in mem.items()}
    sweep_rows = {}
    if sweep_base is not None:
        ratio_pool, raw_pool = pool_vs_serial(sweep_config(sweep_base, setting_name), setting["sweep"]["workers"],
                                              setting["sweep"]["rounds"])
        logging.info("sweep pool_vs_serial %.3f", ratio_pool)
        sweep_rows = {"sweep_pool_vs_serial": ratio_pool, "sweep": raw_pool}
    stream = streaming(stream_base, setting_name) if stream_base is not None else {}
    return {
        "setting": setting_name, "device": _device_name(kind), "precision": policy,
        "trainer_vs_fit": ratio_fit,
        "accum8_vs_accum1": ratio_accum,
        "memory_accum_vs_plain_b": mem["accum_kb"]["peak_bytes"] / mem["plain_b"]["peak_bytes"],
        "memory_growth_accum_vs_plain_b": growth["accum_kb"] / max(growth["plain_b"], 1),
        "mfu": mfu_result["jit_off"], "mfu_jit": mfu_result["jit_on"],
        **({"sweep_pool_vs_serial": sweep_rows["sweep_pool_vs_serial"]} if sweep_rows else {}),
        **{k: v for k, v in stream.items() if k != "stream"},
        "raw": {"trainer_vs_fit": raw_fit, "accum8_vs_accum1": raw_accum, "mfu": raw_mfu,
                "memory": mem, "memory_growth_bytes": growth, "setting": setting,
                **({"sweep": sweep_rows["sweep"]} if sweep_rows else {}),
                **({"stream": stream["stream"]} if stream else {})},
        "wall_seconds": time.time() - t0,
    }


def _device_name(kind):
    if kind == "GPU":
        gpu = tf.config.list_physical_devices("GPU")[0]
        return tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
    return f"CPU ({os.cpu_count()} cores)"


def markdown(result):
    """The benchmark table."""
    mib = lambda n: f"{n / 2**20:.0f} MiB"  # noqa: E731
    mem = result["raw"]["memory"]
    growth = result["raw"]["memory_growth_bytes"]
    rows = [
        ("trainer_vs_fit (examples/s ratio)", f"{result['trainer_vs_fit']:.3f}", ">= 1.0"),
        ("accum8_vs_accum1 (examples/s ratio, same micro-batch)", f"{result['accum8_vs_accum1']:.3f}", ">= 0.97"),
        ("peak memory: accum k*b / plain b", f"{result['memory_accum_vs_plain_b']:.3f} "
         f"({mib(mem['accum_kb']['peak_bytes'])} / {mib(mem['plain_b']['peak_bytes'])}; plain k*b "
         f"{mib(mem['plain_kb']['peak_bytes'])})", "<= 1.2"),
        ("memory growth in training: accum k*b / plain b", f"{result['memory_growth_accum_vs_plain_b']:.3f} "
         f"({mib(growth['accum_kb'])} / {mib(growth['plain_b'])}; plain k*b {mib(growth['plain_kb'])})", ""),
        ("MFU, LM, XLA off", f"{result['mfu']:.3f}", ">= 0.4"),
        ("MFU, LM, XLA on", f"{result['mfu_jit']:.3f}", ""),
    ]
    if "sweep_pool_vs_serial" in result:
        rows.append(sweep_row(result["sweep_pool_vs_serial"], result["raw"]["sweep"]))
    if "input_pipeline_vs_trainer" in result:
        rows += stream_rows(result)
    head = (f"Device: {result['device']}, precision {result['precision']}, setting "
            f"`{result['setting']}` ({result['wall_seconds']:.0f} s)\n\n")
    return head + "| benchmark | measured | goal |\n|---|---|---|\n" + "\n".join(
        f"| {a} | {b} | {c} |" for a, b, c in rows) + "\n"


def sweep_row(ratio, raw):
    """The table row of `pool_vs_serial`."""
    gflops = lambda name: (f"{raw[name]['flops_per_sec'] / 1e9:.2f} GFLOP/s in {raw[name]['seconds']:.0f} s, "  # noqa: E731
                           f"{raw[name]['cpu_seconds']:.0f} CPU s")
    return (f"sweep FLOP/s, pool of {raw['workers']} / one process ({raw['runs']} runs)",
            f"{ratio:.3f} ({gflops('pool')} / {gflops('serial')}; load average before "
            f"{raw['load_before'][0]:.1f}, after {raw['load_average'][0]:.1f})",
            f">= 1.8 ({raw['workers']} workers on {raw['workers']} cores)")


def _main(argv):
    """`python -m tfscale.benchmark --memory_probe JSON` (or `--rss_probe CONFIG_JSON`): one memory
    measurement in a fresh process."""
    if len(argv) == 3 and argv[1] == "--rss_probe":
        print(json.dumps(rss_probe(argv[2])))
        return
    if len(argv) != 3 or argv[1] != "--memory_probe":
        sys.exit("usage: python -m tfscale.benchmark --memory_probe '[setting, policy, accum, batch]'")
    print(json.dumps(memory_probe(*json.loads(argv[2]))))


if __name__ == "__main__":
    _main(sys.argv)
