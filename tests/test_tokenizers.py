"""Tokenizers: round trips, determinism, in-graph tokenization, storage, the text signature."""
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from experiments.configs import lm
from tfscale import data, export, models
from tfscale.data import pycode, tokenizers
from tfscale.errors import ConfigError

VOCAB = 1024
TRAIN_BYTES, HELDOUT_BYTES = 200_000, 60_000

ODD_TEXTS = [
    "",
    "def f(x):\n\tif x:\r\n\t\treturn  x   +  1\r\n",  # tabs, CRLF, runs of spaces
    "    " * 7 + "pass" + " " * 33 + "\n\n\n",
    "# héllo wörld — ∑ 中文 😀 \u2028 \ufeff",  # non-ASCII, none of it frequent in the stdlib
    "\x01\x02\x07\x1b[0m\x7f",  # control bytes never seen in training
    "a\0b\0",  # separators
    " leading space, trailing space ",
    "0123456789 3.14159e-10 0xDEADBEEF",
]


def _texts(start, budget):
    """Stdlib sources, every 5th file from `start`, up to `budget` bytes."""
    out, total = [], 0
    for path in pycode.source_files()[start::5]:
        with open(path, "rb") as f:
            out.append(f.read())
        total += len(out[-1])
        if total >= budget:
            break
    return out


@pytest.fixture(scope="module")
def corpus():
    train, heldout = _texts(0, TRAIN_BYTES), _texts(2, HELDOUT_BYTES)
    train[1] = train[1] + b"\0" + train[2]  # a NUL in the training text: still only the separator
    return train, heldout


@pytest.fixture(scope="module")
def trained(corpus):
    return {model_type: tokenizers.SentencePieceTokenizer.train(corpus[0], VOCAB, model_type)
            for model_type in tokenizers.MODEL_TYPES}


@pytest.fixture(scope="module", params=["bytes", "unigram", "bpe"])
def tokenizer(request, trained):
    return tokenizers.ByteTokenizer() if request.param == "bytes" else trained[request.param]


def test_decode_inverts_encode_on_source_and_odd_text(tokenizer, corpus):
    texts = corpus[1] + ODD_TEXTS + [t.encode("utf-8") for t in ODD_TEXTS]
    for text in texts:
        ids = tokenizer.encode(text)
        assert ids.dtype == np.int32 and ((0 <= ids) & (ids < tokenizer.vocab_size)).all()
        expected = text.encode("utf-8") if isinstance(text, str) else text
        assert tokenizer.decode(ids) == expected
    assert list(tokenizer.encode(b"\0")) == [tokenizer.separator_id]
    stream = tokenizer.encode_documents(["ab", "c"])
    assert tokenizer.decode(stream) == b"ab\0c\0" and stream[-1] == tokenizer.separator_id


def test_bytes_round_trip_any_bytes_and_sentencepiece_reads_malformed_utf8_as_replacement(trained):
    every_byte = bytes(range(256)) * 2
    assert tokenizers.ByteTokenizer().decode(tokenizers.ByteTokenizer().encode(every_byte)) == every_byte
    assert list(tokenizers.ByteTokenizer().encode("é")) == [0xC3, 0xA9]
    for tokenizer in trained.values():
        assert tokenizer.decode(tokenizer.encode(b"a\xffb")) == "a\ufffdb".encode("utf-8")


def test_training_is_a_function_of_texts_and_seed(corpus, trained):
    again = tokenizers.SentencePieceTokenizer.train(corpus[0], VOCAB, "unigram", seed=0)
    assert again.spec() == trained["unigram"].spec() and again.model_proto == trained["unigram"].model_proto
    assert trained["unigram"].spec()["sha256"] != trained["bpe"].spec()["sha256"]
    assert trained["bpe"].spec()["model_type"] == "bpe" and trained["unigram"].spec()["vocab_size"] == VOCAB


def test_training_refuses_a_vocabulary_without_room_for_the_bytes(corpus):
    with pytest.raises(ConfigError, match="SentencePiece training failed"):
        tokenizers.SentencePieceTokenizer.train(corpus[0][:3], 200)
    with pytest.raises(ConfigError, match="model_type"):
        tokenizers.SentencePieceTokenizer.train(corpus[0][:3], 512, "wordpiece")


def test_tf_tokenize_gives_the_ids_of_encode_in_a_tf_function(tokenizer, corpus):
    texts = [t.encode("utf-8") for t in ODD_TEXTS] + [t[:3000] for t in corpus[1][:4]]
    graph = tf.function(lambda s: tokenizer.tf_tokenize(s).to_tensor(-1))
    dense = graph(tf.constant(texts)).numpy()
    eager = tokenizer.tf_tokenize(tf.constant(texts))
    assert isinstance(eager, tf.RaggedTensor) and eager.dtype == tf.int32
    for row, text in enumerate(texts):
        ids = tokenizer.encode(text)
        np.testing.assert_array_equal(eager[row].numpy(), ids)
        np.testing.assert_array_equal(dense[row, :len(ids)], ids)
        assert (dense[row, len(ids):] == -1).all()


