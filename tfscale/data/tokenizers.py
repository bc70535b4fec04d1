"""Tokenizers: bytes, or a SentencePiece model (unigram or BPE) trained on the corpus.

A tokenizer turns text into int32 ids in Python (`encode`, for preparing data) and in the graph
(`tf_tokenize`, for a SavedModel that takes raw strings), and back (`decode`). It is stored as
`tokenizer.json` (its `spec`: what a manifest records and what two tokenizers are compared by,
`same`) plus, for SentencePiece, `tokenizer.model` (the serialized model, whose SHA-256 is in the
spec). Text is taken as UTF-8 bytes.

Documents are separated by the NUL byte for every tokenizer: the byte tokenizer's id 0, the
SentencePiece model's byte piece `<0x00>` (no learned piece contains NUL), so `separator_id` is
what `encode(b"\\0")` returns and a decoded stream is the same bytes whichever tokenizer made it.

SentencePiece is trained to keep code as it is (no normalization, no dummy prefix, whitespace
kept, runs of spaces as pieces) with byte fallback, so `decode(encode(t)) == t` for any valid
UTF-8 `t`; malformed UTF-8 reads as U+FFFD (the byte tokenizer round-trips any bytes). Losses
compare across tokenizers in bits per byte (`bits_per_byte`).
"""
import hashlib
import math

import numpy as np

from tfscale import io
from tfscale.errors import ConfigError

SPEC_FILE = "tokenizer.json"
MODEL_FILE = "tokenizer.model"
SEPARATOR = b"\0"
MODEL_TYPES = ("unigram", "bpe")


def _as_bytes(text):
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


class Tokenizer:
    """What every tokenizer offers; see the module docstring."""

    kind = None
    model_type = None
    vocab_size = None
    separator_id = None

    def encode(self, text):
        """`text` (str, or bytes taken as UTF-8) -> int32 ids [n]."""
        raise NotImplementedError

    def decode(self, ids):
        """ids -> bytes."""
        raise NotImplementedError

    def tf_tokenize(self, strings):
        """tf.string [batch] -> tf.RaggedTensor int32 [batch, (n)], the ids `encode` gives;
        usable inside a tf.function and a SavedModel signature."""
        raise NotImplementedError

    def spec(self):
        return {"kind": self.kind, "vocab_size": int(self.vocab_size),
                "model_type": self.model_type, "separator_id": int(self.separator_id)}

    def save(self, directory):
        io.makedirs(directory)
        io.write_json(io.join(directory, SPEC_FILE), self.spec())

    def encode_batch(self, texts):
        """[`encode(t)` for t in texts], in one call where the tokenizer can."""
        return [self.encode(t) for t in texts]

    def encode_documents(self, texts):
        """The ids of the texts, each followed by `separator_id`: one corpus stream."""
        separator = np.array([self.separator_id], np.int32)
        pieces = [p for ids in self.encode_batch(list(texts)) for p in (ids, separator)]
        return np.concatenate(pieces) if pieces else np.zeros([0], np.int32)

    def bytes_per_token(self, texts):
        """UTF-8 bytes of `texts` per token they encode to: what one token is worth."""
        texts = [_as_bytes(t) for t in texts]
        tokens = sum(len(ids) for ids in self.encode_batch(texts))
        return sum(len(t) for t in texts) / max(tokens, 1)

    def __repr__(self):
        return f"{type(self).__name__}({self.spec()})"


