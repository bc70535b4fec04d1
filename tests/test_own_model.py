"""A user's own model (an importable builder) and own data (ArrayRecord shards), trained through tfscale."""
import os

import pytest

from conftest import one_error_line, run_command, tiny_config
import tfscale
from tfscale import ConfigError, config as config_lib, models


def test_the_examples_train_from_their_own_shards_end_to_end(tmp_path):
    shards, workdir = str(tmp_path / "my_data"), str(tmp_path / "my_model")
    written = run_command("examples.my_data", [f"--out={shards}"])
    assert written.returncode == 0, written.stderr[-2000:]
    from examples import my_config  # pylint: disable=import-outside-toplevel
    config = my_config.get_config(shards)
    summary = tfscale.train(config, workdir)
    assert summary["num_params"] == models.num_params(models.build(config.model, _info(shards)))
    assert summary["eval_accuracy"] >= 0.9  # 114 held-out tumours; a majority guess gets 0.63
    assert summary["flops_per_example"] > 6 * 64 * 128  # counted from the model's own Dense layers
    assert os.path.exists(os.path.join(workdir, "export", "saved_model", "saved_model.pb"))
    assert os.path.exists(os.path.join(workdir, "eval.json"))  # binary: ROC-AUC from the positive class


def _info(shards):
    from tfscale.data import array_record  # pylint: disable=import-outside-toplevel
    return array_record.ArrayRecordSource(shards).info


def test_own_data_factory_trains_through_its_importable_name(tmp_path):
    from examples import my_config  # pylint: disable=import-outside-toplevel
    config = my_config.get_config().unlock()
    config.data.name, config.data.path = "examples.my_data:load", ""
    config.train.num_steps, config.eval.every_steps, config.checkpoint.every_steps = 60, 30, 60
    config.export.saved_model = False
    summary = tfscale.train(config.lock(), str(tmp_path / "run"))
    assert summary["data"] == "examples.my_data:load" and summary["steps"] == 60
    assert summary["eval_accuracy"] >= 0.85  # a majority guess gets 0.63


def not_a_source(data_config, seq_len):  # pylint: disable=unused-argument
    return {"train": None}


@pytest.mark.parametrize("name,fragment", [
    ("examples.nowhere:load", "data 'examples.nowhere:load': cannot import examples.nowhere"),
    ("examples.my_data:missing", "examples.my_data has no function missing"),
])
def test_a_data_factory_that_cannot_be_found_is_refused_before_anything_is_written(name, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config_lib.validate(tiny_config(data__name=name))


def test_a_data_factory_that_returns_no_source_is_one_error(tmp_path):
    with pytest.raises(ConfigError, match="returned dict, not a tfscale.data.DataSource"):
        tfscale.train(tiny_config(data__name="test_own_model:not_a_source"), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("name,fragment", [
    ("examples.nowhere:build", "cannot import examples.nowhere"),
    ("examples.my_model:missing", "examples.my_model has no function missing"),
    ("resnet", "unknown model 'resnet'"),
])
def test_a_model_that_cannot_be_found_is_refused_before_anything_is_written(name, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config_lib.validate(tiny_config(model__name=name))


def test_own_model_knobs_are_checked_against_its_signature(tmp_path):
    import ml_collections  # pylint: disable=import-outside-toplevel
    model = ml_collections.ConfigDict({"name": "examples.my_model:build", "width": 8, "depht": 2})
    proc = run_command("train", ["--config=experiments/configs/digits_mlp.py:tiny", f"--workdir={tmp_path / 'run'}",
                                 "--config.model.name=examples.my_model:build", "--config.model.width=8"])
    assert "has no knob model.depth" in one_error_line(proc)  # digits_mlp's depth is not a knob of build()
    with pytest.raises(ConfigError, match="has no knob model.depht"):
        models.check_knobs(model)
