"""Exports through the command line: a file that does not match Keras is refused and nothing is
left at its path, the serving signature takes the full input shape only, a killed export's
leftovers go at the next one, and `experiments.evaluate` handles damaged exports and LMs.

The commands run in this process (`run_command`) with the faulty conversion or export patched in,
but for the export killed with SIGKILL: what a dead process leaves is the point."""
import concurrent.futures
import contextlib
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = "--config=experiments/configs/digits_mlp.py:tiny"
LM = ["--config=experiments/configs/lm.py:tiny", "--config.compress.variants=float32",
      "--config.compress.eval_examples=48", "--config.eval.max_examples=48", "--config.compress.latency_runs=2"]

# Code run before a script (`python -c PATCH; runpy ...`): an export killed as it loads its files back.
KILLED_MID_EXPORT = """
import os, signal, tensorflow as tf
tf.saved_model.load = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
"""


@contextlib.contextmanager
def _scrambled(mode, change):
    """`tflite.convert` converting, for `mode`, a copy of the network with its weights changed."""
    import tf_keras as keras  # pylint: disable=import-outside-toplevel
    from tfscale.compress import tflite  # pylint: disable=import-outside-toplevel
    real = tflite.convert

    def convert(network, wanted, *args, **kwargs):
        if wanted == mode:
            other = keras.models.clone_model(network)
            rng = np.random.default_rng(0)
            other.set_weights([change(w, rng) for w in network.get_weights()])
            network = other
        return real(network, wanted, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tflite, "convert", convert)
        yield


@contextlib.contextmanager
def _saved_model_scaled():
    """`tf.saved_model.load` giving the export back with every variable 1 % larger."""
    real = tf.saved_model.load

    def load(*args, **kwargs):
        loaded = real(*args, **kwargs)
        for v in loaded.variables:
            v.assign(v * 1.01)
        return loaded

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf.saved_model, "load", load)
        yield


PATCHES = {
    "int8_scrambled": lambda: _scrambled("int8", lambda w, rng: rng.permutation(w.ravel()).reshape(w.shape)),
    "float16_scaled": lambda: _scrambled("float16", lambda w, rng: w * 1.05),
    "saved_model_scaled": _saved_model_scaled,
}


