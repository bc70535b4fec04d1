"""Peak FLOP/s of the devices a run uses, for model FLOPs utilisation (MFU).

MFU = achieved model FLOP/s / peak FLOP/s (PaLM, Chowdhery et al. 2022, appendix B): the model
FLOPs count only the math the model needs (training FLOPs per example x examples/s), not
rematerialisation or padding. Accelerators' peaks come from a table of dense bf16/fp16 tensor
figures; the CPU's from a short float32 matmul probe run once per process.
"""
import os
import time

from absl import logging
import tensorflow as tf

# Dense (no sparsity) bf16/fp16 peak FLOP/s per device as TensorFlow sees it.
# GPUs: NVIDIA datasheets (H100/H200 SXM 989.4 TF, H100 PCIe 756 TF, A100 312 TF, L4 121 TF,
# A10 125 TF, V100 125 TF, T4 65 TF). TPUs: Cloud TPU system-architecture pages, per chip
# (v2 45 TF and v3 123 TF, each chip 2 devices; v4 275 TF, one megacore device per chip;
# v5e 197 TF; v5p 459 TF; v6e 918 TF).
PEAK_FLOPS = {
    "H200": 989.4e12, "H100 PCIe": 756e12, "H100": 989.4e12, "A100": 312e12, "L4": 121e12,
    "A10": 125e12, "V100": 125e12, "T4": 65e12,
    "v2": 45e12 / 2, "v3": 123e12 / 2, "v4": 275e12, "v5litepod": 197e12, "v5e": 197e12,
    "v5p": 459e12, "v6e": 918e12,
}

_cpu_peak = None


def lookup(device_name):
    """Peak FLOP/s of a device by (a part of) its name, longest match first; None if unknown."""
    for key in sorted(PEAK_FLOPS, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return PEAK_FLOPS[key]
    return None


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
