"""Model cards: parameter and FLOP counts by hand, both conventions, through summaries, rows and fits."""
import json

import numpy as np
import pytest
import tf_keras as keras

from experiments.configs import digits_cnn, digits_mlp, lm
from tfscale import ConfigError, data, models
from tfscale.scaling import analysis, results, sweep

V, D, L, H, F, T = 256, 16, 1, 2, 64, 16  # vocab, d_model, layers, heads, d_ff, seq_len


def small_lm(tie):
    config = lm.get_config("tiny")
    config.model.update(num_layers=L, d_model=D, num_heads=H, d_ff=F, seq_len=T, tie_embeddings=tie)
    return config.model, models.build(config.model, data.DataInfo("pycode", (T,), V, 1.0, 0, 0))


@pytest.mark.parametrize("tie", [True, False])
def test_lm_counts_match_hand_counts(tie):
    model_config, network = small_lm(tie)
    card = models.describe(network, model_config)
    token_embedding = 256 * 16                      # 4096
    position_embedding = 16 * 16                    # 256
    ln_attention = 16 + 16                          # gamma, beta: 32
    attention = (3 * (16 * 2 * 8 + 2 * 8)           # query, key, value kernels [16, 2, 8] + biases [2, 8]
                 + (2 * 8 * 16 + 16))               # output kernel [2, 8, 16] + bias [16]: 1088 in all
    ln_mlp = 16 + 16                                # 32
    mlp_in = 16 * 64 + 64                           # 1088
    mlp_out = 64 * 16 + 16                          # 1040
    ln_final = 16 + 16                              # 32
    untied_logits = 0 if tie else 16 * 256 + 256    # 4352 (tied: the token table, counted once)
    non_embedding = ln_attention + attention + ln_mlp + mlp_in + mlp_out + ln_final
    assert non_embedding == 3312
    assert card.non_embedding_params == non_embedding
    assert card.total_params == non_embedding + token_embedding + position_embedding + untied_logits
    assert card.total_params == (7664 if tie else 12016) == models.num_params(network)
    # total: 3 x (2 per non-embedding weight + logits matmul 2 d_model vocab + QK^T and AV 2*2 L T d_model)
    full_per_token = 3 * (2 * 3312 + 2 * 16 * 256 + 2 * 2 * 1 * 16 * 16)
    assert full_per_token == 3 * (6624 + 8192 + 1024) == 47520
    # Kaplan: 6N + 6 n_layer n_ctx d_model
    kaplan_per_token = 6 * 3312 + 6 * 1 * 16 * 16
    assert kaplan_per_token == 19872 + 1536 == 21408
    assert card.flops_per_token() == full_per_token and card.flops_per_token("non_embedding") == kaplan_per_token
    assert card.flops_per_example == 16 * 47520 and card.flops_per_example_kaplan == 16 * 21408
    assert card.task == "lm" and card.tokens_per_example == 16
    assert models.training_flops_per_example(network) == card.flops_per_example


def _mlp():
    config = digits_mlp.get_config("tiny")
    return config.model, models.build(config.model, data.DataInfo("digits", (64,), 10, 1 / 16, 0, 0))


def _cnn():
    config = digits_cnn.get_config("tiny")
    return config.model, models.build(config.model, data.DataInfo("digits", (64,), 10, 1 / 16, 0, 0))


@pytest.mark.parametrize("build", [lambda: small_lm(tie=False), _mlp, _cnn], ids=["lm_untied", "mlp", "cnn"])
def test_card_is_the_same_computed_again_from_a_clone(build):
    model_config, network = build()
    clone = keras.models.clone_model(network)
    assert models.describe(clone, model_config) == models.describe(network, model_config)
    assert models.describe(clone) == models.describe(network)  # the name alone is enough


