"""Bad compression configs through the CLI: one `error:` line, exit 2, no traceback, workdir as it was.

The command runs in this process (`run_command`), one case through `python -m experiments.compress`."""
import concurrent.futures
import os
import subprocess
import sys

import pytest

from conftest import run_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "frequency_leaves_model_dense": (["--config.compress.prune.frequency=20"],
                                     "compress.prune.frequency 20 is longer than the pruning window"),
    "unknown_variant": (["--config.compress.variants=float32,int3"], "unknown compress variant 'int3'"),
    "qat_of_the_lm": (["--config=experiments/configs/lm_distill.py:tiny", "--config.compress.variants=pruned,qat_int8"],
                      "compress variant qat_int8 is not available for transformer_lm (QAT wraps every layer"),
}
IN_ITS_OWN_PROCESS = {"unknown_variant"}


def _run(name, tmp):
    args, fragment = CASES[name]
    workdir = os.path.join(tmp, name)
    os.makedirs(workdir)
    config = [a for a in args if a.startswith("--config=")] or ["--config=experiments/configs/digits_cnn.py:tiny"]
    rest = [a for a in args if not a.startswith("--config=")]
    env = {"TFDS_DATA_DIR": os.path.join(tmp, "tfds")}
    if name in IN_ITS_OWN_PROCESS:
        proc = subprocess.run([sys.executable, "-m", "experiments.compress", *config, f"--workdir={workdir}", *rest],
                              cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, **env))
    else:
        proc = run_command("compress", [*config, f"--workdir={workdir}", *rest], env=env)
    return proc, fragment, os.listdir(workdir)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("compress_errors"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # the process starts meanwhile
        futures = {name: pool.submit(_run, name, tmp) for name in sorted(IN_ITS_OWN_PROCESS)}
        out = {name: _run(name, tmp) for name in sorted(set(CASES) - IN_ITS_OWN_PROCESS)}
        out.update({name: f.result() for name, f in futures.items()})
        return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_compress_config_gets_one_line_error_exit_2_and_no_files(results, case):
    proc, fragment, files = results[case]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr[-2000:]
    assert files == []