class ByteTokenizer(Tokenizer):
    """The 256 byte values as ids; NUL (0) separates documents."""

    kind = "bytes"
    model_type = "bytes"
    vocab_size = 256
    separator_id = 0

    def encode(self, text):
        return np.frombuffer(_as_bytes(text), np.uint8).astype(np.int32)

    def decode(self, ids):
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise ValueError(f"byte ids must be in [0, 255], got {ids.min()}..{ids.max()}")
        return ids.astype(np.uint8).tobytes()

    def tf_tokenize(self, strings):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        chars = tf.strings.bytes_split(tf.convert_to_tensor(strings, tf.string))
        values = tf.reshape(tf.io.decode_raw(chars.flat_values, tf.uint8), [-1])
        return chars.with_flat_values(tf.cast(values, tf.int32))


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model, held as its serialized proto (`model_proto`).

    The `sentencepiece` package trains and decodes; ids always come from tensorflow-text's
    op (`tf_module`), in Python as in the graph: the two libraries' SentencePiece versions
    break ties between equally scored unigram segmentations (runs of spaces: 8 + 12 or 12 + 8)
    differently, and the data and a serving signature must agree.
    """

    kind = "sentencepiece"

    def __init__(self, model_proto):
        import sentencepiece as spm  # pylint: disable=import-outside-toplevel
        from sentencepiece import sentencepiece_model_pb2  # pylint: disable=import-outside-toplevel
        self.model_proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        proto = sentencepiece_model_pb2.ModelProto.FromString(self.model_proto)
        self.model_type = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type).lower()
        self.vocab_size = self._sp.get_piece_size()
        self.separator_id = self._sp.piece_to_id("<0x00>")
        if not proto.trainer_spec.byte_fallback or self._sp.id_to_piece(self.separator_id) != "<0x00>":
            raise ConfigError("the SentencePiece model has no byte fallback "
                              "(train it with `SentencePieceTokenizer.train`)")
        self.sha256 = hashlib.sha256(self.model_proto).hexdigest()
        self._tf = None

    @classmethod
    def train(cls, texts, vocab_size, model_type="unigram", directory=None, seed=0,
              max_sentence_length=4192, num_threads=1, character_coverage=0.9995,
              input_sentence_size=0):
        """Trains a model on `texts` (str or UTF-8 bytes), saved to `directory` if given.

        Each text is split at NULs and cut at line ends into sentences of at most
        `max_sentence_length` bytes (SentencePiece skips longer ones). The model is a function
        of the texts, `seed` and `num_threads`. `vocab_size` includes the 256 byte pieces, the
        unknown piece and every character of `character_coverage` (the rest falls back to
        bytes). `input_sentence_size` > 0 trains on that many sentences drawn with `seed`;
        SentencePiece holds every sentence it trains on in memory, so pass a sample of a large
        corpus.
        """
        import io as pyio  # pylint: disable=import-outside-toplevel
        import sentencepiece as spm  # pylint: disable=import-outside-toplevel
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"tokenizer model_type {model_type!r} is not one of {', '.join(MODEL_TYPES)}")
        spm.set_random_generator_seed(seed)
        model = pyio.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_sentences(texts, max_sentence_length), model_writer=model,
                vocab_size=vocab_size, model_type=model_type, byte_fallback=True,
                character_coverage=character_coverage, max_sentence_length=max_sentence_length,
                input_sentence_size=input_sentence_size, shuffle_input_sentence=True,
                num_threads=num_threads,
                # code as it is: no normalization, every space kept, no space put in front
                normalization_rule_name="identity", remove_extra_whitespaces=False,
                add_dummy_prefix=False, allow_whitespace_only_pieces=True, split_digits=True,
                bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, minloglevel=2)
        except RuntimeError as e:
            raise ConfigError(f"SentencePiece training failed (vocab_size {vocab_size}, {model_type}): "
                              f"{_reason(e)}") from None
        tokenizer = cls(model.getvalue())
        if directory is not None:
            tokenizer.save(directory)
        return tokenizer

    def encode(self, text):
        return self.tf_module.tokenize(_as_bytes(text)).numpy()

    def encode_batch(self, texts):
        ids = self.tf_module.tokenize([_as_bytes(t) for t in texts])
        return [row.numpy() for row in ids] if len(texts) else []

    def decode(self, ids):
        return self._sp.decode([int(i) for i in np.asarray(ids).reshape(-1)]).encode("utf-8")

    @property
    def tf_module(self):
        """The `tensorflow_text.SentencepieceTokenizer` that encodes: a SavedModel must track
        it (it holds the model as a resource)."""
        if self._tf is None:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel
            import tensorflow_text  # pylint: disable=import-outside-toplevel
            with tf.init_scope():
                self._tf = tensorflow_text.SentencepieceTokenizer(model=self.model_proto, out_type=tf.int32)
        return self._tf

    def tf_tokenize(self, strings):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        return self.tf_module.tokenize(tf.convert_to_tensor(strings, tf.string))

    def spec(self):
        return {**super().spec(), "sha256": self.sha256}

    def save(self, directory):
        io.makedirs(directory)
        io.write_bytes(io.join(directory, MODEL_FILE), self.model_proto)
        super().save(directory)  # the spec last: a spec on disk means its model is there


def _reason(error):
    """SentencePiece's message without its source location and check expression:
    "INTERNAL: src/x.cc(744) [a == b] Vocabulary size too high (9). ..." -> "Vocabulary size ..."."""
    last = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return last.split("] ", 1)[1] if last.startswith("INTERNAL: ") and "] " in last else last


def _sentences(texts, max_bytes):
    """The texts split at NULs and cut at line ends into pieces of at most `max_bytes` bytes."""
    for text in texts:
        for document in _as_bytes(text).split(SEPARATOR):
            piece = b""
            for line in document.splitlines(keepends=True):
                if piece and len(piece) + len(line) > max_bytes:
                    yield piece.decode("utf-8", "replace")
                    piece = b""
                while len(line) > max_bytes:
                    yield line[:max_bytes].decode("utf-8", "ignore")
                    line = line[max_bytes:]
                piece += line
            if piece:
                yield piece.decode("utf-8", "replace")


def load(directory):
    """The tokenizer saved in `directory`; one ConfigError naming the file if it is missing,
    unreadable, or its model is not the one the spec names."""
    path = io.join(directory, SPEC_FILE)
    try:
        spec = io.read_json(path)
        kind = spec["kind"]
    except Exception as e:  # pylint: disable=broad-except  (missing, unreadable, not JSON, no kind)
        raise ConfigError(f"tokenizer file {path} is missing or unreadable ({type(e).__name__})") from None
    if kind == ByteTokenizer.kind:
        tokenizer = ByteTokenizer()
    elif kind == SentencePieceTokenizer.kind:
        model_path = io.join(directory, MODEL_FILE)
        try:
            proto = io.read_bytes(model_path)
        except Exception as e:  # pylint: disable=broad-except
            raise ConfigError(f"tokenizer model {model_path} is missing or unreadable ({type(e).__name__})") from None
        sha = hashlib.sha256(proto).hexdigest()
        if sha != spec.get("sha256"):
            raise ConfigError(f"tokenizer model {model_path} has SHA-256 {sha[:12]}…, not the "
                              f"{str(spec.get('sha256'))[:12]}… its {SPEC_FILE} names")
        try:
            tokenizer = SentencePieceTokenizer(proto)
        except ConfigError as e:
            raise ConfigError(f"tokenizer model {model_path}: {e}") from None
        except Exception as e:  # pylint: disable=broad-except
            raise ConfigError(f"tokenizer model {model_path} is not a SentencePiece model "
                              f"({type(e).__name__})") from None
    else:
        raise ConfigError(f"tokenizer file {path} names an unknown kind {kind!r}")
    if not same(tokenizer.spec(), spec):
        raise ConfigError(f"tokenizer file {path} does not describe its tokenizer: "
                          f"{spec} vs {tokenizer.spec()}")
    return tokenizer


def same(spec_a, spec_b):
    """Whether two specs (or tokenizers) name the same tokenizer: same ids for every text."""
    keys = ("kind", "vocab_size", "model_type", "separator_id", "sha256")

    def identity(spec):
        spec = spec.spec() if isinstance(spec, Tokenizer) else spec
        return tuple(spec.get(k) for k in keys)

    return identity(spec_a) == identity(spec_b)


def bits_per_byte(nats_per_token, tokens, num_bytes):
    """A mean loss of `nats_per_token` over `tokens` tokens that encode `num_bytes` bytes, in
    bits per byte: the figure runs with different tokenizers compare by."""
    return nats_per_token * tokens / (num_bytes * math.log(2))
