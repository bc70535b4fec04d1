"""Bad input gets one clear line on stderr, a non-zero exit, no traceback, and an untouched workdir.

The cases the flags themselves refuse, and one refused by training, go through
`experiments.train` run in this process (`run_command`), one of them through
`python -m experiments.train` in its own process; the rest call `tfscale.train` in-process on the config the command would build (the same
config file and typed overrides), whose ConfigError's first line is what the command prints after
`error: `."""
import ast
import hashlib
import json
import os
import subprocess
import sys

import pytest

import tfscale

from conftest import one_error_line, run_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "--config=experiments/configs/digits_mlp.py:tiny"

# name -> (extra arguments, a fragment the error line must contain)
CASES = {
    "unknown_model": (["--config.model.name=resnet9000"], "unknown model 'resnet9000'"),
    "unknown_optimizer": (["--config.optimizer.name=adamax9"], "unknown optimizer 'adamax9'"),
    "unknown_precision": (["--config.precision=float8"], "unknown precision 'float8'"),
    "unknown_strategy": (["--config.distribute.strategy=ring"], "unknown distribute.strategy 'ring'"),
    "unknown_schedule": (["--config.schedule.name=step"], "unknown schedule 'step'"),
    "unknown_dataset": (["--config.data.name=no_such_data_set"], "unknown data set 'no_such_data_set'"),
    "unknown_model_knob": (["--config=experiments/configs/digits_cnn.py:tiny", "--config.model.name=mlp"],
                           "model 'mlp' has no knob model.filters"),
    "batch_not_divisible_by_accum": (["--config.train.batch_size=30", "--config.train.accum_steps=4"],
                                     "train.batch_size 30 is not divisible by train.accum_steps 4"),
    "batch_not_divisible_by_replicas": (
        ["--config.train.batch_size=40", "--config.train.accum_steps=4",
         "--config.distribute.strategy=mirrored", "--config.distribute.cpu_devices=4"],
        "train.batch_size 40 is not divisible by train.accum_steps 4 x replicas 4 = 16"),
    "accum_below_one": (["--config.train.accum_steps=0"], "train.accum_steps must be >= 1, got 0"),
    "negative_learning_rate": (["--config.optimizer.learning_rate=-0.1"],
                               "optimizer.learning_rate must be >= 0, got -0.1"),
    "batch_larger_than_data": (["--config.train.batch_size=4096"], "exceeds the 1437 training examples"),
    "unknown_config_key": (["--config.train.bacth_size=3"], "unknown config key 'bacth_size'"),
    "bad_value_type": (["--config.train.batch_size=many"], "--config.train.batch_size=many"),
    "missing_config_file": (["--config=experiments/configs/nope.py"], "config file experiments/configs/nope.py not found"),
    "unknown_variant": (["--config=experiments/configs/digits_mlp.py:huge"], "unknown variant 'huge'; variants: tiny"),
    "tfds_not_prepared": (["--config.data.name=mnist", "--config.data.data_dir={tmp}/tfds"],
                          "data set 'mnist' is not prepared in {tmp}/tfds"),
    "tpu_not_reachable": (["--config.distribute.strategy=tpu"], "no TPU is reachable"),
    "workdir_not_writable": (["--workdir={tmp}/a_file/run"], "cannot be written"),
    "workdir_holds_other_run": (["--config.model.width=64"], "holds a run with a different config (model.width: 32 -> 64)"),
    # Values Keras would refuse only while building: caught before config.json is written, so
    # the corrected command is not refused as "a different config".
    "model_width_zero": (["--config.model.width=0"], "model.width must be an integer >= 1, got 0"),
    "model_dropout_above_one": (["--config.model.dropout=1.5"], "model.dropout must be in [0, 1), got 1.5"),
    "negative_seed": (["--config.seed=-1"], "seed must be in [0, 2**32), got -1"),
    "infinite_learning_rate": (["--config.optimizer.learning_rate=inf"],
                               "optimizer.learning_rate must be a finite number, got inf"),
    "steps_beyond_64_bits": (["--config.train.num_steps=100000000000000000000"],
                             "train.num_steps 100000000000000000000 is out of range: integers must fit 64 bits"),
    "empty_workdir": (["--workdir="], "--workdir is empty"),
    # Running as root, access() says yes to /proc; a real write says no.
    "workdir_on_read_only_file_system": (["--workdir=/proc/tfscale-run"], "workdir /proc/tfscale-run cannot be written"),
    "truncated_config_json": ([], "config.json is damaged"),
}


def _snapshot(folder):
    out = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


# Refused while the flags are parsed (or, for the last, by training): these go through the command,
# the first also as its own process.
THROUGH_COMMAND = {"unknown_config_key", "bad_value_type", "missing_config_file", "unknown_variant",
                   "workdir_holds_other_run"}
