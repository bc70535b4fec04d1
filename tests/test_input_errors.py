"""Broken config files, results files, workdirs, flags and data that cannot determine a law:
one `error:` line, exit 2, no traceback, nothing written (and for fits, no fitting started).

A few cases go through `experiments.train` and `experiments.fit` (run in this process by
`run_command`, one through `python -m experiments.fit` in its own process); the rest call what
those commands call (`cli.load_config_file`, `scaling.fit_results`) in-process with the same
arguments, whose ConfigError's first line is what the command prints after `error: `."""
import concurrent.futures
import hashlib
import json
import math
import os
import subprocess
import sys

import pytest

from conftest import absl_messages, one_error_line, run_command
from tfscale.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--bootstrap=0", "--grid_stride=37"]


def _row(i, n, d, loss):
    return {"name": f"r{i}", "num_params": n, "num_tokens": d, "flops": 6 * n * d, "loss": loss, "status": "ok"}


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


GRID = [(n, d) for n in (1e4, 1e5, 1e6) for d in (1e6, 1e7, 1e8)]
GOOD = _jsonl([_row(i, n, d, 2 + 50 / n ** 0.3 + 100 / d ** 0.3) for i, (n, d) in enumerate(GRID)])
# loss rises with the model size: a fine fit whose alpha is negative, so no allocation exists
ANTI = _jsonl([_row(i, n, d, 2 + 0.01 * math.log(n) + 100 / d ** 0.3) for i, (n, d) in enumerate(GRID)])

# name -> (files {name: bytes}, arguments, the whole error line or a fragment of it)
CONFIG_CASES = {
    "no_get_config": ({"c.py": b"x = 1\n"}, [], "error: config file {tmp}/c.py has no get_config() function"),
    "empty_file": ({"c.py": b""}, [], "error: config file {tmp}/c.py has no get_config() function"),
    "plain_dict": ({"c.py": b"def get_config():\n    return {'train': {'batch_size': 8}}\n"}, [],
                   "error: config file {tmp}/c.py: get_config() returned dict, not an ml_collections.ConfigDict"),
    "returns_none": ({"c.py": b"def get_config():\n    pass\n"}, [],
                     "error: config file {tmp}/c.py: get_config() returned None, not an ml_collections.ConfigDict"),
    "raises_at_import": ({"c.py": b"raise RuntimeError('no data set here')\n"}, [],
                         "error: config file {tmp}/c.py cannot be loaded: RuntimeError: no data set here"),
    "syntax_error": ({"c.py": b"def get_config(:\n"}, [],
                     "error: config file {tmp}/c.py cannot be loaded: SyntaxError: "),
    "import_error": ({"c.py": b"import no_such_module_here\n"}, [],
                     "error: config file {tmp}/c.py cannot be loaded: ModuleNotFoundError: "
                     "No module named 'no_such_module_here'"),
}
FIT_CASES = {
    "not_an_object": ({"r.jsonl": b"[1, 2]\n"}, [], "error: {tmp}/r.jsonl:1 is not a JSON object: [1, 2]"),
    "a_number": ({"r.jsonl": GOOD + b"3\n"}, [], "error: {tmp}/r.jsonl:10 is not a JSON object: 3"),
    "not_utf8": ({"r.jsonl": GOOD[:40] + b"\xff\xfe" + GOOD[40:]}, [],
                 "error: results file {tmp}/r.jsonl is not UTF-8 text (byte 0xff at offset 40)"),
    "missing": ({}, [], "error: results file {tmp}/r.jsonl does not exist"),
    "workdir_is_a_file": ({"r.jsonl": GOOD, "out": b"not a folder"}, ["--workdir={tmp}/out"],
                          "error: workdir {tmp}/out exists and is not a folder"),
    "workdir_under_a_file": ({"r.jsonl": GOOD, "out": b"not a folder"}, ["--workdir={tmp}/out/fit"],
                             "error: workdir {tmp}/out/fit cannot be written ({tmp}/out is not a folder)"),
    # os.access() says /proc is writable for root; creating a file there fails
    "workdir_not_writable": ({"r.jsonl": GOOD}, ["--workdir=/proc/tfscale-no-such-dir/fit"],
                             "error: workdir /proc/tfscale-no-such-dir/fit cannot be written (creating a file in /proc: "),
    "one_size_one_budget": ({"r.jsonl": _jsonl([_row(i, 1.2e4, 4e5, 2 + i / 10) for i in range(6)])}, [],
                            "error: cannot fit chinchilla: all 6 runs have num_params 1.2e4 and num_tokens 4e5; "
                            "vary the model size and the data"),
    "one_size": ({"r.jsonl": _jsonl([_row(i, 1.2e4, 4e5 * 2 ** i, 2 + 1 / (i + 1)) for i in range(6)])},
                 ["--law=chinchilla"], "error: cannot fit chinchilla: all 6 runs have num_params 1.2e4; vary the model size"),
    "equal_losses": ({"r.jsonl": _jsonl([_row(i, n, d, 2.5) for i, (n, d) in enumerate(GRID)])}, [],
                     "error: cannot fit chinchilla: all 9 runs have loss 2.5, so no exponent is determined"),
    "fewer_points_than_parameters": ({"r.jsonl": _jsonl([_row(i, n, d, 2 + i / 10) for i, (n, d) in
                                                         enumerate([(1e4, 1e6), (1e5, 1e7), (1e6, 1e6)])])}, [],
                                     "error: cannot fit chinchilla: 3 points for the 5 parameters of "
                                     "L(N, D) = E + A/N^alpha + B/D^beta; it needs 5 or more"),
    **{f"compute_budget_{v}": ({"r.jsonl": GOOD}, ["--compute_budget=1e15", f"--compute_budget={v}"],
                               f"error: --compute_budget must be a positive finite number of FLOPs, got {float(v)}")
       for v in ("nan", "inf", "-1e18", "0")},
    **{f"target_loss_{v}": ({"r.jsonl": GOOD}, [f"--target_loss={v}"],
                            f"error: --target_loss must be a positive finite loss, got {float(v)}")
       for v in ("nan", "inf", "-2", "0")},
}


