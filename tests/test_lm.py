"""The transformer LM on `pycode`: counts by hand, the corpus, learning, replicas."""
import math
import os
import tempfile

import numpy as np
import pytest

from conftest import with_overrides
from experiments.configs import lm
from tfscale import data, models
from tfscale.data import pycode, text
from tfscale.training import Run


def lm_config(arg="tiny", **overrides):
    return with_overrides(lm.get_config(arg), **overrides)

@pytest.mark.parametrize("tie", [True, False])
def test_parameter_and_flop_counts_match_hand_counts(tie):
    config = lm_config(model__tie_embeddings=tie)
    L, d, f, T, V = 1, 32, 64, 32, 256
    info = data.DataInfo("pycode", (T,), V, 1.0, 0, 0)
    network = models.build(config.model, info)
    per_layer = 2 * 2 * d + (4 * d * d + 4 * d) + (d * f + f + f * d + d)  # 2 LNs, attention, MLP
    non_embedding = L * per_layer + 2 * d  # + final LayerNorm
    embedding = V * d + T * d + (0 if tie else d * V + V)
    card = models.describe(network, config.model)
    assert card.non_embedding_params == non_embedding
    assert card.total_params == models.num_params(network) == non_embedding + embedding
    assert card.flops_per_token("non_embedding") == 6 * non_embedding + 6 * L * T * d  # Kaplan
    assert card.flops_per_token() == 3 * (2 * non_embedding + 2 * d * V + 2 * 2 * L * T * d)  # + logits, QK^T and AV
    assert models.training_flops_per_example(network) == T * card.flops_per_token()


@pytest.mark.parametrize("tie", [True, False])
def test_the_lm_clones_and_prunes_like_any_keras_model(tie):
    """Every layer is serialisable: clone_model (what pruning fine-tunes) rebuilds the same
    network, the tied table shared by input and output, with the same card."""
    from tfscale.compress import prune  # pylint: disable=import-outside-toplevel
    config = lm_config(model__tie_embeddings=tie)
    network = models.build(config.model, data.DataInfo("pycode", (32,), 256, 1.0, 0, 0))
    tokens = np.random.default_rng(0).integers(0, 256, (2, 32))
    clone = prune.copy(network)
    np.testing.assert_array_equal(clone(tokens).numpy(), network(tokens).numpy())
    assert models.describe(clone) == models.describe(network)
    pruned = prune.apply(network, _prune_config())
    assert {w.layer.name for w in prune.wrappers(pruned)} >= {"block_0_mlp_in", "block_0_mlp_out"}


def _prune_config():
    import ml_collections  # pylint: disable=import-outside-toplevel
    return ml_collections.ConfigDict(dict(target_sparsity=0.5, begin_step=0, end_step=10, frequency=2, exclude=""))


def test_pycode_is_the_stdlib_split_by_file_in_fixed_length_examples(tmp_path):
    files = pycode.source_files()
    assert len(files) > 100 and files == sorted(files, key=lambda p: p.split("python3")[-1])
    assert not any("site-packages" in f or "/test/" in f for f in files)
    splits = pycode.split_files(files)
    assert not set(splits["train"]) & set(splits["validation"])
    kept = set(splits["train"]) | set(splits["validation"])
    assert kept <= set(files) and len(kept) > 0.99 * len(files)  # only exact duplicates dropped
    corpus = data.load(lm_config(data__data_dir=str(tmp_path)).data, seq_len=32)
    inputs, targets = corpus.train
    assert inputs.shape[1:] == (32,) and inputs.dtype == np.int32 and inputs.max() < 256
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])  # targets are the next bytes
    windows_per_example = pycode.EXAMPLE_BYTES // 33
    assert corpus.info.num_train % windows_per_example == 0
    train_bytes = corpus.info.num_train // windows_per_example * pycode.EXAMPLE_BYTES
    train_files = sum(os.path.getsize(f) + 1 for f in splits["train"])  # + the separator after each file
    assert train_files - pycode.EXAMPLE_BYTES < train_bytes <= train_files  # training: only the tail dropped
    eval_bytes = corpus.info.num_eval // windows_per_example * pycode.EXAMPLE_BYTES
    eval_files = sum(os.path.getsize(f) + 1 for f in splits["validation"])
    assert 0.7 * eval_files < eval_bytes <= eval_files  # validation: spans shared with training cut out


def test_windows_cut_examples_into_inputs_and_next_byte_targets():
    examples = np.arange(20, dtype=np.uint8).reshape(2, 10)
    inputs, targets = text.windows(examples, 4)
    np.testing.assert_array_equal(inputs, [[0, 1, 2, 3], [5, 6, 7, 8], [10, 11, 12, 13], [15, 16, 17, 18]])
    np.testing.assert_array_equal(targets, inputs + 1)


def test_default_lm_learns_pycode_well_below_uniform(tmp_path):
    # Judged on 1,024 evenly spaced validation windows (of 3,899): 2.81 and 2.75 nats on seeds 0
    # and 1 (all of them: 2.79 on seed 0), in a fifth of the time the whole split takes.
    run = Run(lm_config(None, train__num_steps=100, export__saved_model=False, eval__max_examples=1024),
              str(tmp_path))
    run.fit()
    loss = run.evaluate()["loss"]
    print(f"lm default, 100 updates: validation {loss:.3f} nats/byte ({loss / math.log(2):.3f} bits/byte)")
    assert loss < 3.0 < math.log(256)


def test_lm_gives_the_same_weights_on_four_replicas_as_on_one_device():
    def weights(**kw):
        run = Run(lm_config(train__num_steps=6, export__saved_model=False, **kw), tempfile.mkdtemp())
        run.fit()
        return [v.numpy() for v in run.network.trainable_variables]
    one = weights()
    four = weights(distribute__strategy="mirrored", distribute__cpu_devices=4, train__accum_steps=2,
                   train__batch_size=16)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(one, four))
    print(f"lm mirrored x4 + accum 2 vs one device: max |dw| = {diff:.2e}")
    assert diff < 1e-5
