"""A convolutional text classifier over token ids (Kim 2014): embedding, one 1-D convolution
per width in `widths` (`filters` each, ReLU), max over positions, concatenated, logits.

A student that suits a small device: a few ops and nearly all of its bytes in weights, so an
int8 TFLite file is close to a quarter of the float one (a transformer's graph of ~90 ops is a
fixed ~20 kB that quantization does not shrink). Byte n-grams up to the widest filter are what
it sees, which is what tells one package's identifiers from another's.
"""
import tf_keras as keras

from tfscale.errors import ConfigError
from tfscale.models import classifier_parts, knobs


def build(info, embed_dim=32, filters=32, widths="5", seq_len=128, vocab_size=256, dropout=0.0):
    knobs.at_least(1, embed_dim=embed_dim, filters=filters, seq_len=seq_len, vocab_size=vocab_size)
    knobs.dropout(dropout)
    try:
        sizes = [int(w) for w in str(widths).split(",") if w.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or max(sizes) > seq_len:
        raise ConfigError(f"model.widths must be comma-separated filter widths in 1..{seq_len}, got {widths!r}")
    if info.task != "classifier" or tuple(info.input_shape) != (seq_len,):
        raise ConfigError(f"model text_cnn classifies token sequences of model.seq_len {seq_len}; the data has "
                          f"inputs of shape {tuple(info.input_shape)} ({info.task})")
    tokens = keras.Input((seq_len,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocab_size, embed_dim, name="embedding")(tokens)
    pooled = [keras.layers.GlobalMaxPooling1D(name=f"max_{w}")(
        keras.layers.Conv1D(filters, w, activation="relu", name=f"conv_{w}")(x)) for w in sizes]
    features = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="features")(pooled)
    return classifier_parts.logits_model(tokens, features, info, dropout, "text_cnn")