def _snapshot(folder):
    """Every folder and every file's hash under `folder`."""
    out = {}
    for base, dirs, files in os.walk(folder):
        out.update({os.path.relpath(os.path.join(base, d), folder): "folder" for d in dirs})
        for name in files:
            with open(os.path.join(base, name), "rb") as f:
                out[os.path.relpath(os.path.join(base, name), folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


# Through the command (flag parsing included): a config file, a results file, and a flag's value;
# the last as its own process.
THROUGH_COMMAND = {"syntax_error", "not_utf8", "compute_budget_nan"}
IN_ITS_OWN_PROCESS = {"compute_budget_nan"}


def _prepare(script, cases, name, tmp):
    files, args, expected = cases[name]
    case = os.path.join(tmp, name)
    os.makedirs(os.path.join(case, "workdir"))
    with open(os.path.join(case, "workdir", "notes.txt"), "w") as f:
        f.write("results of an earlier run\n")
    for file, content in files.items():
        with open(os.path.join(case, file), "wb") as f:
            f.write(content)
    args = [a.format(tmp=case) for a in args]
    if script == "experiments.train":
        args = [f"--config={case}/c.py", *args]
    else:
        args = [f"--results={case}/r.jsonl", *FAST, *args]
    if not any(a.startswith("--workdir=") for a in args):
        args.append(f"--workdir={case}/workdir")
    return case, args, expected.format(tmp=case)


def _run(script, cases, name, tmp):
    case, args, expected = _prepare(script, cases, name, tmp)
    before = _snapshot(case)
    if name in IN_ITS_OWN_PROCESS:
        proc = subprocess.run([sys.executable, "-m", script, *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
    else:
        proc = run_command(script, args)
    return one_error_line(proc), proc.stderr, expected, before, _snapshot(case)


def _call(script, cases, name, tmp):
    """What the command calls with these arguments, in-process: the ConfigError's first line
    as the command prints it, and what was logged (INFO and up) before it."""
    from experiments import cli  # pylint: disable=import-outside-toplevel
    from tfscale import scaling  # pylint: disable=import-outside-toplevel
    case, args, expected = _prepare(script, cases, name, tmp)
    flags = {}
    for arg in args:
        key, value = arg[2:].split("=", 1)
        flags.setdefault(key, []).append(value)
    one = lambda key, default=None: flags.get(key, [default])[-1]  # noqa: E731
    before = _snapshot(case)
    with absl_messages() as records, pytest.raises(ConfigError) as error:
        if script == "experiments.train":
            cli.load_config_file(one("config"))
        else:
            target = one("target_loss")
            scaling.fit_results(one("results"), one("workdir"), law=None if one("law", "auto") == "auto" else one("law"),
                                budgets=[float(v) for v in flags.get("compute_budget", [])],
                                target_loss=None if target is None else float(target),
                                bootstrap=int(one("bootstrap")), grid_stride=int(one("grid_stride")))
    line = f"error: {str(error.value).strip().splitlines()[0]}"
    return line, "\n".join(records), expected, before, _snapshot(case)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("input_errors"))
    jobs = [("experiments.train", CONFIG_CASES, n) for n in CONFIG_CASES]
    jobs += [("experiments.fit", FIT_CASES, n) for n in FIT_CASES]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # the process starts meanwhile
        futures = {name: pool.submit(_run, script, cases, name, tmp) for script, cases, name in jobs
                   if name in IN_ITS_OWN_PROCESS}
        out = {name: _run(script, cases, name, tmp) for script, cases, name in jobs
               if name in THROUGH_COMMAND - IN_ITS_OWN_PROCESS}
        out.update({name: _call(script, cases, name, tmp) for script, cases, name in jobs if name not in THROUGH_COMMAND})
        out.update({name: f.result() for name, f in futures.items()})
    return out


@pytest.mark.parametrize("case", sorted(CONFIG_CASES) + sorted(FIT_CASES))
def test_bad_input_gets_one_line_error_and_writes_nothing(results, case):
    line, logged, expected, before, after = results[case]
    assert line.startswith(expected), (line, expected)
    assert before == after
    assert "fitting" not in logged  # refused before any fit started
    assert not os.path.exists("/proc/tfscale-no-such-dir/fit")


def _strict_json(text):
    def refuse(constant):
        raise AssertionError(f"{constant} in fit.json")
    return json.loads(text, parse_constant=refuse)


def test_fit_without_an_allocation_says_so_instead_of_printing_nan(tmp_path):
    (tmp_path / "r.jsonl").write_bytes(ANTI)
    out = tmp_path / "fit"
    proc = run_command("fit", [f"--results={tmp_path}/r.jsonl", f"--workdir={out}", "--compute_budget=1e15",
                               "--target_loss=2.3", *FAST])
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = _strict_json((out / "fit.json").read_text())
    assert result["params"]["alpha"] < 0
    plan, = result["compute_optimal"]
    assert plan["num_params"] is None and "loss does not fall with the model size" in plan["undetermined"]
    assert result["target"]["num_params"] is None and result["target"]["undetermined"]
    report = (out / "report.md").read_text()
    assert "No compute-optimal allocation for C = 1e+15: the fitted A = " in report
    assert "No compute is predicted: the fitted A = " in report
    for text in (report, proc.stdout):
        assert "nan" not in text.lower() and "inf |" not in text
