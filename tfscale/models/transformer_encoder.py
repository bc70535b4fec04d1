"""Bidirectional transformer encoder (BERT style, pre-LayerNorm), for masked-LM pretraining and
classification.

The decoder's embeddings and blocks without the causal mask. A learned [CLS] token (id
`vocab_size - 1`) is put in front of every input; its final state is the pooled output (or, with
`pooling="mean"`, the mean of the token states: masked-LM pretraining trains every token state
and never the [CLS] one, so their mean is what the pretrained body has learnt to fill). On
masked-LM data (`data.mask_rate`, task `masked_lm`) the head is the token table itself (tied
logits over the vocabulary at every input position); on classification data a dense layer on the
pooled output. Both share every other weight by name, so a pretrained run's body loads into a
classifier (`model.init_from`). Inputs: token ids [batch, seq_len] (bytes 0..255 and the mask,
256); `vocab_size` 258 = bytes + mask + [CLS].

Fine-tuning knobs: `body_learning_rate` (a factor of the optimizer's learning rate for every
layer but the head, `pooler` and `logits`) and `frozen_body_steps` (the body stays as loaded for
the first updates, while the fresh head settles): `trainer.UpdateScale`.
"""
import tensorflow as tf
import tf_keras as keras

from tfscale import trainer
from tfscale.errors import ConfigError
from tfscale.models import transformer_lm

BYTES_MASK_CLS = 258


class PrependToken(keras.layers.Layer):
    """Puts `token_id` in front of every row of token ids: [b, T] -> [b, T + 1]."""

    def __init__(self, token_id, **kwargs):
        super().__init__(**kwargs)
        self.token_id = int(token_id)

    def call(self, tokens):
        first = tf.fill([tf.shape(tokens)[0], 1], tf.constant(self.token_id, tokens.dtype))
        return tf.concat([first, tokens], axis=1)

    def get_config(self):
        return {**super().get_config(), "token_id": self.token_id}


class Positions(keras.layers.Layer):
    """Rows [start, stop) of the sequence axis: the [CLS] state, or the token states."""

    def __init__(self, start, stop=None, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = start, stop

    def call(self, x):
        return x[:, self.start] if self.stop == self.start + 1 else x[:, self.start:self.stop]

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


POOLING = ("cls", "mean")
HEAD = ("pooler", "logits")


class MeanTokens(keras.layers.Layer):
    """The mean over the token states (every position after [CLS]): [b, T + 1, d] -> [b, d]."""

    def call(self, x):
        return tf.reduce_mean(x[:, 1:], axis=1)


def build(info, num_layers=2, d_model=128, num_heads=4, d_ff=512, seq_len=128, dropout=0.0,
          vocab_size=BYTES_MASK_CLS, pooling="cls", body_learning_rate=1.0, frozen_body_steps=0):
    transformer_lm.check_shape(info, num_layers, d_model, num_heads, d_ff, seq_len, dropout)
    if pooling not in POOLING:
        raise ConfigError(f"model.pooling must be one of {', '.join(POOLING)}, got {pooling!r}")
    if body_learning_rate < 0 or frozen_body_steps < 0:
        raise ConfigError(f"model.body_learning_rate ({body_learning_rate}) and model.frozen_body_steps "
                          f"({frozen_body_steps}) must be >= 0")
    masked_lm = info.task == "masked_lm"
    if masked_lm and info.num_classes + 2 > vocab_size:
        raise ConfigError(f"model.vocab_size {vocab_size} leaves no room for the data's {info.num_classes} "
                          "tokens, the mask and [CLS]")
    tokens = keras.Input((seq_len,), dtype="int32", name="tokens")
    with_cls = PrependToken(vocab_size - 1, name="prepend_cls")(tokens)
    embedding, x = transformer_lm.embed(with_cls, vocab_size, d_model, seq_len + 1, dropout)
    for i in range(num_layers):
        x = transformer_lm.block(x, i, num_heads, d_model, d_ff, dropout, causal=False)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_final")(x)
    if masked_lm:
        logits = embedding(Positions(1, name="token_states")(x), logits=True)
    else:
        pooled = (Positions(0, 1, name="cls_state") if pooling == "cls" else MeanTokens(name="mean_tokens"))(x)
        pooled = keras.layers.Dense(d_model, activation="tanh", name="pooler")(pooled)
        logits = keras.layers.Dense(info.num_classes, dtype="float32", name="logits")(
            keras.layers.Dropout(dropout)(pooled))
    network = keras.Model(tokens, logits, name="transformer_encoder")
    if not masked_lm:
        body = [layer.name for layer in network.layers if layer.trainable_weights and layer.name not in HEAD]
        network.update_scale = trainer.UpdateScale(body, body_learning_rate, frozen_body_steps)
    return network
