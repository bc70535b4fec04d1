"""Decoder-only transformer language model (GPT-2 style, pre-LayerNorm).

Token embedding + learned positions, `num_layers` blocks of causal multi-head self-attention
and a GELU MLP, each with a pre-LayerNorm residual, a final LayerNorm, and logits over the
vocabulary (tied to the token embedding by default). Inputs are token ids [batch, seq_len];
outputs float32 logits [batch, seq_len, vocab]. Its parameter and FLOP counts: `card.py`.
"""
import tensorflow as tf
import tf_keras as keras

from tfscale.errors import ConfigError
from tfscale.models import knobs


class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to its token embedding."""

    def __init__(self, seq_len, **kwargs):
        super().__init__(**kwargs)
        self.seq_len = seq_len

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            "embeddings", shape=(self.seq_len, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.02))

    def call(self, x):
        return x + tf.cast(self.embeddings[: tf.shape(x)[1]], x.dtype)

    def get_config(self):
        return {**super().get_config(), "seq_len": self.seq_len}


class TokenEmbedding(keras.layers.Embedding):
    """The token table, also the output layer when embeddings are tied: called on token ids it
    embeds them; called with `logits=True` on hidden states it returns float32 logits against
    the same table. One layer used at two places of the graph, so `clone_model`, pruning and
    saving see plain, serialisable Keras (a layer holding another layer would not be)."""

    def call(self, inputs, logits=False):  # pylint: disable=arguments-differ
        if not logits:
            return super().call(inputs)
        return tf.matmul(tf.cast(inputs, tf.float32), tf.cast(self.embeddings, tf.float32), transpose_b=True)


def check_shape(info, num_layers, d_model, num_heads, d_ff, seq_len, dropout):
    """The knob checks every transformer of the registry shares."""
    knobs.at_least(1, num_layers=num_layers, d_model=d_model, num_heads=num_heads, d_ff=d_ff,
                   seq_len=seq_len)
    knobs.dropout(dropout)
    if d_model % num_heads:
        raise ConfigError(f"model.d_model {d_model} is not divisible by model.num_heads {num_heads}")
    if info.input_shape != (seq_len,):
        raise ConfigError(f"model.seq_len {seq_len} does not match the data's examples {info.input_shape}")


def embed(tokens, vocab, d_model, seq_len, dropout):
    """(the token table, token + learned position embeddings of `tokens`)."""
    embedding = TokenEmbedding(vocab, d_model, name="token_embedding",
                               embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02))
    x = PositionEmbedding(seq_len, name="position_embedding")(embedding(tokens))
    return embedding, keras.layers.Dropout(dropout)(x)


def block(x, i, num_heads, d_model, d_ff, dropout, causal=True):
    """One pre-LayerNorm block: self-attention (causal for a decoder), then the GELU MLP."""
    h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block_{i}_ln_attention")(x)
    h = keras.layers.MultiHeadAttention(num_heads, d_model // num_heads, dropout=dropout,
                                        name=f"block_{i}_attention")(h, h, use_causal_mask=causal)
    x = x + keras.layers.Dropout(dropout)(h)
    h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block_{i}_ln_mlp")(x)
    h = keras.layers.Dense(d_ff, activation="gelu", name=f"block_{i}_mlp_in")(h)
    h = keras.layers.Dense(d_model, name=f"block_{i}_mlp_out")(h)
    return x + keras.layers.Dropout(dropout)(h)


def build(info, num_layers=2, d_model=128, num_heads=4, d_ff=512, seq_len=128, dropout=0.0,
          tie_embeddings=True):
    check_shape(info, num_layers, d_model, num_heads, d_ff, seq_len, dropout)
    vocab = info.num_classes
    tokens = keras.Input((seq_len,), dtype="int32", name="tokens")
    embedding, x = embed(tokens, vocab, d_model, seq_len, dropout)
    for i in range(num_layers):
        x = block(x, i, num_heads, d_model, d_ff, dropout)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_final")(x)
    if tie_embeddings:
        logits = embedding(x, logits=True)
    else:
        logits = keras.layers.Dense(vocab, dtype="float32", name="logits")(x)
    return keras.Model(tokens, logits, name="transformer_lm")
