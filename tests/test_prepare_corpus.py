"""`experiments.prepare --files`: a tree of text files as deduplicated, split, tokenized LM shards."""
import json
import os
import shutil
import sysconfig

import numpy as np
import pytest
import tensorflow as tf

from conftest import one_error_line, run_command
import tfscale
from tfscale.data import array_record, dedup, prepare_corpus
from tfscale.data.source import InMemorySource
from tfscale.data.info import DataInfo

STDLIB = sysconfig.get_paths()["stdlib"]


def _tree(base):
    """Two stdlib packages, a near-duplicate of one file, an exact duplicate and a test folder."""
    root = base / "tree"
    for package in ("json", "email"):
        shutil.copytree(os.path.join(STDLIB, package), root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    text = (root / "email" / "utils.py").read_bytes()
    (root / "near_copy.py").write_bytes(text.replace(b"def ", b"def  ", 3))
    (root / "exact_copy.py").write_bytes(text)
    (root / "tests").mkdir()
    (root / "tests" / "test_secret.py").write_bytes(b"SECRET_TEST_MARKER = 1\n" * 200)
    return str(root)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return _tree(tmp_path_factory.mktemp("corpus"))


def prepare(tree, out, *flags):
    """`experiments.prepare --files=TREE` into `out`, run in this process."""
    return run_command("prepare", [f"--files={tree}", f"--workdir={out}", "--seq_len=32", "--shards=3", *flags])


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shards") / "bytes")
    proc = prepare(tree, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _streams(source):
    return {split: source.read(split, np.arange(n)) for split, n in
            (("train", source.info.num_train), ("eval", source.info.num_eval))}


def test_shards_hold_every_kept_file_once_and_no_held_out_span_of_training(prepared):
    source = array_record.ArrayRecordSource(prepared)
    manifest = source.manifest
    assert source.task == "lm" and source.info.input_shape == (32,) and source.info.num_classes == 256
    assert manifest["tokenizer"]["kind"] == "bytes" and manifest["window"] == {"dtype": "uint8", "length": 33}
    streams = _streams(source)
    for inputs, targets in streams.values():  # targets are the inputs shifted by one token
        assert np.array_equal(inputs[:, 1:], targets[:, :-1])
    train = np.concatenate([streams["train"][0], streams["train"][1][:, -1:]], axis=1).astype(np.uint8).tobytes()
    held = np.concatenate([streams["eval"][0], streams["eval"][1][:, -1:]], axis=1).astype(np.uint8).tobytes()
    assert b"SECRET_TEST_MARKER" not in train + held  # test folders are not entered
    reference = np.sort(dedup.window_hashes(train))
    assert not dedup.shared_windows(dedup.window_hashes(held), reference).any()
    counts = manifest["counts"]
    assert source.info.num_train == counts["train"]["tokens"] // 33
    assert 0.01 < counts["eval"]["bytes"] / (counts["train"]["bytes"] + counts["eval"]["bytes"]) < 0.1
    assert manifest["split_rule"]["by"] == "file" and manifest["bytes_per_token"] == 1.0


def test_the_split_drops_exact_duplicates_and_keeps_near_duplicates_together(tree):
    from tfscale.data import corpus  # pylint: disable=import-outside-toplevel
    files = corpus.find_files(tree)
    assert not any("/tests/" in f for f in files)
    sides = corpus.split_files(files, 0.05)
    kept = sides["train"] + sides["validation"]
    assert len(kept) == len(files) - 1  # exact_copy.py (or its original) kept once
    near, original = os.path.join(tree, "near_copy.py"), os.path.join(tree, "email", "utils.py")
    assert (near in sides["validation"]) == (original in sides["validation"])


def test_an_interrupted_prepare_resumes_to_the_same_shards(prepared, tree, tmp_path):
    out = str(tmp_path / "again")
    shutil.copytree(prepared, out)
    names = sorted(f for f in os.listdir(out) if f.endswith(".array_record"))
    os.remove(os.path.join(out, names[1]))
    with open(os.path.join(out, names[2]) + ".tmp", "wb") as f:  # a shard cut off mid-write
        f.write(b"partial")
    os.remove(os.path.join(out, names[2]))
    kept = os.stat(os.path.join(out, names[0])).st_mtime_ns
    proc = prepare(tree, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert os.stat(os.path.join(out, names[0])).st_mtime_ns == kept
    assert array_record.read_manifest(out)["sha256"] == array_record.read_manifest(prepared)["sha256"]
    assert not any(f.endswith(".tmp") for f in os.listdir(out))


def test_prepare_into_a_folder_of_other_settings_is_one_error(prepared, tree, tmp_path):
    out = str(tmp_path / "other")
    shutil.copytree(prepared, out)
    proc = prepare(tree, out, "--validation_share=0.1")
    assert "was prepared with other settings (validation_share differ)" in one_error_line(proc)


def test_an_lm_trains_on_the_shards_and_keeps_their_tokenizer(prepared, tmp_path):
    from experiments.configs import lm  # pylint: disable=import-outside-toplevel
    config = lm.get_config("tiny")
    config.data.name, config.data.path = "array_record", prepared
    config.train.num_steps, config.checkpoint.every_steps = 8, 4
    workdir = str(tmp_path / "run")
    summary = tfscale.train(config, workdir)
    assert summary["steps"] == 8 and 0 < summary["bits_per_byte"] < 8
    saved = json.load(open(os.path.join(workdir, "tokenizer", "tokenizer.json")))
    assert saved["kind"] == "bytes"
    loaded = tf.saved_model.load(os.path.join(workdir, "export", "saved_model"))
    assert "serving_text" in loaded.signatures  # the export takes raw strings


def test_a_run_resumed_on_data_with_another_tokenizer_is_one_error(prepared, tree, tmp_path):
    from experiments.configs import lm  # pylint: disable=import-outside-toplevel
    data_dir, workdir = str(tmp_path / "data"), str(tmp_path / "run")
    shutil.copytree(prepared, data_dir)  # what prepare(tree, data_dir) writes
    config = lm.get_config("tiny").unlock()
    config.data.name, config.data.path = "array_record", data_dir
    config.train.num_steps, config.export.saved_model = 4, False
    tfscale.train(config.lock(), workdir)
    shutil.rmtree(data_dir)
    sp = prepare(tree, data_dir, "--tokenizer=sentencepiece", "--vocab_size=400")
    assert sp.returncode == 0, sp.stderr[-2000:]
    before = sorted(os.listdir(workdir))
    with pytest.raises(tfscale.ConfigError) as error:
        tfscale.train(config, workdir)
    assert f"{workdir}/tokenizer/tokenizer.json is not the data's tokenizer" in str(error.value)
    assert sorted(os.listdir(workdir)) == before


def test_a_sentencepiece_corpus_counts_bits_per_byte(tree, tmp_path):
    out = str(tmp_path / "sp")
    proc = prepare(tree, out, "--tokenizer=sentencepiece", "--vocab_size=512")
    assert proc.returncode == 0, proc.stderr[-2000:]
    source = array_record.ArrayRecordSource(out)
    assert source.info.num_classes == 512 and source.manifest["window"]["dtype"] == "uint16"
    assert source.info.bytes_per_token > 1.5  # pieces longer than a byte, measured on held-out text
    tokenizer = source.tokenizer()
    inputs, targets = source.read("eval", [0])
    text = tokenizer.decode(np.concatenate([inputs[0], targets[0][-1:]]))
    assert len(text) > 33  # 33 tokens of more than a byte each


@pytest.mark.parametrize("pipelines", [1, 2, 4])
def test_every_index_is_read_exactly_once_per_epoch_across_input_pipelines(tmp_path, pipelines):
    n, batch = 96, 16  # 6 updates an epoch
    ids = np.arange(n, dtype=np.int32)
    info = DataInfo("ids", (1,), n, 1.0, n, 8)
    folder = str(tmp_path / "ids")
    array_record.write(folder, InMemorySource(info, (ids[:, None], ids), (ids[:8, None], ids[:8])), shards=3)
    source = array_record.ArrayRecordSource(folder)
    epochs = {0: [], 1: []}
    for pipe in range(pipelines):
        ctx = tf.distribute.InputContext(pipelines, pipe, pipelines)
        for step, (_, labels) in enumerate(source.train_dataset_fn(batch, seed=5, start_step=0, num_steps=12)(ctx)):
            epochs[step // 6].append(labels.numpy().ravel())
    for rows in epochs.values():
        assert sorted(np.concatenate(rows).tolist()) == list(range(n))
