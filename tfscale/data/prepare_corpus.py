"""A directory tree of text files as language-model shards: split, tokenized, windowed, resumable.

  files -> `corpus.split_documents` (duplicates out, split by file, shared spans cut) ->
  tokenizer (bytes, or a SentencePiece model trained on the training documents) -> each split's
  documents joined with the tokenizer's separator -> windows of seq_len + 1 tokens ->
  `array_record.write_windows` (manifest: counts, bytes, tokenizer, split rule, checksums).

Re-running the same command keeps complete shards and rewrites the rest: every step before the
shards is a pure function of the files and the flags, so the shards come out the same. The
folder is written under `array_record.preparing` (locked, settings recorded in prepare.json,
a failure before the first shard leaves nothing behind); a tree that changes while it is read
is refused (`corpus`), and so is a split that comes out empty (`check_split`): a corpus with
no held-out window would train and then fail at its first evaluation.
"""
import hashlib
import os
import time

from absl import logging
import numpy as np

from tfscale.data import array_record, corpus
from tfscale.errors import ConfigError

SETTINGS = array_record.SETTINGS
# SentencePiece holds the lines it trains on in memory: a seeded sample of this many lines (of a
# large corpus; all of a small one) is what the model is trained on. On site_packages a unigram
# model of 4,096 pieces took 1,470 s on 1M lines (one thread, a shared core); BPE trains far faster.
TOKENIZER_SENTENCES = 300_000


def file_list_digest(files, root, sizes=None):
    """SHA-256 over the relative paths and sizes of the input files: what the manifest records
    of where the corpus came from (cheap; the shard checksums cover the content). `sizes`: the
    listing's ({path: bytes}, `corpus.file_sizes`), taken here if not given."""
    sizes = sizes or corpus.file_sizes(files)
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{os.path.relpath(path, root)}\0{sizes[path]}\n".encode())
    return digest.hexdigest()


