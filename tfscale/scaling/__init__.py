"""Scaling laws: sweeps over model size and data, fits with uncertainty, compute-optimal plans.

  results.py         the results rows a sweep writes and a fit reads (both parameter counts)
  sweep.py           run a sweep: resumable, sharded, in a local pool (sweep_spec, sweep_plan,
                     sweep_run, sweep_pool, sweep_worker, sweep_results, progress)
  law.py, laws.py    what a law owns, and the registry: power_laws (chinchilla, n, d, c), kaplan
  fitting.py         Chinchilla's Approach 3 fitter (any law) and bootstrap intervals
  planning.py        where N_opt lies against the sweep, isoFLOP minima; learning_rates per size
  analysis.py        everything fit.json holds; report.py writes it with scaling.png and report.md
  main_job.py        the main job: sweep, fit, plan rounds, the plan check, final model
"""
import math

from tfscale.errors import ConfigError
from tfscale.scaling import analysis, laws, report, results


def fit_results(path, workdir, law=None, budgets=(), target_loss=None, bootstrap=200, flops="6nd",
                drop_highest_loss=0, seed=0, grid_stride=1, params="total"):
    """Reads a results file, fits, and writes fit.json, scaling.png and report.md to `workdir`.

    grid_stride: start L-BFGS from every k-th point of the initialisation grid (1 = all).
    params: N and C counted as `total` or `non_embedding` (Kaplan), `results.CONVENTIONS`.
    """
    if target_loss is not None and not _positive(target_loss):
        raise ConfigError(f"--target_loss must be a positive finite loss, got {target_loss}")
    if grid_stride < 1:
        raise ConfigError(f"--grid_stride must be >= 1, got {grid_stride}")
    bad = [c for c in budgets if not _positive(c)]
    if bad:
        raise ConfigError(f"--compute_budget must be a positive finite number of FLOPs, got {bad[0]}")
    if law and law not in laws.LAWS:
        raise ConfigError(f"unknown law {law!r}; choose one of {', '.join(laws.LAWS)}")
    results.check_convention(params)
    rows = results.load(path, drop_highest_loss)
    report.check_workdir(workdir)  # before the fit, which takes a while
    result = analysis.analyze(rows, law=law, budgets=list(budgets) or None, target_loss=target_loss,
                              bootstrap=bootstrap, flops=flops, seed=seed, grid_stride=grid_stride,
                              params=params)
    report.write(workdir, result, rows)
    return result


def _positive(value):
    return math.isfinite(value) and value > 0


__all__ = ["analysis", "fit_results", "laws", "report", "results"]
