"""ArrayRecord data streamed by index: the same order, weights and resume as data held in memory."""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_refused, run_command, tiny_config
import tfscale
from tfscale import data
from tfscale.data import array_record


def prepare(config, out, shards=3):
    proc = run_command("prepare", [f"--config={config}", f"--workdir={out}", f"--shards={shards}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return prepare("experiments/configs/digits_mlp.py:tiny", str(tmp_path_factory.mktemp("ar") / "digits"))


def streamed(folder, **overrides):
    return tiny_config(data__name="array_record", data__path=folder, **overrides)


def weights(workdir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if n.startswith("network/")}


def test_prepared_folder_holds_the_same_examples_as_the_source(digits_dir):
    memory = data.load(tiny_config().data)
    source = array_record.ArrayRecordSource(digits_dir)
    assert source.info == memory.info and source.task == "classifier"
    for split, n in (("train", memory.info.num_train), ("eval", memory.info.num_eval)):
        rows = np.random.default_rng(0).permutation(n)[:50]
        for a, b in zip(source.read(split, rows), memory.read(split, rows)):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    manifest = array_record.read_manifest(digits_dir)
    assert len(manifest["splits"]["train"]["files"]) == 3 and len(manifest["sha256"]) == 6


@pytest.mark.parametrize("strategy,accum", [("one_device", 1), ("mirrored", 2)])  # mirrored: 4 CPU replicas
def test_training_from_the_stream_gives_the_weights_of_training_from_memory(digits_dir, tmp_path, strategy, accum):
    common = dict(train__num_steps=30, export__saved_model=False, deterministic=True,
                  distribute__strategy=strategy, train__accum_steps=accum)
    a = tfscale.train(tiny_config(**common), str(tmp_path / "memory"))
    b = tfscale.train(streamed(digits_dir, **common), str(tmp_path / "stream"))
    wa, wb = weights(str(tmp_path / "memory")), weights(str(tmp_path / "stream"))
    assert wa.keys() == wb.keys() and max(float(np.max(np.abs(wa[n] - wb[n]))) for n in wa) <= 1e-6
    assert b["eval_loss"] == pytest.approx(a["eval_loss"], abs=1e-6)
    assert b["eval_accuracy"] == a["eval_accuracy"]


def test_sigkill_and_resume_on_the_stream_end_with_the_weights_of_an_unbroken_run(digits_dir, tmp_path):
    from test_resume import kill_then_resume, max_difference  # pylint: disable=import-outside-toplevel
    args = ["--config=experiments/configs/digits_mlp.py:tiny", "--config.train.num_steps=300",
            "--config.checkpoint.every_steps=20", "--config.deterministic=True", "--config.export.saved_model=False",
            "--config.data.name=array_record", f"--config.data.path={digits_dir}"]
    assert max_difference(*kill_then_resume(args, tmp_path, 300, after_step=60)) <= 1e-6


def test_two_local_workers_on_the_stream_give_the_weights_of_one_device(digits_dir, tmp_path):
    from test_multi_worker import ARGS, launch  # pylint: disable=import-outside-toplevel
    from test_resume import max_difference  # pylint: disable=import-outside-toplevel
    args = [*ARGS, "--config.data.name=array_record", f"--config.data.path={digits_dir}",
            "--config.export.saved_model=False"]
    single, shared = str(tmp_path / "single"), str(tmp_path / "multi")
    single_run = run_command("train", [f"--workdir={single}", *args])  # the reference: one device, in-process
    assert single_run.returncode == 0, single_run.stderr[-3000:]
    result = launch(2, [sys.executable, "-m", "experiments.train", f"--workdir={shared}", *args,
                        "--config.distribute.strategy=multi_worker"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_difference(weights(single), weights(shared)) < 1e-5


def batches(fn, ctx=None):
    ds = fn(ctx) if ctx else fn()
    return [labels.numpy() for _, labels in ds]


def test_a_resumed_stream_and_each_input_pipeline_read_exactly_their_rows(digits_dir):
    source = array_record.ArrayRecordSource(digits_dir)
    full = np.concatenate(batches(source.train_dataset_fn(32, seed=3, start_step=0, num_steps=10)))
    tail = np.concatenate(batches(source.train_dataset_fn(32, seed=3, start_step=6, num_steps=10)))
    assert np.array_equal(tail, full[6 * 32:])
    memory = data.load(tiny_config().data)
    assert np.array_equal(full, np.concatenate(batches(memory.train_dataset_fn(32, 3, 0, 10))))
    # 2 hosts with 2 replicas each: host h gets rows [16h, 16h + 16) of every global batch
    per_host = [batches(source.train_dataset_fn(32, 3, 0, 10), tf.distribute.InputContext(2, h, 4)) for h in (0, 1)]
    for step in range(10):
        together = np.concatenate([per_host[h][2 * step + r] for h in (0, 1) for r in (0, 1)])
        assert np.array_equal(together, full[32 * step:32 * (step + 1)])


def test_prepare_resumes_and_keeps_complete_shards(digits_dir, tmp_path):
    import shutil  # pylint: disable=import-outside-toplevel
    out = str(tmp_path / "copy")
    shutil.copytree(digits_dir, out)
    os.remove(os.path.join(out, "train-00001-of-00003.array_record"))
    kept = os.stat(os.path.join(out, "train-00000-of-00003.array_record")).st_mtime_ns
    prepare("experiments/configs/digits_mlp.py:tiny", out)
    assert os.stat(os.path.join(out, "train-00000-of-00003.array_record")).st_mtime_ns == kept
    assert array_record.read_manifest(out)["sha256"] == array_record.read_manifest(digits_dir)["sha256"]


def test_a_language_model_streams_its_windows(tmp_path):
    folder = prepare("experiments/configs/lm.py:tiny", str(tmp_path / "pycode"), shards=2)
    source = array_record.ArrayRecordSource(folder)
    assert source.task == "lm" and source.info.input_shape == (32,) and source.shapes[1] == (32,)
    from experiments.configs import lm  # pylint: disable=import-outside-toplevel
    config = lm.get_config("tiny")
    config.data.name, config.data.path = "array_record", folder
    config.train.num_steps, config.export.saved_model = 10, False
    summary = tfscale.train(config, str(tmp_path / "run"))
    assert summary["steps"] == 10 and 0 < summary["bits_per_byte"] < 8


def _damage(folder, damage):
    manifest_path = os.path.join(folder, "manifest.json")
    shard = os.path.join(folder, "eval-00002-of-00003.array_record")
    if damage == "missing_shard":
        os.remove(shard)
    elif damage == "empty_shard":
        open(shard, "wb").close()
    elif damage == "truncated_shard":
        with open(shard, "r+b") as f:
            f.truncate(os.path.getsize(shard) // 2)
    elif damage in ("manifest_count", "manifest_json", "manifest_layout"):
        import json  # pylint: disable=import-outside-toplevel
        with open(manifest_path) as f:
            manifest = json.load(f)
        manifest["splits"]["train"]["num_examples"] += 7
        if damage == "manifest_layout":  # an entry cut out by hand
            del manifest["splits"]["eval"]
        with open(manifest_path, "w") as f:
            f.write(json.dumps(manifest)[:-20] if damage == "manifest_json" else json.dumps(manifest))


@pytest.mark.parametrize("damage,fragment", [
    ("no_folder", "holds no manifest.json"),
    ("missing_shard", "is missing its shard eval-00002-of-00003.array_record"),
    ("empty_shard", "eval-00002-of-00003.array_record is empty"),
    ("truncated_shard", "eval-00002-of-00003.array_record is "),
    ("manifest_count", "manifest.json does not match its files: its train shards hold"),
    ("manifest_json", "manifest.json is not valid JSON"),
    ("manifest_layout", "manifest.json is damaged (its eval entry is missing or malformed)"),
    ("no_path", "needs data.path"),
])
def test_a_bad_data_folder_is_one_error_line(digits_dir, tmp_path, damage, fragment):
    import shutil  # pylint: disable=import-outside-toplevel
    folder = str(tmp_path / "data")
    if damage not in ("no_folder", "no_path"):
        shutil.copytree(digits_dir, folder)
        _damage(folder, damage)
    path = "" if damage == "no_path" else folder
    assert_refused(fragment, tmp_path / "run", {"name": "array_record", "path": path},
                   through_command=damage == "truncated_shard")


def test_verify_reads_every_shard_against_its_checksum(digits_dir, tmp_path):
    import shutil  # pylint: disable=import-outside-toplevel
    folder = str(tmp_path / "data")
    shutil.copytree(digits_dir, folder)
    assert array_record.verify(folder) == 6
    shard = os.path.join(folder, "train-00001-of-00003.array_record")
    with open(shard, "r+b") as f:  # same size, one byte flipped: only the checksum can tell
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(tfscale.ConfigError, match="train-00001-of-00003.array_record does not match its manifest's SHA-256"):
        array_record.verify(folder)