def test_classifier_counts_are_the_same_in_both_conventions():
    model_config, network = _mlp()
    card = models.describe(network, model_config)
    widths = [64] + [model_config.width] * model_config.depth + [10]  # inputs, hidden layers, logits
    assert card.total_params == card.non_embedding_params == models.num_params(network)
    assert card.flops() == card.flops("non_embedding") == 3 * 2 * sum(np.multiply(widths[:-1], widths[1:]))
    assert card.task == "classifier" and card.tokens_per_example is None and card.flops_per_token() is None
    with pytest.raises(ConfigError, match="total or non_embedding"):
        card.params("embedding")


LM_SUMMARY = {"num_params": 7664, "non_embedding_params": 3312, "flops_per_example": 16 * 47520,
              "flops_per_token": 47520, "flops_per_token_kaplan": 21408, "examples_seen": 100,
              "num_tokens": 1600, "eval_loss": 2.5, "steps": 10}


def test_summary_gives_n_d_c_in_either_convention():
    assert results.ndc_from_summary(LM_SUMMARY) == (7664, 1600, 1600 * 47520)
    assert results.ndc_from_summary(LM_SUMMARY, "non_embedding") == (3312, 1600, 1600 * 21408)
    classifier = {"num_params": 100, "flops_per_example": 600, "examples_seen": 10}
    assert results.ndc_from_summary(classifier) == results.ndc_from_summary(classifier, "non_embedding") == (
        100, 10, 6000)
    with pytest.raises(ConfigError, match="got 'kaplan'"):
        results.ndc_from_summary(LM_SUMMARY, "kaplan")


def test_results_rows_carry_both_conventions():
    config = lm.get_config("tiny")
    run = sweep.PlannedRun("a_T1.6e3", "a_T1.6e3", "a", (), 10, 1.0)
    row = sweep.row_for(run, LM_SUMMARY, config)
    assert (row["num_params"], row["non_embedding_params"]) == (7664, 3312)
    assert (row["flops"], row["flops_kaplan"], row["num_tokens"]) == (1600 * 47520, 1600 * 21408, 1600)


def _rows(with_both=True):
    """Points on L = E + A/N^a + B/D^b with N total; the non-embedding N is 0.8 N - 500."""
    rows = []
    for n in np.geomspace(1e4, 1e6, 4):
        for d in np.geomspace(1e6, 1e8, 4):
            row = {"name": f"n{n:.3g}_d{d:.3g}", "num_params": n, "num_tokens": d, "flops": 8 * n * d,
                   "loss": 1.5 + 40 / n ** 0.3 + 300 / d ** 0.3, "status": "ok"}
            if with_both:
                row.update(non_embedding_params=0.8 * n - 500, flops_kaplan=6 * n * d)
            rows.append(row)
    return rows


@pytest.mark.parametrize("params", ["total", "non_embedding"])
def test_fit_uses_and_reports_the_convention(tmp_path, params):
    path = str(tmp_path / "results.jsonl")
    for row in _rows():
        results.append(path, row)
    from tfscale import scaling  # pylint: disable=import-outside-toplevel
    result = scaling.fit_results(path, str(tmp_path / "fit"), law="chinchilla", bootstrap=0, grid_stride=37,
                                 flops="model", params=params)
    fit_json = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert fit_json["params_convention"] == result["params_convention"] == params and "params_note" not in fit_json
    assert f"Counting `{params}`" in (tmp_path / "fit" / "report.md").read_text()
    held = {h["num_params"] for h in result["extrapolation"]["held_out"]}
    assert held == ({1e6} if params == "total" else {0.8 * 1e6 - 500})


def test_old_rows_without_non_embedding_params_are_fitted_as_non_embedding():
    old = _rows(with_both=False)
    rows, convention = results.in_convention(old, "total")
    assert convention == "non_embedding" and [r["num_params"] for r in rows] == [r["num_params"] for r in old]
    result = analysis.analyze(old, law="chinchilla", bootstrap=0, grid_stride=37, check_extrapolation=False)
    assert result["params_convention"] == "non_embedding" and "non-embedding counts only" in result["params_note"]
