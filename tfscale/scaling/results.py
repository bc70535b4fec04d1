"""Sweep results: one JSON object a line (or CSV with the same columns).

Columns: name, num_params, num_tokens, flops, loss, status (ok / failed), and any others. A
sweep that searches a hyper-parameter writes a `group` per row; readers keep the best run of
each group, so a fit sees one tuned run per (size, budget).

N and C are recorded in both conventions of `tfscale/models/card.py`: num_params and flops
count everything (embeddings, logits, attention), non_embedding_params and flops_kaplan are
Kaplan's. Rows without non_embedding_params (older sweeps, hand-written files) hold Kaplan's
non-embedding counts in num_params and flops.
"""
import csv
import io
import json
import math
import os

from absl import logging

from tfscale import io as files
from tfscale.counting import CONVENTIONS, check_convention  # noqa: F401  (CONVENTIONS re-exported)
from tfscale.errors import ConfigError

REQUIRED = ("num_params", "num_tokens", "flops", "loss")


class ResultsError(ConfigError):
    """A results file that cannot be read or has too few usable rows (one line for the user)."""


def append(path, row):
    """Appends `row` as one JSON line, through tf.io.gfile (for files made by hand or by other
    tools; a sweep writes one file per run and assembles them, `sweep_results`)."""
    files.append_jsonl(path, row)


def read(path):
    """Every row of a .jsonl or .csv file, as dicts (numbers parsed where they parse)."""
    if not os.path.exists(path):
        raise ResultsError(f"results file {path} does not exist")
    if os.path.isdir(path):
        raise ResultsError(f"results file {path} is a folder")
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ResultsError(f"results file {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} "
                           f"at offset {e.start})") from None
    except OSError as e:
        raise ResultsError(f"results file {path} cannot be read ({e.strerror})") from None
    if path.endswith(".csv"):
        return [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(io.StringIO(text, newline=""))]
    return [_object(line, path, i) for i, line in enumerate(text.split("\n"), 1) if line.strip()]


def _object(line, path, i):
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}:{i} is not a JSON object ({e.msg})") from None
    if not isinstance(row, dict):
        raise ResultsError(f"{path}:{i} is not a JSON object: {line.strip()[:40]}")
    return row


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def usable(rows):
    """The last row of each name (a re-run supersedes what came before), kept if it finished:
    status ok (or no status, as in plain CSV files) with every required column positive and
    finite. Of each group, the lowest-loss run is kept."""
    latest = {}
    for i, r in enumerate(rows):
        latest[r.get("name", i)] = r
    best = {}
    for key, r in latest.items():
        if r.get("status", "ok") != "ok" or r.get("role") == "trunk" or not _finite(r):
            continue  # a wsd trunk is trained for its branches: no data budget's result
        group = r.get("group") or key
        if group not in best or float(r["loss"]) < float(best[group]["loss"]):
            best[group] = r
    return list(best.values())


def _finite(row):
    try:
        return all(math.isfinite(float(row[c])) and float(row[c]) > 0 for c in REQUIRED)
    except (KeyError, TypeError, ValueError):
        return False


def load(path, drop_highest_loss=0):
    """Usable rows of a results file, without the `drop_highest_loss` highest-loss ones."""
    rows = usable(read(path))
    if drop_highest_loss:
        rows = sorted(rows, key=lambda r: float(r["loss"]))[: len(rows) - drop_highest_loss]
    if not rows:
        raise ResultsError(f"{path} has no finished runs with {', '.join(REQUIRED)}")
    old = sum("non_embedding_params" not in r for r in rows)
    if old:
        logging.warning("%s: %d of %d rows have no non_embedding_params; their num_params and flops are read as "
                        "non-embedding (Kaplan) counts", path, old, len(rows))
    return rows


def ndc_from_summary(summary, convention="total"):
    """(N, D, C) of a finished run from its summary.json: D in tokens (examples for
    non-sequence data), N and C counted by `convention` ("total" or "non_embedding")."""
    examples = summary["examples_seen"]
    d = summary.get("num_tokens", examples)
    if check_convention(convention) == "total":
        return summary["num_params"], d, summary["flops_per_example"] * examples
    per_token = summary.get("flops_per_token_kaplan")  # LMs; a classifier's counts are the same either way
    return (summary.get("non_embedding_params", summary["num_params"]), d,
            per_token * d if per_token is not None else summary["flops_per_example"] * examples)


def in_convention(rows, convention="total"):
    """(rows whose num_params and flops are counted by `convention`, the convention used).

    Rows without non_embedding_params only have non-embedding counts, so where any row lacks
    them the answer is "non_embedding" whatever was asked."""
    check_convention(convention)
    if convention == "total" and any("non_embedding_params" not in r for r in rows):
        logging.warning("some rows have no total parameter count: their non-embedding counts are used")
        convention = "non_embedding"
    if convention == "total":
        return list(rows), convention
    return [{**r, "num_params": r.get("non_embedding_params", r["num_params"]),
             "flops": r.get("flops_kaplan", r["flops"])} for r in rows], convention
