"""Damaged JSON state files: one error naming the file, or, for a file that only records work that
can be redone (a recipe stage's result), a warning naming it and the work redone."""
# pylint: disable=protected-access  (a recipe stage's own logic, with its work stubbed out)
import json
import os
import types

import pytest

from conftest import absl_messages
from tfscale import ConfigError, io, recipe, workdir as workdir_lib
from tfscale.data import pycode, tokenizers

from experiments.configs import text_classifier

TRUNCATED = '{"steps": 20, "eval_lo'


def _damage(path, text=TRUNCATED):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_a_damaged_json_file_is_an_error_naming_it_and_a_cache_of_it_is_redone(tmp_path):
    path = str(tmp_path / "summary.json")
    _damage(path)
    with pytest.raises(io.DamagedFile) as error:
        io.read_json(path)
    assert str(error.value).startswith(f"{path} is damaged (not JSON: ")
    assert isinstance(error.value, ConfigError) and isinstance(error.value, ValueError)  # as JSONDecodeError was
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(io.DamagedFile, match="binary.json is damaged .not UTF-8 text"):
        io.read_json(str(tmp_path / "binary.json"))
    with absl_messages() as messages:
        assert io.read_cache_json(path) is None
        assert io.read_cache_json(str(tmp_path / "absent.json")) is None
        _damage(str(tmp_path / "list.json"), "[1, 2]")
        assert io.read_cache_json(str(tmp_path / "list.json")) is None
    assert [m.split(" is damaged")[0] for m in messages] == [path, str(tmp_path / "list.json")]
    io.write_json(path, {"steps": 20})
    assert io.read_cache_json(path) == {"steps": 20}


def _tokenizer_dir(workdir, tokenizer):
    folder = os.path.join(workdir, workdir_lib.TOKENIZER_DIR)
    tokenizer.save(folder)
    _damage(os.path.join(folder, tokenizers.SPEC_FILE))
    return folder


def _files(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_a_damaged_byte_tokenizer_file_stops_with_one_line_naming_it_and_what_to_do(tmp_path):
    folder = _tokenizer_dir(str(tmp_path), tokenizers.ByteTokenizer())
    before = _files(folder)
    with pytest.raises(ConfigError) as error:
        workdir_lib.check_tokenizer(str(tmp_path), tokenizers.ByteTokenizer())
    message = str(error.value)
    assert message.startswith(f"{folder}/tokenizer.json is damaged (not JSON: ")
    assert f"delete {folder} to record its tokenizer again" in message and "\n" not in message
    assert _files(folder) == before


def test_a_damaged_sentencepiece_tokenizer_file_is_rebuilt_from_its_model(tmp_path):
    texts = [open(path, "rb").read() for path in pycode.source_files()[:15]]
    tokenizer = tokenizers.SentencePieceTokenizer.train(texts, 400)
    workdir = str(tmp_path)
    folder = _tokenizer_dir(workdir, tokenizer)
    with pytest.raises(ConfigError, match="tokenizer.json is not the data's tokenizer"):
        workdir_lib.check_tokenizer(workdir, tokenizers.ByteTokenizer())  # the model says what it was
    workdir_lib.check_tokenizer(workdir, tokenizer)
    with absl_messages() as messages:
        workdir_lib.save_tokenizer(workdir, tokenizer)
    assert any(f"{folder}/tokenizer.json is damaged" in m for m in messages)
    assert json.load(open(os.path.join(folder, tokenizers.SPEC_FILE))) == tokenizer.spec()


@pytest.fixture
def stage(tmp_path):
    """The tiny recipe's config, its workdir and what a stage is given to report progress."""
    return text_classifier.get_config("tiny"), str(tmp_path / "recipe"), recipe.Progress(8), {}


def test_a_damaged_baseline_json_is_fitted_again(stage, monkeypatch):
    config, workdir, progress, timings = stage
    path = os.path.join(workdir, "baseline", "baseline.json")
    _damage(path)
    monkeypatch.setattr(recipe, "data", types.SimpleNamespace(load=lambda *args: "the data"))
    monkeypatch.setattr(recipe.baselines, "bag_of_bytes", lambda source, **_: {"accuracy": 0.5, "data": source})
    with absl_messages() as messages:
        result, did = recipe._baseline(config, workdir, progress, timings)
    assert did and result == {"accuracy": 0.5, "data": "the data"} == io.read_json(path)
    assert any(m.startswith(f"{path} is damaged") for m in messages)


def test_a_stage_with_a_damaged_summary_json_is_not_finished_and_runs_again(stage, monkeypatch):
    config, workdir, progress, timings = stage
    folder = os.path.join(workdir, "seed_0", "scratch")
    path = os.path.join(folder, "summary.json")
    _damage(path)

    def train(c, where):  # training.train reads summary.json too: the damaged one must be gone
        assert where == folder and not os.path.exists(path)
        io.write_json(path, {"steps": c.train.num_steps})
        return {"steps": c.train.num_steps}

    monkeypatch.setattr(recipe, "training", types.SimpleNamespace(train=train))
    with absl_messages() as messages:
        summary, did = recipe._train_stage(config, "scratch", workdir, 0, folder, "seed 0 scratch",
                                           progress, timings)
    assert did and summary == {"steps": 20} == io.read_json(path)
    assert any(m.startswith(f"{path} is damaged") for m in messages)
    summary, did = recipe._train_stage(config, "scratch", workdir, 0, folder, "seed 0 scratch",
                                       progress, timings)
    assert not did and summary == {"steps": 20}  # now finished


def test_a_damaged_eval_json_is_evaluated_again_from_the_export(tmp_path, monkeypatch):
    from tfscale import evaluation  # pylint: disable=import-outside-toplevel
    folder = str(tmp_path / "teacher")
    _damage(os.path.join(folder, "eval.json"), "")
    monkeypatch.setattr(evaluation, "evaluate_workdir", lambda where: {"accuracy": 0.7, "workdir": where})
    assert recipe._eval_report(folder) == {"accuracy": 0.7, "workdir": folder}


def test_a_damaged_compression_json_is_made_again(stage, monkeypatch):
    from tfscale import compress  # pylint: disable=import-outside-toplevel
    config, workdir, progress, timings = stage
    folder = os.path.join(workdir, "seed_0", "teacher")
    path = os.path.join(folder, "compression.json")
    _damage(path, '{"variants": [{"variant": "float32"}, {"vari')
    report = {"variants": [{"variant": v, "accuracy": 0.5} for v in recipe.variants(config).split(",")]}
    monkeypatch.setattr(compress, "compress", lambda c, where: (report, "table"))
    with absl_messages() as messages:
        result, did = recipe._compress_stage(config, workdir, 0, folder, "seed 0 students",
                                             progress, timings)
    assert did and result == report
    assert any(m.startswith(f"{path} is damaged") for m in messages)