IN_ITS_OWN_PROCESS = {"unknown_config_key"}


def _prepare(name, tmp):
    args, fragment = CASES[name]
    workdir = os.path.join(tmp, name, "workdir")
    os.makedirs(workdir)
    with open(os.path.join(workdir, "notes.txt"), "w") as f:
        f.write("results of an earlier run\n")
    if name == "workdir_holds_other_run":
        from conftest import tiny_config  # pylint: disable=import-outside-toplevel
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(json.loads(tiny_config().to_json()), f)
    if name == "truncated_config_json":
        from conftest import tiny_config  # pylint: disable=import-outside-toplevel
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(tiny_config().to_json()[:40])
    with open(os.path.join(tmp, "a_file"), "w") as f:
        f.write("not a folder")
    args = [a.format(tmp=tmp) for a in args]
    config = [a for a in args if a.startswith("--config=")] or [CONFIG]
    workdir_arg = [a for a in args if a.startswith("--workdir=")] or [f"--workdir={workdir}"]
    rest = [a for a in args if not a.startswith(("--config=", "--workdir="))]
    env = dict(os.environ, TFDS_DATA_DIR=os.path.join(tmp, name, "tfds_home"))  # no shared prepare
    return config, workdir_arg, rest, env, fragment.format(tmp=tmp), workdir


def _run_case(name, tmp):
    config, workdir_arg, rest, env, fragment, workdir = _prepare(name, tmp)
    before = _snapshot(workdir)
    if name in IN_ITS_OWN_PROCESS:
        proc = subprocess.run([sys.executable, "-m", "experiments.train", *config, *workdir_arg, *rest],
                              cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    else:
        proc = run_command("train", [*config, *workdir_arg, *rest], env={"TFDS_DATA_DIR": env["TFDS_DATA_DIR"]})
    return one_error_line(proc), fragment, before, _snapshot(workdir)


def _typed(node, leaf, text):
    """`text` as the config field's own type, as the `--config.KEY=VALUE` flag parses it."""
    kind = type(node[leaf])
    if node[leaf] is None:
        return text
    if kind is bool:
        return text.lower() in ("true", "1")
    return kind(text)


def _call_case(name, tmp):
    """The command's config (its file, locked, and typed overrides) trained in-process: the
    ConfigError's first line, as the command prints it."""
    from experiments import cli  # pylint: disable=import-outside-toplevel
    config_arg, workdir_arg, rest, env, fragment, workdir = _prepare(name, tmp)
    config = cli.load_config_file(os.path.join(ROOT, config_arg[0].split("=", 1)[1])).lock()
    for arg in rest:
        key, value = arg[len("--config."):].split("=", 1)
        node = config
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = _typed(node, leaf, value)
    before = _snapshot(workdir)
    saved = os.environ.get("TFDS_DATA_DIR")
    os.environ["TFDS_DATA_DIR"] = env["TFDS_DATA_DIR"]
    try:
        with pytest.raises(tfscale.ConfigError) as error:
            tfscale.train(config, workdir_arg[0].split("=", 1)[1])
    finally:
        if saved is None:
            del os.environ["TFDS_DATA_DIR"]
        else:
            os.environ["TFDS_DATA_DIR"] = saved
    text = str(error.value).strip()
    return f"error: {text.splitlines()[0]}", fragment, before, _snapshot(workdir)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("errors"))
    out = {name: _run_case(name, tmp) for name in sorted(THROUGH_COMMAND)}
    out.update({name: _call_case(name, tmp) for name in CASES if name not in THROUGH_COMMAND})
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_one_line_error_and_leaves_workdir_untouched(results, case):
    line, fragment, before, after = results[case]
    assert fragment in line
    assert before == after


def test_every_command_answers_help_with_its_docstring_and_flags():
    scripts = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "experiments"))
                     if f.endswith(".py") and "cli.run(main)" in open(os.path.join(ROOT, "experiments", f)).read())
    assert {"train", "prepare", "evaluate", "tune"} <= set(scripts)
    for script in scripts:
        proc = subprocess.run([sys.executable, "-m", f"experiments.{script}", "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (script, proc.stderr[-2000:])
        assert "flags:\n" in proc.stdout and "  --workdir: " in proc.stdout, script
        with open(os.path.join(ROOT, "experiments", f"{script}.py")) as f:
            doc = ast.get_docstring(ast.parse(f.read()))
        assert proc.stdout.startswith(doc.strip().splitlines()[0]), script
    proc = subprocess.run([sys.executable, "-m", "experiments.prepare", "-h"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert "  --vocab_size: " in proc.stdout  # the script's own flags, not only the shared ones
