"""`experiments.evaluate` reports the run's own figures: the same loss and bits per byte as the
run's `summary.json` for the same weights and held-out windows, for bytes and SentencePiece data."""
import json
import os
import shutil
import sysconfig

import pytest

import tfscale
from experiments.configs import lm
from tfscale import evaluation
from tfscale.data import prepare_corpus

STDLIB = sysconfig.get_paths()["stdlib"]


def _lm_run(data_dir, workdir):
    config = lm.get_config("tiny").unlock()
    config.data.name, config.data.path = "array_record", data_dir
    config.train.num_steps, config.eval.max_examples = 6, 40
    config.compress.variants = "float32"
    return tfscale.train(config.lock(), workdir)


@pytest.mark.parametrize("tokenizer", ["bytes", "sentencepiece"])
def test_evaluate_gives_the_runs_own_loss_and_bits_per_byte(tmp_path, tokenizer):
    tree = tmp_path / "tree"
    shutil.copytree(os.path.join(STDLIB, "json"), tree / "json", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.join(STDLIB, "email"), tree / "email", ignore=shutil.ignore_patterns("__pycache__"))
    data_dir, workdir = str(tmp_path / "data"), str(tmp_path / "run")
    manifest = prepare_corpus.prepare(str(tree), data_dir, seq_len=32, tokenizer=tokenizer, vocab_size=400,
                                      shards=2)
    summary = _lm_run(data_dir, workdir)
    report = evaluation.evaluate_workdir(workdir)
    with open(os.path.join(workdir, "eval.json")) as f:
        assert json.load(f)["bits_per_byte"] == report["bits_per_byte"]
    assert report["num_examples"] == 40
    assert report["loss"] == pytest.approx(summary["eval_loss"], abs=1e-4)
    assert report["bits_per_byte"] == pytest.approx(summary["bits_per_byte"], abs=1e-4)
    per_token = manifest["bytes_per_token"]
    assert (per_token > 1.3) == (tokenizer == "sentencepiece")  # the case that tells
