"""Peak FLOP/s by device name: whole names, never a part of another device's."""
import pytest

from tfscale import throughput

# Names as TensorFlow's device details (GPUs) or $TPU_ACCELERATOR_TYPE / device kinds (TPUs) give them.
REPORTED = {
    "NVIDIA H200": "H200",
    "NVIDIA H100 80GB HBM3": "H100",
    "NVIDIA H100 PCIe": "H100 PCIe",
    "NVIDIA H100 NVL": "H100 NVL",
    "NVIDIA A100-SXM4-40GB": "A100",
    "NVIDIA A100-SXM4-80GB": "A100",
    "NVIDIA A100-PCIE-40GB": "A100",
    "NVIDIA A100 80GB PCIe": "A100",
    "NVIDIA L40S": "L40S",
    "NVIDIA L40": "L40",
    "NVIDIA L4": "L4",
    "NVIDIA A10": "A10",
    "NVIDIA A10G": "A10G",
    "Tesla V100-SXM2-16GB": "V100",
    "Tesla V100-PCIE-32GB": "V100 PCIe",
    "Tesla T4": "T4",
    "v2-8": "v2",
    "v3-32": "v3",
    "v4-8": "v4",
    "TPU v4": "v4",
    "v5litepod-8": "v5e",
    "TPU v5 lite": "v5e",
    "v5e-4": "v5e",
    "v5p-8": "v5p",
    "TPU v5": "v5p",
    "v6e-8": "v6e",
    "TPU v6 lite": "v6e",
}


def test_every_table_entry_is_reached_by_a_name_a_device_reports():
    assert set(REPORTED.values()) == set(throughput.PEAK_FLOPS)


@pytest.mark.parametrize("name", sorted(REPORTED))
def test_reported_name_resolves_to_its_own_entry(name):
    assert throughput.canonical(name) == REPORTED[name]
    assert throughput.lookup(name) == throughput.PEAK_FLOPS[REPORTED[name]]


def test_near_misses_do_not_borrow_each_others_peak():
    near = {"NVIDIA L40S": 362.05e12, "NVIDIA L40": 181.05e12, "NVIDIA L4": 121e12,
            "NVIDIA A10": 125e12, "NVIDIA A10G": 70e12, "NVIDIA A100-SXM4-40GB": 312e12,
            "NVIDIA H100 PCIe": 756e12, "NVIDIA H100 80GB HBM3": 989.4e12, "NVIDIA H200": 989.4e12}
    assert {n: throughput.lookup(n) for n in near} == near


@pytest.mark.parametrize("name", ["", "unknown", "NVIDIA GeForce RTX 4090", "NVIDIA A40", "NVIDIA GH200 480GB",
                                  "NVIDIA L40G", "NVIDIA H800", "TPU v4 lite", "v7-8", "NVIDIA RTX A6000"])
def test_an_unknown_device_has_no_peak(name):
    assert throughput.lookup(name) is None


def test_mfu_is_reported_only_for_a_known_tpu(monkeypatch):
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5litepod-8")
    assert throughput.peak_flops("TPU", 8) == 8 * 197e12
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v9x-8")
    assert throughput.peak_flops("TPU", 8) is None
    assert throughput.derived(100.0, 1e9, None, None)["mfu"] is None
