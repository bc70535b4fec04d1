"""The text-classification recipe end to end: its tiny variant run once (in this process) and
read by the tests of a finished run (the table, the student's size, a re-run through `python -m
experiments.recipe` that skips every stage, another that redoes the damaged ones), and the
leak-free pretraining text. The recipe's parts that need neither are in test_recipe_parts.py."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_command, with_overrides
from tfscale import data, models, recipe
from tfscale.recipe import corpus, table

from experiments.configs import text_classifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW_KEYS = [key for key, _ in table.ROWS]


def tiny(**overrides):
    return with_overrides(text_classifier.get_config("tiny").unlock(), **overrides)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("recipe") / "run")
    report, markdown = recipe.run(tiny(), workdir)
    return workdir, report, markdown


def test_the_tiny_recipe_runs_every_stage_and_writes_the_table_with_every_row(finished):
    workdir, report, markdown = finished
    for seed in (0, 1):
        for name in ("teacher", "scratch"):
            assert os.path.exists(os.path.join(workdir, f"seed_{seed}", name, "eval.json"))
        for variant in ("float32", "distilled", "student_alone", "distilled_dynamic_range"):
            assert os.path.exists(os.path.join(workdir, f"seed_{seed}", "teacher", "compress", f"{variant}.tflite"))
    saved = json.load(open(os.path.join(workdir, "recipe.json")))
    assert saved["seeds"] == [0, 1] and sorted(saved["rows"]) == sorted(ROW_KEYS) and saved["every_stage_ran"]
    for key, row in saved["rows"].items():
        assert row["params"] > 0
        for figure in ("accuracy", "macro_f1"):
            assert 0 <= row[figure]["mean"] <= 1 and row[figure]["std"] >= 0, (key, figure)
            assert len(row[figure]["values"]) == (1 if key == "baseline" else 2), (key, figure)
        if key != "scratch":
            assert row["size_bytes"]["mean"] > 0 and row["latency_ms"]["mean"] > 0, key
    rows = saved["rows"]
    assert rows["int8"]["size_bytes"]["mean"] < rows["distilled"]["size_bytes"]["mean"]
    assert rows["student_alone"]["size_bytes"] == rows["distilled"]["size_bytes"]
    # the two seeds are different runs
    assert rows["teacher"]["accuracy"]["values"][0] != rows["teacher"]["accuracy"]["values"][1] or \
        rows["distilled"]["accuracy"]["values"][0] != rows["distilled"]["accuracy"]["values"][1]
    with open(os.path.join(workdir, "recipe.md")) as f:
        assert f.read() == markdown
    for row in saved["rows"].values():
        assert f"| {row['label']} |" in markdown
    assert set(saved["goals"]) == {"pretraining_helps", "distillation_helps", "int8_close", "student_share",
                                   "wall_time"}
    assert saved["goals"]["wall_time"]["measured"] and "Goals, as measured" in markdown
    # the distilled student also learnt from the transfer set, and the table says so
    assert saved["distillation"]["transfer_data"] == "tfscale.recipe.corpus:pycode_without_task_heldout"
    assert "inputs of tfscale.recipe.corpus:pycode_without_task_heldout that only the teacher labels" in markdown


def test_the_student_has_at_most_a_tenth_of_the_teachers_parameters(finished):
    _, report, _ = finished
    rows = report["rows"]
    assert report["student_share"] <= 0.1 and rows["distilled"]["params"] * 10 <= rows["teacher"]["params"]
    for size in (None, "tiny"):  # the default config's student too, counted on built networks
        c = text_classifier.get_config("finetune" + (",tiny" if size else ""))
        info = data.DataInfo("pycode_package", (128,), 10, 1.0, 0, 0)
        teacher, student = (models.num_params(models.build(m, info)) for m in (c.model, c.compress.distill.student))
        assert student * 10 <= teacher, (size, student, teacher)


def test_a_rerun_skips_every_finished_stage_and_prints_the_same_table(finished):
    """Through `python -m experiments.recipe`: the command itself, once in the suite."""
    workdir, report, markdown = finished
    stamps = {p: os.path.getmtime(os.path.join(workdir, p)) for p in
              ("pretrain/summary.json", "seed_1/teacher/compression.json", "seed_0/scratch/eval.json")}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.recipe", "--config=experiments/configs/text_classifier.py:tiny",
         f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("[")]
    assert len(lines) == 2 + 3 * 2 and all("skipped (finished)" in l for l in lines), proc.stdout
    assert {p: os.path.getmtime(os.path.join(workdir, p)) for p in stamps} == stamps
    again = json.load(open(os.path.join(workdir, "recipe.json")))
    assert again["rows"] == report["rows"] and not again["every_stage_ran"]
    assert again["goals"]["wall_time"]["met"] is None
    assert "| distilled student, int8 weights (dynamic range) TFLite |" in proc.stdout


def test_a_rerun_redoes_the_stages_whose_files_are_damaged_and_names_them(finished, tmp_path):
    original, report, _ = finished
    workdir = str(tmp_path / "copy")
    shutil.copytree(original, workdir)
    damaged = ["baseline/baseline.json", "seed_0/scratch/summary.json", "seed_1/scratch/eval.json"]
    for name in damaged:
        with open(os.path.join(workdir, name), "r+") as f:
            f.truncate(10)  # a disk that filled up
    proc = run_command("recipe", ["--config=experiments/configs/text_classifier.py:tiny", f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in damaged:
        assert f"{os.path.join(workdir, name)} is damaged (not JSON" in proc.stderr
        json.load(open(os.path.join(workdir, name)))  # whole again
    redone = [l for l in proc.stdout.splitlines() if l.startswith("[") and "skipped" not in l]
    assert [l.split("] ")[1].split(":")[0] for l in redone] == ["baseline", "seed 0 scratch"], proc.stdout
    rows = json.load(open(os.path.join(workdir, "recipe.json")))["rows"]
    for key in ("baseline", "scratch"):  # the same work done again gives the same figures
        assert rows[key]["accuracy"]["values"] == pytest.approx(report["rows"][key]["accuracy"]["values"], abs=1e-6)


@pytest.mark.parametrize("name, held_out", [
    (text_classifier.PRETRAINING_DATA, ("validation",)),
    (text_classifier.TUNING_PRETRAINING_DATA, ("validation", "tuning_validation"))])
def test_the_pretraining_text_shares_no_span_with_the_tasks_held_out_windows(name, held_out):
    def data_config(name, eval_split="validation"):
        c = text_classifier.get_config("pretrain").data.copy_and_resolve_references()
        c.unlock()
        c.name, c.mask_rate, c.eval_split = name, 0.0, eval_split
        return c

    clean = data.load(data_config(name), 128)
    full = data.load(data_config("pycode"), 128)
    tasks = [data.load(data_config("pycode_package", split)) for split in held_out]
    reference = np.sort(np.concatenate([corpus.span_hashes(t.eval_arrays()[0]).ravel() for t in tasks]))

    def windows(source):
        x, y = source.read("train", np.arange(source.info.num_train))
        return np.concatenate([x, y[:, -1:]], axis=1)

    assert corpus.rows_sharing_a_span(windows(full), reference).mean() > 0.02  # pycode alone leaks
    assert not corpus.rows_sharing_a_span(windows(clean), reference).any()
    assert 0.9 * full.info.num_train < clean.info.num_train < full.info.num_train
    for task in tasks:  # pycode alone holds text of each held-out split: each exclusion matters
        own = np.sort(corpus.span_hashes(task.eval_arrays()[0]).ravel())
        assert corpus.rows_sharing_a_span(windows(full), own).any()
