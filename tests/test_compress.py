"""Compression: pruning schedule under accumulation, PQAT, int8 TFLite, distillation, export."""
import glob
import os
import uuid

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from conftest import with_overrides
from experiments.configs import digits_cnn, lm_distill
from tfscale import config as config_lib, export, io, models, training
from tfscale.compress import artifacts, distill, finetune, prune, quantize, section, tflite


def cnn_config(**overrides):
    return with_overrides(digits_cnn.get_config("tiny"), **overrides)

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CNN trained on digits (the teacher and the source of every variant)."""
    workdir = str(tmp_path_factory.mktemp("cnn"))
    config = cnn_config(train__num_steps=300, distribute__strategy="one_device", export__saved_model=False)
    run = training.Run(config, workdir)
    run.fit()  # trains it; the run holds the trained network
    yield run
    run.close()


def _kernel_zeros(network):
    return {name: int(k.size - np.count_nonzero(k)) for name, k in prune._kernels(network)}


def _schedule(update, target=0.8, end=8, frequency=2):
    """tfmot's polynomial decay (power 3, from 0 at update 0) at the last mask update <= `update`."""
    last = min(update, end) // frequency * frequency
    return np.float32(target * (1 - (1 - last / end) ** 3))


def test_pruning_reaches_scheduled_sparsity_exactly_in_optimizer_updates_with_accumulation(tmp_path):
    config = cnn_config(train__accum_steps=4, distribute__strategy="one_device", compress__prune__target_sparsity=0.8,
                        compress__prune__begin_step=0, compress__prune__end_step=8, compress__prune__frequency=2)
    p = config.compress.prune  # 8 updates, masks at updates 2, 4, 6, 8, target 0.8 at 8
    run = training.Run(config, str(tmp_path))
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((int(self.model.optimizer.iterations.numpy()), _kernel_zeros(self.model.network)))

    model = finetune.fit(run, lambda: prune.PruningModel(prune.apply(run.network, p), 4),
                         config.compress.finetune_steps, 1e-3, callbacks=[Record()])
    sizes = {name: k.size for name, k in prune._kernels(model.network)}
    assert [u for u, _ in seen] == list(range(1, 9))
    for update, zeros in seen:
        s = _schedule(update)
        kept = {n: max(int(np.round(np.float32(size) * (np.float32(1) - s))), 1) for n, size in sizes.items()}
        assert zeros == {n: sizes[n] - kept[n] for n in sizes}, (update, s)
    kernels = [l.kernel.numpy() for l in prune.strip(model.network).layers if hasattr(l, "kernel")]
    assert len(kernels) == 3
    assert all(abs(np.mean(k == 0) - 0.8) < 0.02 for k in kernels)
    assert sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels) == pytest.approx(0.8, abs=0.01)


def test_pruning_opt_out_and_2x4_pattern_per_layer(trained):
    p = trained.config.compress.prune.copy_and_resolve_references()
    p.exclude = "logits"
    pruned = prune.apply(trained.network, p)
    assert [w.layer.name for w in prune.wrappers(pruned)] == ["conv_0", "dense"]
    model = finetune.fit(trained, lambda: prune.PruningModel(prune.apply(trained.network, p, structured=True), 2),
                         4, 1e-3)
    report = {l["layer"]: l for l in prune.sparsity_report(prune.strip(model.network))["layers"]}
    assert report["dense"]["is_2x4"] and report["dense"]["sparsity"] == 0.5
    assert report["logits"]["sparsity"] == 0.0  # opted out
    assert not report["conv_0"]["is_2x4"]  # 1 input channel: cannot hold 2:4, left dense
    assert trained.network.get_layer("dense").kernel.numpy().all()  # the baseline is untouched


def test_pqat_keeps_sparsity_while_plain_qat_loses_it(trained):
    c = trained.config.compress
    pruned = finetune.fit(trained, lambda: prune.PruningModel(prune.apply(trained.network, c.prune), 1),
                          c.finetune_steps, 1e-3)
    stripped = prune.strip(pruned.network)
    zero_masks = {n: k == 0 for n, k in prune._kernels(stripped)}

    def qat_zeros(preserve):
        model = finetune.fit(trained, lambda: quantize.QATModel(quantize.apply(stripped, preserve), 2),
                             10, 3e-3)
        kernels = {l.layer.name: next(w.numpy() for w in l.weights if w.name.endswith("kernel:0"))
                   for l in model.network.layers
                   if hasattr(l, "layer") and isinstance(l.layer, prune.PRUNABLE)}
        return {n: float(np.mean(kernels[n][m] == 0)) for n, m in zero_masks.items()}

    assert all(v == 1.0 for v in qat_zeros(True).values())  # every pruned weight stays zero
    assert np.mean(list(qat_zeros(False).values())) < 0.9  # without the scheme they regrow