def _names(paths, root, most=4):
    shown = ", ".join(os.path.relpath(p, root) for p in paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def check_split(root, split, validation_share):
    """A side with no document is refused before anything is tokenized, naming the files and
    the rule that put them all on one side (`corpus.validation_mask`)."""
    files = split["train_files"] + split["validation_files"]
    if not split["validation_files"]:
        raise ConfigError(
            f"--files {root}: no file can be held out: {len(files)} distinct files ({_names(files, root)}) in "
            f"{split['groups']} near-duplicate groups, and a held-out group may take at most a quarter of "
            f"validation_share={validation_share:g} of the bytes ({split['budget'] // 4:,} of {split['budget']:,}), "
            f"the smallest holds {split['smallest_group']:,}; give more (or smaller) files or a larger "
            "--validation_share")
    if not split["train"]:
        raise ConfigError(f"--files {root}: every file went to the held-out side ({_names(files, root)}); "
                          "give more files or a smaller --validation_share")


def check_windows(root, split, tokens, seq_len):
    """Each side must fill at least one window of seq_len + 1 tokens: the held-out text is what
    is left of its files once spans shared with training are cut, which may be little."""
    for side, key, names in (("training", "train", "train_files"), ("held-out", "eval", "validation_files")):
        if len(tokens[key]) < seq_len + 1:
            raise ConfigError(
                f"--files {root}: the {side} files ({_names(split[names], root)}) give {len(tokens[key])} tokens"
                f"{' once spans shared with training are cut' if key == 'eval' else ''}, fewer than one window of "
                f"seq_len + 1 = {seq_len + 1}; give more files, a larger --validation_share or a smaller --seq_len")


def make_tokenizer(kind, out, train_documents, vocab_size, model_type, seed=0):
    """The byte tokenizer, or a SentencePiece model trained on the training documents (never on
    held-out text) and saved in `out`; a re-run loads the saved model rather than train again."""
    from tfscale.data import tokenizers  # pylint: disable=import-outside-toplevel
    if kind == "bytes":
        return tokenizers.ByteTokenizer()
    if kind != "sentencepiece":
        raise ConfigError(f"--tokenizer must be bytes or sentencepiece, got {kind!r}")
    if os.path.exists(os.path.join(out, "tokenizer.json")):
        return tokenizers.load(out)
    t0 = time.time()
    tokenizer = tokenizers.SentencePieceTokenizer.train(train_documents, vocab_size, model_type=model_type,
                                                        directory=out, seed=seed,
                                                        input_sentence_size=TOKENIZER_SENTENCES)
    logging.info("prepare: trained a %s SentencePiece model of %d pieces in %.0f s", model_type, vocab_size,
                 time.time() - t0)
    return tokenizer


def prepare(root, out, seq_len=128, tokenizer="bytes", vocab_size=4096, model_type="bpe",
            validation_share=0.05, shards=8, suffixes=(".py",), skip_folders=tuple(sorted(corpus.TEST_FOLDERS)),
            name=None):
    """Prepares `root`'s files into `out`; returns the manifest."""
    if not os.path.isdir(root):
        raise ConfigError(f"--files {root} is not a directory")
    require_positive = {"seq_len": seq_len, "shards": shards, "vocab_size": vocab_size}
    for key, value in require_positive.items():
        if value < 1:
            raise ConfigError(f"--{key} must be >= 1, got {value}")
    if not 0 < validation_share < 0.5:
        raise ConfigError(f"--validation_share must be in (0, 0.5), got {validation_share}")
    files = corpus.find_files(root, suffixes, set(skip_folders))
    if len(files) < 2:
        raise ConfigError(f"--files {root} holds {len(files)} files ending in {', '.join(suffixes)}: "
                          "a corpus needs at least two to split")
    sizes = corpus.file_sizes(files)
    settings = {"root": os.path.abspath(root), "files": file_list_digest(files, root, sizes), "seq_len": seq_len,
                "tokenizer": tokenizer, "vocab_size": vocab_size if tokenizer != "bytes" else 256,
                "model_type": model_type if tokenizer != "bytes" else None, "validation_share": validation_share,
                "shards": shards, "suffixes": list(suffixes), "skip_folders": sorted(skip_folders)}
    with array_record.preparing(out, settings):
        return _prepare(root, out, files, sizes, settings, name)


def _prepare(root, out, files, sizes, settings, name):
    """`prepare` once the folder is held (`settings`: its flags): split, tokenize, write."""
    from tqdm import auto as tqdm  # pylint: disable=import-outside-toplevel
    seq_len, shards, validation_share = settings["seq_len"], settings["shards"], settings["validation_share"]
    suffixes, skip_folders, tokenizer = settings["suffixes"], settings["skip_folders"], settings["tokenizer"]
    t0 = time.time()
    logging.info("prepare: %d files under %s; deduplicating and splitting by file", len(files), root)
    docs = corpus.split_corpus(files, validation_share, sizes)
    check_split(root, docs, validation_share)
    logging.info("prepare: %d training and %d held-out documents (%.1f and %.1f MB) in %.0f s", len(docs["train"]),
                 len(docs["validation"]), sum(map(len, docs["train"])) / 1e6,
                 sum(map(len, docs["validation"])) / 1e6, time.time() - t0)
    tok = make_tokenizer(tokenizer, out, docs["train"], settings["vocab_size"], settings["model_type"])
    tokens = {"train": tok.encode_documents(docs["train"]), "eval": tok.encode_documents(docs["validation"])}
    check_windows(root, docs, tokens, seq_len)
    counts = {split: {"documents": len(d), "bytes": int(sum(len(x) + 1 for x in d)), "tokens": int(len(tokens[s]))}
              for split, s, d in (("train", "train", docs["train"]), ("eval", "eval", docs["validation"]))}
    total_shards = max(1, min(shards, len(tokens["train"]) // (seq_len + 1))) + \
        max(1, min(shards, len(tokens["eval"]) // (seq_len + 1)))
    with tqdm.tqdm(total=total_shards, desc="shards", unit="shard", disable=None) as bar:
        manifest = array_record.write_windows(
            out, tokens, tok.vocab_size, seq_len, shards, name=name or os.path.basename(os.path.normpath(root)),
            description={"files": settings["files"], "root": settings["root"], "num_files": len(files),
                         "suffixes": list(suffixes), "skip_folders": sorted(skip_folders)},
            progress=bar, tokenizer=tok.spec(), counts=counts,
            bytes_per_token=counts["eval"]["bytes"] / max(counts["eval"]["tokens"], 1),
            split_rule={"by": "file", "validation_share": validation_share,
                        "near_duplicate_share": corpus.NEAR_DUPLICATE_SHARE, "shared_span_bytes": 64,
                        "min_piece": corpus.MIN_PIECE})
    if tokenizer == "bytes":
        tok.save(out)
    logging.info("prepare: %s written in %.0f s", out, time.time() - t0)
    return manifest