def test_save_and_load_give_the_same_tokenizer(tokenizer, tmp_path, corpus):
    tokenizer.save(str(tmp_path))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == (["tokenizer.json"] if tokenizer.kind == "bytes" else ["tokenizer.json", "tokenizer.model"])
    assert json.loads((tmp_path / "tokenizer.json").read_text()) == tokenizer.spec()
    loaded = tokenizers.load(str(tmp_path))
    assert type(loaded) is type(tokenizer) and tokenizers.same(loaded.spec(), tokenizer.spec())
    np.testing.assert_array_equal(loaded.encode(corpus[1][0]), tokenizer.encode(corpus[1][0]))


def test_same_tells_tokenizers_apart(trained):
    byte, unigram, bpe = tokenizers.ByteTokenizer(), trained["unigram"], trained["bpe"]
    assert tokenizers.same(byte.spec(), tokenizers.ByteTokenizer().spec())
    assert tokenizers.same(unigram, unigram.spec())
    assert not tokenizers.same(byte.spec(), unigram.spec())
    assert not tokenizers.same(unigram.spec(), bpe.spec())
    assert not tokenizers.same(unigram.spec(), {**unigram.spec(), "sha256": "0" * 64})


def test_load_refuses_missing_corrupt_and_tampered_files_with_one_error_naming_the_file(trained, tmp_path):
    with pytest.raises(ConfigError, match=r"tokenizer file .*tokenizer\.json is missing"):
        tokenizers.load(str(tmp_path / "nowhere"))
    folder = tmp_path / "sp"
    trained["unigram"].save(str(folder))
    spec_file, model_file = folder / "tokenizer.json", folder / "tokenizer.model"
    model = model_file.read_bytes()
    model_file.write_bytes(model[:100] + bytes([model[100] ^ 1]) + model[101:])
    with pytest.raises(ConfigError, match=r"tokenizer model .*tokenizer\.model has SHA-256"):
        tokenizers.load(str(folder))
    model_file.unlink()
    with pytest.raises(ConfigError, match=r"tokenizer model .*tokenizer\.model is missing"):
        tokenizers.load(str(folder))
    model_file.write_bytes(model)
    assert tokenizers.same(tokenizers.load(str(folder)), trained["unigram"])
    spec_file.write_text(spec_file.read_text()[:-20])
    with pytest.raises(ConfigError, match=r"tokenizer file .*tokenizer\.json is missing or unreadable"):
        tokenizers.load(str(folder))
    spec_file.write_text(json.dumps({**trained["unigram"].spec(), "kind": "wordpiece"}))
    with pytest.raises(ConfigError, match=r"tokenizer\.json names an unknown kind"):
        tokenizers.load(str(folder))


def test_sentencepiece_packs_more_bytes_in_a_token_than_bytes_on_heldout_source(trained, corpus):
    heldout = corpus[1]
    assert tokenizers.ByteTokenizer().bytes_per_token(heldout) == 1.0
    for model_type, tokenizer in trained.items():
        per_token = tokenizer.bytes_per_token(heldout)
        print(f"{model_type} vocab {VOCAB}: {per_token:.2f} held-out bytes per token")
        assert per_token > 1.5


def test_bits_per_byte_is_the_same_figure_from_either_tokenizer():
    # a model of 2 bits a byte: 2 ln 2 nats a byte token; 3 bytes a token at 6 ln 2 nats a token
    assert math.isclose(tokenizers.bits_per_byte(2 * math.log(2), 1000, 1000), 2.0)
    assert math.isclose(tokenizers.bits_per_byte(6 * math.log(2), 1000, 3000), 2.0)


@pytest.mark.parametrize("kind", ["bytes", "unigram"])
def test_the_text_signature_is_the_model_on_the_ids_of_encode(kind, trained, tmp_path):
    tokenizer = tokenizers.ByteTokenizer() if kind == "bytes" else trained[kind]
    seq_len = 32
    network = models.build(lm.get_config("tiny").model,
                           data.DataInfo("pycode", (seq_len,), tokenizer.vocab_size, 1.0, 0, 0))
    sample = np.random.default_rng(0).integers(0, tokenizer.vocab_size, (4, seq_len))
    check = export.save_saved_model(network, str(tmp_path / "sm"), sample, classifier=False, tokenizer=tokenizer)
    assert check["serving_text"]["max_abs_diff"] <= 1e-5
    assert not hasattr(network, "text_tokenizer")  # the network is as it was

    loaded = export.load_saved_model(str(tmp_path / "sm"))
    assert set(loaded.signatures) == {"serving_default", "serving_text"}
    long_text = "import os\n" * 40  # longer than the window: its last tokens are kept
    texts = ["", "def f(x):\n\treturn x", "é ∑ 😀\r\n", long_text]
    out = loaded.signatures["serving_text"](text=tf.constant(texts))
    for row, text in enumerate(texts):
        ids = np.concatenate([[tokenizer.separator_id], tokenizer.encode(text)])[-seq_len:]
        window = np.full([1, seq_len], tokenizer.separator_id)
        window[0, :len(ids)] = ids
        expected = network(window, training=False).numpy()[0, len(ids) - 1]
        assert out["length"][row] == len(ids) and (len(ids) == seq_len) == (text == long_text)
        np.testing.assert_array_equal(out["tokens"][row], window[0])
        np.testing.assert_allclose(out["logits"][row], expected, rtol=1e-5, atol=1e-5)
    assert out["logits"].shape == (len(texts), tokenizer.vocab_size)