def _script(module, args, patch=None, timeout=300):
    if patch:
        code = f"{patch}\nimport runpy, sys\nsys.argv = {[module, *args]!r}\nrunpy.run_module({module!r}, run_name='__main__')"
        command = [sys.executable, "-c", code]
    else:
        command = [sys.executable, "-m", module, *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _error_line(proc):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def _snapshot(folder):
    out = {}
    for base, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(base, name), "rb") as f:
                out[os.path.relpath(os.path.join(base, name), folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _command(module, workdir, args=(), patch=None):
    """`python -m experiments.MODULE ARGS --workdir=WORKDIR`, run in this process with `patch`
    (a PATCHES entry) in place."""
    with PATCHES[patch]() if patch else contextlib.nullcontext():
        return run_command(module, [*args, f"--workdir={workdir}"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A trained digits MLP, then every command of the tests below: the killed export runs as a
    process while the others run here."""
    from conftest import tiny_config  # pylint: disable=import-outside-toplevel
    import tfscale  # pylint: disable=import-outside-toplevel
    tmp = str(tmp_path_factory.mktemp("export_checks"))
    base, lm, fresh = (os.path.join(tmp, name) for name in ("mlp", "lm", "fresh"))
    results = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        before = _snapshot(fresh)
        results["saved_model_scaled"] = (_command("train", fresh, [MLP], "saved_model_scaled"), fresh, before)
        tfscale.train(tiny_config(), base)  # the config `MLP` gives the commands
        killed = _copy(base, os.path.join(tmp, "killed"))
        os.remove(os.path.join(killed, "summary.json"))  # written last: a run killed mid-export has none
        killed_before = _snapshot(killed)
        killed_proc = pool.submit(_script, "experiments.train", [MLP, f"--workdir={killed}"], KILLED_MID_EXPORT)
        no_pb = _copy(base, os.path.join(tmp, "no_pb"))
        os.remove(os.path.join(no_pb, "export", "saved_model", "saved_model.pb"))
        no_export = _copy(base, os.path.join(tmp, "no_export"))
        shutil.rmtree(os.path.join(no_export, "export", "saved_model"))
        commands = {
            "int8_scrambled": ("compress", [MLP, "--config.compress.variants=int8"], "int8_scrambled",
                               _copy(base, os.path.join(tmp, "int8"))),
            "float16_scaled": ("compress", [MLP, "--config.compress.variants=float32,float16"], "float16_scaled",
                               _copy(base, os.path.join(tmp, "float16"))),
            "no_pb": ("evaluate", [], None, no_pb),
            "no_export": ("evaluate", [], None, no_export),
            "lm": ("compress", LM, None, lm),
        }
        for name, (module, args, patch, workdir) in commands.items():
            before = _snapshot(workdir)
            results[name] = (_command(module, workdir, args, patch), workdir, before)
        results["killed_mid_export"] = (killed_proc.result(), killed, killed_before)
    results["base"] = (None, base, None)
    return results


def test_int8_file_of_scrambled_weights_is_refused_and_not_written(runs):
    proc, workdir, _ = runs["int8_scrambled"]
    line = _error_line(proc)
    assert "variant int8: int8.tflite does not match its Keras network: argmax agreement" in line
    assert line.endswith("< 0.9 (the bound)")
    assert float(line.split("agreement ")[1].split()[0]) < 0.5
    assert os.listdir(os.path.join(workdir, "compress")) == []


def test_float16_file_off_by_five_percent_is_refused_where_argmaxes_still_agree(runs):
    proc, workdir, _ = runs["float16_scaled"]
    line = _error_line(proc)
    assert "variant float16: float16.tflite does not match its Keras network: max abs diff" in line
    assert line.endswith("> 0.01 (the bound)")
    assert 0.03 < float(line.split(" is ")[1].split()[0]) < 0.2  # ~ 1.05^2 - 1 of the largest logit
    assert sorted(os.listdir(os.path.join(workdir, "compress"))) == ["float32", "float32.tflite"]


def test_saved_model_that_differs_from_keras_is_refused_and_not_written(runs):
    proc, workdir, _ = runs["saved_model_scaled"]
    line = _error_line(proc)
    assert f"SavedModel {workdir}/export/saved_model does not match its Keras network: max abs diff" in line
    assert line.endswith("> 0.0001 (the bound)")
    assert os.listdir(os.path.join(workdir, "export")) == []


def test_serving_signature_refuses_any_other_shape_than_the_networks(runs):
    _, workdir, _ = runs["base"]
    serve = tf.saved_model.load(os.path.join(workdir, "export", "saved_model")).signatures["serving_default"]
    assert serve(inputs=tf.zeros([3, 8, 8, 1]))["logits"].shape == (3, 10)
    assert serve(inputs=tf.zeros([1, 8, 8, 1]))["probabilities"].shape == (1, 10)
    for shape in ([4, 32], [2, 64], [3, 8, 8], [2, 8, 8, 2], [2, 4, 16, 1]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="is not compatible with expected shape"):
            serve(inputs=tf.zeros(shape))


def test_folder_of_a_killed_export_is_removed_by_the_next_export(runs, tmp_path):
    proc, workdir, _ = runs["killed_mid_export"]
    assert proc.returncode == -9, proc.stderr[-3000:]
    export_dir = os.path.join(workdir, "export")
    leftovers = glob.glob(os.path.join(export_dir, "saved_model.tmp-*"))
    assert len(leftovers) == 1 and os.listdir(leftovers[0])  # what the killed process left
    from conftest import tiny_config  # pylint: disable=import-outside-toplevel
    import tfscale  # pylint: disable=import-outside-toplevel
    tfscale.train(tiny_config(), workdir)  # the next export, in this process: the same config as `MLP`
    assert sorted(os.listdir(export_dir)) == ["saved_model"]


@pytest.mark.parametrize("case, fragment", [
    ("no_pb", "cannot be loaded (files missing or damaged; export it again): SavedModel file does not exist"),
    ("no_export", "no exported model at"),
])
def test_evaluate_on_a_damaged_export_is_one_error_line_and_changes_nothing(runs, case, fragment):
    proc, workdir, before = runs[case]
    assert fragment in _error_line(proc)
    assert _snapshot(workdir) == before


def test_lm_tflite_is_measured_on_the_runs_own_evenly_spaced_examples(runs):
    from tfscale import data, workdir as workdir_lib  # pylint: disable=import-outside-toplevel
    from tfscale.compress import tflite  # pylint: disable=import-outside-toplevel
    proc, workdir, _ = runs["lm"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(workdir, "compression.json")) as f:
        record = json.load(f)["variants"][0]
    assert record["variant"] == "float32" and record["eval_examples"] == 48
    held_out = data.load(workdir_lib.load_config(workdir).data, 32).eval
    model = tflite.TFLiteModel(record["path"])
    chosen = model.evaluate(*data.evenly_spaced(held_out, 48), 16)
    prefix = model.evaluate(held_out[0][:48], held_out[1][:48], 16)
    assert record["eval_loss"] == pytest.approx(chosen["loss"], abs=1e-9)
    assert record["accuracy"] == chosen["accuracy"]
    assert abs(prefix["loss"] - chosen["loss"]) > 1e-5  # the file's first windows would tell
    with open(os.path.join(workdir, "summary.json")) as f:  # Keras, on the same 48 windows
        assert record["eval_loss"] == pytest.approx(json.load(f)["eval_loss"], abs=1e-4)


def test_evaluate_on_a_language_model_reports_its_next_byte_figures(runs):
    _, workdir, _ = runs["lm"]
    proc = run_command("evaluate", [f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(workdir, "eval.json")) as f:
        report = json.load(f)
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert report["num_examples"] == 48 and report["num_tokens"] == 48 * 32
    assert report["loss"] == pytest.approx(summary["eval_loss"], abs=1e-4)  # the run's own examples
    assert report["bits_per_byte"] == pytest.approx(report["loss"] / np.log(2))
    assert report["perplexity"] == pytest.approx(np.exp(report["loss"]))
    assert report["loss"] < np.log(256) - 0.5 and 0.1 < report["accuracy"] < 1
    assert (f"loss {report['loss']:.4f} nats/token  {report['bits_per_byte']:.4f} bits/byte  "
            f"perplexity {report['perplexity']:.3f}  token accuracy {report['accuracy']:.4f}") in proc.stdout
