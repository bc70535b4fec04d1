"""Masked-language-model data (BERT): any token source, its inputs masked, the masked tokens the targets.

`data.mask_rate` of the positions are chosen (15 % in BERT); a chosen token becomes the mask
token (id = the vocabulary size) 80 % of the time, a random token 10 % and stays itself 10 %;
the targets are the original tokens at the chosen positions and `info.IGNORED` elsewhere
(loss `masked_lm`). Which positions and what they become is a counter-based hash of (seed,
example position in the training stream, token position), so masks change every epoch (as in
RoBERTa) yet are a pure function of (seed, step): the same on any number of replicas and after a
resume. Held-out examples are masked by their index, once and for all.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from tfscale.data.source import DataSource
from tfscale.data.info import IGNORED

MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the chosen positions; the other 10 % keep their token
_EVAL_OFFSET = 1 << 40  # held-out positions never meet training ones


def _mix(z):
    """SplitMix64's finaliser: uint64 -> well-mixed uint64 (vectorised, no state)."""
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, 30)) * tf.constant(0xBF58476D1CE4E5B9, tf.uint64)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, 27)) * tf.constant(0x94D049BB133111EB, tf.uint64)
    return tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, 31))


def _uniform(seed, positions, length, stream):
    """[rows, length] uniforms in [0, 1) from (seed, row position, token position, stream)."""
    rows = tf.cast(positions, tf.uint64)[:, None]
    cols = tf.range(length, dtype=tf.int64)[None, :]
    key = (tf.constant(seed * 0x9E3779B97F4A7C15 % (1 << 64), tf.uint64) + rows * tf.constant(1 << 16, tf.uint64)
           + tf.cast(cols, tf.uint64) * tf.constant(4, tf.uint64) + tf.constant(stream, tf.uint64))
    return tf.cast(tf.bitwise.right_shift(_mix(key), 11), tf.float64) * (1.0 / (1 << 53))


def mask_tokens(tokens, positions, seed, rate, vocab_size):
    """(masked inputs, targets) of int token rows [n, T] (see the module docstring)."""
    tokens = tf.cast(tokens, tf.int32)
    length = tokens.shape[-1]
    chosen = _uniform(seed, positions, length, 0) < rate
    action = _uniform(seed, positions, length, 1)
    random = tf.cast(_uniform(seed, positions, length, 2) * vocab_size, tf.int32)
    masked = tf.where(action < MASK_SHARE, vocab_size, tf.where(action < MASK_SHARE + RANDOM_SHARE, random, tokens))
    return tf.where(chosen, masked, tokens), tf.where(chosen, tokens, IGNORED)


class MaskedTokens(DataSource):
    """`source`'s token inputs, masked; its own labels (next bytes) are dropped. Inputs take ids
    up to `vocab_size` (the mask), so an encoder's table has vocab_size + 1 rows."""

    def __init__(self, source, rate, seed):
        self.source, self.rate, self.seed = source, float(rate), int(seed)
        self.vocab_size = source.info.num_classes
        # The model predicts the original tokens: the classes stay the vocabulary.
        self.info = dataclasses.replace(source.info, task="masked_lm")

    def _masked(self, inputs, positions):
        return mask_tokens(inputs, positions, self.seed, self.rate, self.vocab_size)

    def read(self, split, indices):
        indices = np.asarray(indices, np.int64).reshape(-1)
        inputs, _ = self.source.read(split, indices)
        positions = indices + (_EVAL_OFFSET if split == "eval" else 0)
        return tuple(t.numpy() for t in self._masked(inputs, tf.constant(positions)))

    def _make_gather(self):
        inner = self.source._make_gather()  # pylint: disable=protected-access  (the source it wraps)

        def gather(indices, positions):
            inputs, _ = inner(indices, positions)
            return self._masked(inputs, positions)

        return gather