def test_int8_tflite_has_int8_weights_and_agrees_with_keras(trained, tmp_path):
    records = artifacts.export_variants(trained.network, trained.data, str(tmp_path), ["float32", "int8"],
                                        representative_examples=64, latency_runs=5, saved_models=False)
    f32, int8 = records
    model = tflite.TFLiteModel(int8["path"])
    assert set(model.weight_dtypes()) == {"int8"}
    assert tflite.TFLiteModel(f32["path"]).weight_dtypes() == {"float32": 3}
    assert int8["argmax_agreement_vs_keras"] >= 0.95
    assert abs(int8["accuracy"] - f32["accuracy"]) <= 0.02 and f32["accuracy"] > 0.7
    assert int8["size_bytes"] < 0.6 * f32["size_bytes"]  # a tiny model: the graph is a large share
    # int8 inputs and outputs: quantized at the file's own scale, same answers.
    path = str(tmp_path / "io.tflite")
    tflite.save(trained.network, path, "int8", trained.data.eval[0][:64].astype(np.float32),
                       trained.data.train[0][:64].astype(np.float32), int8_io=True)
    io_model = tflite.TFLiteModel(path)
    assert io_model.input["dtype"] == np.int8 and io_model.output["dtype"] == np.int8
    x = trained.data.eval[0].astype(np.float32)
    assert np.mean(io_model.predict(x).argmax(-1) == model.predict(x).argmax(-1)) >= 0.95


def test_variants_are_written_verified_and_measured_through_gfile_in_an_in_memory_folder(trained):
    # ram:// stands in for gs://: files are written and read back through tf.io.gfile only.
    outdir = f"ram://compress-{uuid.uuid4().hex}/compress"
    io.makedirs(outdir)
    io.write_bytes(io.join(outdir, ".tmp-0123-int8.tflite"), b"left by a killed write")
    records = artifacts.export_variants(trained.network, trained.data, outdir, ["float32", "int8"],
                                        representative_examples=32, latency_runs=2, saved_models=False)
    assert sorted(io.gfile.listdir(outdir)) == ["float32.tflite", "int8.tflite"]
    for r in records:
        assert r["path"] == f"{outdir}/{r['variant']}.tflite"
        assert r["size_bytes"] == len(io.read_bytes(r["path"])) and r["accuracy"] > 0.7
    assert set(tflite.TFLiteModel(records[1]["path"]).weight_dtypes()) == {"int8"}
    assert not os.path.exists("ram:")


def _eval_accuracy(network, data):
    logits = network.predict(data.eval[0].astype(np.float32), verbose=0)
    return float(np.mean(logits.argmax(-1) == data.eval[1]))


def _teacher_agreement(student, teacher, data):
    x = data.eval[0].astype(np.float32)
    s, t = student.predict(x, verbose=0), teacher.predict(x, verbose=0)
    return float(np.mean(s.argmax(-1) == t.argmax(-1)))


def test_distillation_improves_a_weak_student_and_leaves_the_teacher_unchanged(trained):
    teacher = trained.network
    before = [w.copy() for w in teacher.get_weights()]
    d = trained.config.compress.distill

    def student():  # 2 filters, 8 units: deliberately weak
        keras.utils.set_random_seed(0)
        return models.build(d.student, trained.data.info)

    untrained = _eval_accuracy(student(), trained.data)
    taught = finetune.fit(trained, lambda: distill.DistillationModel(student(), teacher, 2, 2.0, 0.0),
                          150, 1e-2).network
    assert all(np.array_equal(a, b) for a, b in zip(before, teacher.get_weights()))
    # Taught by the teacher alone (alpha 0: no labels at all), the weak student learns the task.
    assert _eval_accuracy(taught, trained.data) > untrained + 0.3
    assert _teacher_agreement(taught, teacher, trained.data) > 0.4


def test_interrupted_export_leaves_no_artifact_at_the_final_path(trained, tmp_path, monkeypatch):
    path = str(tmp_path / "model.tflite")
    with open(path, "wb") as f:
        f.write(b"the earlier, good file")
    sample = trained.data.eval[0][:32].astype(np.float32)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tflite.TFLiteModel, "predict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tflite.save(trained.network, str(tmp_path / "new.tflite"), "float32", sample)
    with pytest.raises(KeyboardInterrupt):
        tflite.save(trained.network, path, "dynamic_range", sample)
    monkeypatch.setattr(tf.saved_model, "load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.save_saved_model(trained.network, str(tmp_path / "saved_model"), sample)
    assert sorted(os.listdir(tmp_path)) == ["model.tflite"]
    with open(path, "rb") as f:
        assert f.read() == b"the earlier, good file"


def _saved_kernel_sparsity(saved_model):
    """Zeros among the kernels in a SavedModel's variables, read from its checkpoint files."""
    reader = tf.train.load_checkpoint(os.path.join(saved_model, "variables", "variables"))
    kernels = [reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
               if "kernel" in name and "OPTIMIZER" not in name]
    assert len(kernels) == 3, list(reader.get_variable_to_shape_map())
    return sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)


