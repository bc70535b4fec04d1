"""Peak FLOP/s of the devices a run uses, for model FLOPs utilisation (MFU).

MFU = achieved model FLOP/s / peak FLOP/s (PaLM, Chowdhery et al. 2022, appendix B): the model
FLOPs count only the math the model needs (training FLOPs per example x examples/s), not
rematerialisation or padding. Accelerators' peaks come from a table of dense bf16/fp16 tensor
figures; the CPU's from a short float32 matmul probe run once per process.
"""
import os
import re
import time

from absl import logging
import tensorflow as tf

# Dense (no sparsity) bf16/fp16 tensor peak FLOP/s per device, by canonical name (`canonical`).
# GPUs: NVIDIA datasheets (H100/H200 SXM 989.4 TF, H100 PCIe 756 TF, H100 NVL 835.5 TF, A100
# 312 TF, L40S 362.05 TF, L40 181.05 TF, L4 121 TF, A10 125 TF, V100 SXM2 125 TF, V100 PCIe
# 112 TF, T4 65 TF); A10G (AWS only, no NVIDIA datasheet) 70 TF as AWS-published specs quote it,
# e.g. Baseten's "NVIDIA A10 vs A10G for ML model inference". TPUs: Cloud TPU
# system-architecture pages, per chip (v2 45 TF and v3 123 TF, each chip 2 devices; v4 275 TF,
# one megacore device per chip; v5e 197 TF; v5p 459 TF; v6e 918 TF).
PEAK_FLOPS = {
    "H200": 989.4e12, "H100": 989.4e12, "H100 PCIe": 756e12, "H100 NVL": 835.5e12,
    "A100": 312e12, "L40S": 362.05e12, "L40": 181.05e12, "L4": 121e12, "A10": 125e12,
    "A10G": 70e12, "V100": 125e12, "V100 PCIe": 112e12, "T4": 65e12,
    "v2": 45e12 / 2, "v3": 123e12 / 2, "v4": 275e12, "v5e": 197e12, "v5p": 459e12, "v6e": 918e12,
}
# A TPU version token (v4, v5p, v5litepod, ...); "lite" is the e kind and a bare "v5" is v5p,
# as device kinds name them ("TPU v5 lite" is v5e, "TPU v5" is v5p).
_TPU = re.compile(r"v(\d)(e|p|lite|litepod)?$")

_cpu_peak = None


def canonical(device_name):
    """The PEAK_FLOPS key of a device name as TensorFlow or the TPU environment reports it
    ("NVIDIA H100 80GB HBM3" -> H100, "NVIDIA A100-SXM4-40GB" -> A100, "v5litepod-8" -> v5e),
    matched whole token by token so L40S is never L4; None if unknown."""
    keys = {k.lower(): k for k in PEAK_FLOPS}
    tokens = [t for t in re.split(r"[^a-z0-9]+", device_name.lower()) if t]
    for i, token in enumerate(tokens):
        tpu = _TPU.match(token)
        if tpu:
            version, kind = tpu.groups()
            if kind in ("lite", "litepod") or tokens[i + 1:i + 2] == ["lite"]:
                kind = "e"
            token = f"v{version}{kind or ('p' if version == '5' else '')}"
        if token in keys:  # a variant named after the model ("H100 PCIe") where the table has one
            variant = next((f"{token} {t}" for t in tokens[i + 1:] if f"{token} {t}" in keys), token)
            return keys[variant]
    return None


def lookup(device_name):
    """Peak FLOP/s of a device by its reported name; None if unknown."""
    key = canonical(device_name)
    return None if key is None else PEAK_FLOPS[key]


def cpu_matmul_peak(size=2048, repeats=5):
    """Measured float32 matmul FLOP/s of this host's CPU (best of `repeats`), cached per process."""
    global _cpu_peak  # pylint: disable=global-statement
    if _cpu_peak is None:
        with tf.device("/CPU:0"):
            a = tf.random.normal([size, size])
            b = tf.random.normal([size, size])
            matmul = tf.function(lambda x, y: tf.matmul(x, y))
            matmul(a, b).numpy()  # trace and warm up
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                matmul(a, b).numpy()
                best = min(best, time.perf_counter() - start)
        _cpu_peak = 2 * size**3 / best
        logging.info("CPU matmul probe: %.3g FLOP/s", _cpu_peak)
    return _cpu_peak


def peak_flops(device_kind, num_replicas):
    """Total peak FLOP/s of the replicas of a run, or None where it is not known.

    Logical CPU devices share one physical CPU, so the probe's figure is the total on CPU.
    """
    if device_kind == "CPU":
        return cpu_matmul_peak()
    if device_kind == "GPU":
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        name = details.get("device_name", "")
    else:
        name = os.environ.get("TPU_ACCELERATOR_TYPE", "")
    per_device = lookup(name)
    if per_device is None:
        logging.warning("no peak FLOP/s known for %s %r; MFU is not reported", device_kind, name)
        return None
    return per_device * num_replicas


def derived(examples_per_sec, flops_per_example, tokens_per_example, peak):
    """tokens/s, model FLOP/s and MFU from examples/s (None where an input is unknown)."""
    out = {"model_flops_per_sec": examples_per_sec * flops_per_example if examples_per_sec else None}
    out["tokens_per_sec"] = examples_per_sec * tokens_per_example if examples_per_sec and tokens_per_example else None
    out["mfu"] = out["model_flops_per_sec"] / peak if out["model_flops_per_sec"] and peak else None
    return out
