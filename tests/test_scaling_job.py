"""The main job end to end (tiny): sweep, fit, plan inside the swept sizes, train the chosen size
and its neighbours at the same compute, compress and export; a re-run resumes instead of retraining."""
import json
import math
import os
import subprocess
import sys

from conftest import absl_messages
from experiments.configs import scaling_lm
from tfscale.scaling import check_runs, main_job, results, sweep, sweep_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_main_job_trains_the_compute_optimal_size_and_exports_it(tmp_path):
    workdir = tmp_path / "job"
    # the plan check's three trainings on a pool of 2 (the tiny sweep runs in this process)
    args = [sys.executable, "-m", "experiments.scaling", "--config=experiments/configs/scaling_lm.py:tiny",
            f"--workdir={workdir}", "--config.scaling.check_workers=2"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = json.loads((workdir / "scaling.json").read_text())
    config = scaling_lm.get_config("tiny")
    rows = results.load(str(workdir / "sweep" / "results.jsonl"))
    recorded = results.read(str(workdir / "sweep" / "results.jsonl"))  # wsd trunks too
    assert len(recorded) == len(rows) + len(job["sweep"]["sizes"])  # a trunk per size, kept out of the fit
    # the sweep's sizes, and any the job added beyond them to bracket N_opt
    assert job["sweep"]["sizes"][:len(config.sweep.sizes)] == [s.split(":")[0] for s in config.sweep.sizes]
    assert len(rows) == len(job["sweep"]["sizes"]) * len(config.sweep.num_tokens) == job["sweep"]["runs"]
    fit = json.loads((workdir / "fit" / "fit.json").read_text())
    assert fit["law"] == "chinchilla" and set(fit["ci"]) == {"E", "A", "B", "alpha", "beta"}
    assert "max_abs_rel_error" in fit["extrapolation"]  # the largest size held out and predicted
    # the final size is the candidate inside the swept sizes nearest the planned N_opt, trained for
    # the planned compute
    plan, final, rounds = job["compute_optimal"], job["final"], job["planning_rounds"]
    assert fit["compute_optimal"][0]["range_note"] == plan["range_note"] == rounds[-1]["note"]
    assert [r["round"] for r in rounds] == list(range(len(rounds))) and len(rounds) <= 4
    candidates = sweep.size_costs(config, [sweep.parse_size(t, i) for i, t in enumerate(config.scaling.candidate_sizes)])
    assert final["num_params"] == candidates[final["size"]][0]
    lo, hi = plan["swept_range"]
    inside = [c[0] for c in candidates.values() if lo <= c[0] <= hi]
    ratio = lambda n: abs(math.log(n / plan["num_params"]))  # noqa: E731
    assert lo <= final["num_params"] <= hi and ratio(final["num_params"]) == min(map(ratio, inside))
    assert final["overrides"] == dict(dict(sweep.parse_size(t, i) for i, t in
                                           enumerate(config.scaling.candidate_sizes))[final["size"]])
    assert abs(final["flops"] / plan["flops"] - 1) < 0.05
    # the plan check: the chosen size and the candidates beside it, each for the same compute
    check = job["plan_check"]
    check_rows = {r["name"]: r for r in results.read(str(workdir / "check" / "results.jsonl"))}
    assert len(check_rows) == len(check["models"])
    assert proc.stderr.count("started in worker") == len(check["models"])  # the check's pool, not the sweep
    by_n = sorted(candidates, key=lambda k: candidates[k][0])
    i = by_n.index(final["size"])
    assert [m["size"] for m in check["models"]] == by_n[max(0, i - 1):i + 2]
    for m in check["models"]:
        assert abs(m["flops"] / plan["flops"] - 1) < 0.05 and m["predicted_loss"] > 0 and m["se"] > 0
        assert abs(m["heldout_loss"] - m["eval_loss"]) < 1e-4  # the same windows the run's eval_loss averages
        assert m["windows"] == config.eval.max_examples
        assert ("diff_se" in m) == (m["size"] != final["size"])
        assert check_rows[m["size"]]["role"] == m["role"] and check_rows[m["size"]]["steps"] == m["steps"]
        assert (m["role"] == "chosen") == os.path.exists(os.path.join(m["workdir"], "export"))
    assert check["verdict"] in ("wins", "ties", "loses") and check["sentence"] in proc.stdout
    assert "## Plan check at C" in proc.stdout and "Peak learning rate against N" in proc.stdout
    assert {t["size"] for t in job["learning_rates"]["sizes"]} == set(candidates)
    summary = json.loads((workdir / "final" / "summary.json").read_text())
    assert summary["accum_steps"] == config.scaling.accum_steps == 2 and summary["steps"] == final["steps"]
    assert os.path.exists(final["saved_model"]) and final["predicted_loss"] > 0
    variants = {v["variant"]: v for v in job["compression"]}
    assert set(variants) == {"float32", "dynamic_range", "float16"}
    assert all(os.path.getsize(v["path"]) == v["size_bytes"] for v in variants.values())
    assert variants["dynamic_range"]["size_bytes"] < variants["float32"]["size_bytes"]
    assert (workdir / "fit" / "scaling.png").stat().st_size > 10_000
    assert "Compute-optimal for C" in proc.stdout and "| float16 |" in proc.stdout
    # a re-run (in this process, on the command's config) finds everything done: no sweep run
    # and no update is trained again; a row of a run the plan does not hold (a budget since taken
    # out of the config) stays out of the fit
    stale = {**rows[0], "name": "stale_T1e9", "group": "stale_T1e9", "loss": 9.0, "num_tokens": 1e9}
    sweep_results.write_row(str(workdir / "sweep"), stale)
    logged = _logged(main_job.run_main_job, scaling_lm.get_config("tiny"), str(workdir))
    n = len(check["models"])
    assert f"plan check: {n} runs in this shard, {n} finished before, 0 to run" in logged
    assert "already trained" in logged
    assert results.read(str(workdir / "sweep" / "results.jsonl")) == recorded + [stale]
    again = json.loads((workdir / "scaling.json").read_text())
    assert again["fit"]["n_points"] == job["fit"]["n_points"] and again["fit"]["params"] == job["fit"]["params"]


def _logged(fn, *args):
    """What `fn(*args)` logs through absl at INFO and up, as the commands log."""
    with absl_messages() as records:
        fn(*args)
    return "\n".join(records)


def test_final_config_keeps_the_recipe_at_the_chosen_size():
    config = scaling_lm.get_config("tiny")
    label, overrides = sweep.parse_size(config.scaling.candidate_sizes[-1], 0)
    final = check_runs.run_config(config, check_runs.final_overrides(config, overrides, 100))
    assert "sweep" not in final and "scaling" not in final
    assert final.model.d_model == dict(overrides)["model.d_model"] and final.train.num_steps == 100
    assert final.schedule.warmup_steps == 5 and final.train.accum_steps == 2 and final.export.saved_model
    assert final.optimizer.name == config.optimizer.name and final.train.batch_size == config.train.batch_size