def test_compress_writes_every_variant_and_the_report(tmp_path):
    from tfscale.compress import job
    config = cnn_config(compress__variants="float32,pruned_int8,qat_int8,distilled", compress__prune__target_sparsity=0.8,
                        compress__latency_runs=3, distribute__strategy="one_device",
                        export__saved_model=False)  # the run's own export: not what is checked here
    report, table = job.compress(config, str(tmp_path))
    assert [r["variant"] for r in report["variants"]] == ["float32", "pruned_int8", "qat_int8", "distilled"]
    for r in report["variants"]:
        assert os.path.isfile(r["path"]) and r["size_bytes"] == os.path.getsize(r["path"])
        for key in ("accuracy", "gzip_bytes", "latency_ms", "sparsity", "max_abs_diff_vs_keras"):
            assert np.isfinite(r[key]), key
    by_name = {r["variant"]: r for r in report["variants"]}
    # The configured 0.8, counted in the exported weights (per-layer rounding: +- 0.01).
    assert _saved_kernel_sparsity(str(tmp_path / "compress" / "pruned" / "saved_model")) == pytest.approx(0.8, abs=0.01)
    assert _saved_kernel_sparsity(str(tmp_path / "compress" / "float32" / "saved_model")) < 0.01
    assert by_name["pruned_int8"]["sparsity"] == pytest.approx(0.8, abs=0.02)
    assert by_name["float32"]["sparsity"] < 0.01
    assert os.path.isdir(tmp_path / "compress" / "distilled" / "saved_model")
    assert "| pruned_int8 |" in table and os.path.isfile(tmp_path / "compression.md")
    assert not glob.glob(str(tmp_path / "compress" / ".tmp-*"))


def test_lm_distills_through_the_lm_path_and_converts_to_tflite(tmp_path):
    config = with_overrides(lm_distill.get_config("tiny"), export__saved_model=False)
    run = training.Run(config, str(tmp_path))
    run.fit()  # 20 updates; the run holds the trained teacher
    teacher_before = [w.copy() for w in run.network.get_weights()]
    d = config.compress.distill
    student = finetune.fit(run, lambda: distill.DistillationModel(
        models.build(d.student, run.data.info), run.network, 2, d.temperature, d.alpha), 3, 1e-3).network
    assert all(np.array_equal(a, b) for a, b in zip(teacher_before, run.network.get_weights()))
    records = artifacts.export_variants({"float32": run.network, "distilled": student}, run.data,
                                        str(tmp_path / "export"), ["float32", "dynamic_range", "distilled"],
                                        eval_examples=32, latency_runs=3, saved_models=False)
    for r in records:
        assert r["argmax_agreement_vs_keras"] >= 0.9 and r["max_abs_diff_vs_keras"] < 0.1
    # The trained teacher's files: 4.39 nats measured; untrained, 5.58 (uniform: ln 256 = 5.55).
    assert records[0]["eval_loss"] < 5.0 and records[1]["eval_loss"] < 5.0
    assert records[1]["size_bytes"] < 0.7 * records[0]["size_bytes"]
    run.close()


@pytest.mark.parametrize("overrides, fragment", [
    (dict(compress__prune__frequency=3), "compress.prune.frequency 3 does not divide end_step - begin_step = 8"),
    (dict(compress__prune__frequency=20), "would stay dense"),
    (dict(compress__prune__end_step=50), "compress.prune.end_step 50 is beyond compress.finetune_steps 8"),
    (dict(compress__prune__target_sparsity=1.5), "compress.prune.target_sparsity must be in (0, 1), got 1.5"),
    (dict(compress__variants="float32,int4"), "unknown compress variant 'int4'"),
    (dict(compress__distill__temperature=0.0), "compress.distill.temperature must be > 0, got 0.0"),
    (dict(compress__distill__alpha=2.0), "compress.distill.alpha must be in [0, 1], got 2.0"),
])
def test_bad_compress_config_is_one_line_config_error(overrides, fragment):
    config = cnn_config(**{"compress__variants": "pruned,distilled", **overrides})
    with pytest.raises(config_lib.ConfigError) as e:
        section.validate(config)
    assert fragment in str(e.value) and "\n" not in str(e.value)
