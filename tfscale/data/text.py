"""Byte-level language-modelling data: fixed-length examples cut into (inputs, targets) windows.

A stored example of E bytes gives E // (T + 1) windows of T + 1 bytes for a model of context
T; window w's inputs are its first T bytes and its targets the last T (the next byte at every
position). Vocabulary: 256 byte values, so the loss is in nats per byte.
"""
import numpy as np
import tensorflow_datasets as tfds

from tfscale.errors import ConfigError
from tfscale.data.source import InMemorySource
from tfscale.data.info import DataInfo

VOCAB_SIZE = 256


def windows(examples, seq_len):
    """[n, E] bytes -> (inputs, targets), each [m, seq_len] int32."""
    per_example = examples.shape[1] // (seq_len + 1)
    if per_example < 1:
        raise ConfigError(f"model.seq_len {seq_len} is longer than the data set's "
                          f"{examples.shape[1] - 1}-byte context")
    cut = examples[:, :per_example * (seq_len + 1)].reshape(-1, seq_len + 1).astype(np.int32)
    return cut[:, :-1], cut[:, 1:]


def load(builder, seq_len, train_split="train", eval_split="validation"):
    def split(name):
        return tfds.as_numpy(builder.as_dataset(split=name, batch_size=-1))["bytes"]
    train, evaluation = windows(split(train_split), seq_len), windows(split(eval_split), seq_len)
    info = DataInfo(builder.name, (seq_len,), VOCAB_SIZE, 1.0, len(train[0]), len(evaluation[0]), task="lm")
    from tfscale.data import tokenizers  # pylint: disable=import-outside-toplevel
    return InMemorySource(info, train, evaluation, tokenizer=tokenizers.ByteTokenizer())
