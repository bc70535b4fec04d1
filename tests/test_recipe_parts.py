"""The text-classification recipe's parts that need no finished run: its refusals, rows sharing a
span, a stage's tune variant, the variants' names and the goals' arithmetic."""
import json
import os

import ml_collections
import numpy as np
import pytest

from conftest import with_overrides
from tfscale import ConfigError, recipe
from tfscale.recipe import corpus, table

from experiments.configs import text_classifier


def tiny(**overrides):
    return with_overrides(text_classifier.get_config("tiny").unlock(), **overrides)


def test_a_student_larger_than_the_share_is_refused_before_anything_is_written(tmp_path):
    config = tiny(finetune__compress__distill__student__d_model=32)
    with pytest.raises(ConfigError, match="more than recipe.max_student_share 0.1"):
        recipe.run(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")
    with pytest.raises(ConfigError, match="recipe.seeds must be >= 1"):
        recipe.run(tiny(recipe__seeds=0), str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="recipe.quantized must be one of distilled_int8, distilled_dynamic_range"):
        recipe.run(tiny(recipe__quantized="int8"), str(tmp_path / "run"))


def test_rows_sharing_a_span_are_found_within_rows_only():
    rng = np.random.default_rng(0)
    held_out = rng.integers(0, 256, (3, 128), dtype=np.uint8)
    reference = np.sort(corpus.span_hashes(held_out).ravel())
    rows = rng.integers(0, 256, (4, 129), dtype=np.uint8)
    rows[1, 30:94] = held_out[2, 64:128]  # one whole 64-byte span of a held-out window
    rows[2, 65:129] = held_out[0, :64]  # at the very end of a row
    rows[3, 100:129] = held_out[1, :29]  # 29 bytes: no whole span
    assert corpus.rows_sharing_a_span(rows, reference).tolist() == [False, True, True, False]
    # a span across two held-out windows is not one of theirs
    across = np.concatenate([held_out[0, 96:], held_out[1, :32]])[None]
    assert not corpus.rows_sharing_a_span(np.pad(across, ((0, 0), (0, 65))), reference).any()


def test_a_stages_tune_variant_chooses_its_rate_on_the_tuning_carve_and_trains_the_best_on_train(tmp_path):
    from experiments import cli
    from tfscale import tuning
    config = with_overrides(text_classifier.get_config("scratch,tiny,tune").unlock(),
                            tune__space=("optimizer.learning_rate=choice(1e-3, 3e-3)",), train__num_steps=10)
    summary = tuning.tune(config.lock(), str(tmp_path), say=lambda _: None)
    trials = [json.load(open(tmp_path / f"trials/{i:04d}/config.json")) for i in range(2)]
    assert sorted(t["optimizer"]["learning_rate"] for t in trials) == [1e-3, 3e-3]
    assert {(t["data"]["train_split"], t["data"]["eval_split"]) for t in trials} == {("tuning_train", "tuning_validation")}
    best = cli.load_config_file(str(tmp_path / "best_config.py"))
    assert (best.data.train_split, best.data.eval_split) == ("train", "validation")
    assert best.optimizer.learning_rate == summary["best"]["params"]["optimizer.learning_rate"]


@pytest.mark.parametrize("variant", ["recipe,tune", "finetune,tune,tune", "finetune,big", "tune"])
def test_an_unknown_variant_is_a_config_error(variant):
    with pytest.raises(ConfigError, match="unknown variant"):
        text_classifier.get_config(variant)


def test_the_goals_are_judged_on_the_measured_figures():
    def row(*accuracies, size=1000.0):
        return {"accuracy": table.stats(accuracies), "size_bytes": table.stats([size])}

    report = {"rows": {"teacher": row(0.40, 0.42), "scratch": row(0.38, 0.40), "distilled": row(0.35, 0.36, 0.37),
                       "student_alone": row(0.33, 0.34, 0.35), "int8": row(0.345, 0.355, 0.365, size=290.0)},
              "student_share": 0.08, "max_student_share": 0.1, "wall_seconds": 1300.0, "every_stage_ran": True}
    goals = table.goals(report, ml_collections.ConfigDict({"wall_goal_seconds": 1200.0}))
    assert goals["pretraining_helps"]["met"] and not goals["pretraining_helps"]["beyond_twice_std"]
    d = goals["distillation_helps"]  # +2 points against 2 x 1 point of std
    assert d["distilled_minus_alone"] == pytest.approx(0.02) and d["twice_larger_std"] == pytest.approx(0.02)
    assert not d["met"]
    assert goals["int8_close"]["points_vs_float"] == pytest.approx(-0.5) and goals["int8_close"]["met"]
    assert goals["student_share"]["met"] and goals["wall_time"]["met"] is False
