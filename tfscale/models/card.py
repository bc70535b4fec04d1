"""What a built network is and costs, computed from the network itself (so a clone has the same).

Two counting conventions, named as `scaling.params` / `experiments.fit --params` name them:

- "total" (the default): N = every trainable parameter, a tied embedding counted once; training
  FLOPs = 3x forward, where an LM's forward per token is 2 FLOPs per non-embedding parameter
  (a multiply-add per weight; biases and norm scales counted alike, as Kaplan's 2N), the
  output-logits matmul 2 d_model vocab, and attention 2 * 2 n_layer seq_len d_model (QK^T and
  AV over all seq_len keys: the causal mask is not discounted). Small models spend a large
  share of their parameters and FLOPs in embeddings and logits; leaving them out bends fitted
  exponents (Pearce & Song 2024; Porian et al. 2024).
- "non_embedding" (Kaplan et al. 2020, Table 1): N without token/position embeddings and an
  untied output matrix; FLOPs per token 6N + 6 n_layer seq_len d_model, no logits matmul.

Classifiers (mlp, cnn) have no embeddings: both conventions give the same numbers, and FLOPs
come from the layers (`flops.py`).
"""
import dataclasses
from typing import Optional

import tf_keras as keras

from tfscale.counting import CONVENTIONS, check_convention  # noqa: F401  (CONVENTIONS re-exported)
from tfscale.models import flops, transformer_lm



@dataclasses.dataclass(frozen=True)
class ModelCard:
    task: str  # "lm" (next-token logits) or "classifier"
    total_params: int
    non_embedding_params: int
    flops_per_example: int  # training FLOPs, convention "total"
    flops_per_example_kaplan: int  # training FLOPs, convention "non_embedding"
    tokens_per_example: Optional[int] = None  # LMs only

    def params(self, convention="total"):
        return self.total_params if check_convention(convention) == "total" else self.non_embedding_params

    def flops(self, convention="total"):
        """Training FLOPs per example."""
        return self.flops_per_example if check_convention(convention) == "total" else self.flops_per_example_kaplan

    def flops_per_token(self, convention="total"):
        return self.flops(convention) // self.tokens_per_example if self.tokens_per_example else None


def _unique(variables):
    return {v.ref(): v for v in variables}


def _count(variables):
    return int(sum(v.shape.num_elements() for v in _unique(variables).values()))


def describe(network, model_config=None, task=None):
    """The `ModelCard` of a built network (`model_config` names it; else the network's name).

    The registry's transformer LM is counted by role (below); any other network, a user's own
    included, by its layers (`flops.py`: Dense and Conv layers; attention score FLOPs are not
    counted there), with `task` ("classifier" or "lm", from the data) deciding tokens per example.
    """
    name = model_config.name if model_config is not None else network.name
    total = _count(network.trainable_variables)
    if name == "transformer_lm":
        return _describe_lm(network, total)
    if name == "transformer_encoder":
        return _describe_encoder(network, total)
    training = flops.training_flops(network)
    tokens = int(network.input_shape[1]) if task == "lm" else None
    return ModelCard(task or "classifier", total, total, training, training, tokens)


def _describe_lm(network, total):
    """Embedding parameters by role: the token table, learned positions and an untied output layer
    (its kernel and bias); the knobs as built: vocab and d_model from the token table, seq_len
    from the input, n_layer from the attention layers."""
    layers = network.layers
    token = next(l for l in layers if isinstance(l, keras.layers.Embedding))
    embedding_layers = [l for l in layers if isinstance(l, (keras.layers.Embedding, transformer_lm.PositionEmbedding))]
    embedding_layers += [l for l in layers if l.name == "logits"]  # an untied output; tied: the token table
    embedding = _count([v for l in embedding_layers for v in l.trainable_weights])
    vocab, d_model = (int(d) for d in token.embeddings.shape)
    seq_len = int(network.input_shape[1])
    n_layer = sum(isinstance(l, keras.layers.MultiHeadAttention) for l in layers)
    non_embedding = total - embedding
    attention = 2 * 2 * n_layer * seq_len * d_model
    forward = 2 * non_embedding + 2 * d_model * vocab + attention
    kaplan = 6 * non_embedding + 6 * n_layer * seq_len * d_model
    return ModelCard("lm", total, non_embedding, 3 * forward * seq_len, kaplan * seq_len, seq_len)


def _describe_encoder(network, total):
    """The encoder counted like the decoder: every position ([CLS] included) runs the blocks and
    attends to all T + 1; a masked-LM head adds the tied logits matmul at the T token positions,
    a classifier's pooler and head run once per example. Kaplan's count leaves out the logits."""
    layers = network.layers
    token = next(l for l in layers if isinstance(l, keras.layers.Embedding))
    positions = next(l for l in layers if isinstance(l, transformer_lm.PositionEmbedding))
    vocab, d_model = (int(d) for d in token.embeddings.shape)
    seq_len = int(network.input_shape[1])
    n_layer = sum(isinstance(l, keras.layers.MultiHeadAttention) for l in layers)
    head = _count([v for l in layers if l.name in ("pooler", "logits") for v in l.trainable_weights])
    non_embedding = total - _count([*token.trainable_weights, *positions.trainable_weights])
    per_position = 2 * (non_embedding - head) + 2 * 2 * n_layer * (seq_len + 1) * d_model
    masked_lm = not any(l.name == "logits" for l in layers)
    forward = (seq_len + 1) * per_position + (seq_len * 2 * d_model * vocab if masked_lm else 2 * head)
    kaplan = 6 * (non_embedding - head) * (seq_len + 1) + 6 * n_layer * (seq_len + 1) ** 2 * d_model
    return ModelCard("masked_lm" if masked_lm else "classifier", total, non_embedding, 3 * forward, kaplan, seq_len)
