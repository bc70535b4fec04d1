"""`pycode_package`: which standard-library package a 128-byte window of source comes from.

A text-classification task with labels from real metadata: the file's top-level package among
ten that are code, each of 13 or more files (asyncio, distutils, email, idlelib, importlib,
lib2to3, multiprocessing, tkinter, unittest, xml). Split by file, after the deduplication of
`pycode`: exact duplicates kept once, near-duplicate files grouped and each group wholly on one
side; about a quarter of each package's groups (by bytes) are held out, so a class is judged on
files it never saw; and every held-out byte under a 64-byte span that also occurs in training is
cut out. `tuning_train` and `tuning_validation` carve the training files again the same way,
to choose hyperparameters on files the tuning runs never saw. Files are cut into
non-overlapping windows; each class keeps at most `MAX_PER_CLASS` windows per split, evenly
spaced over its files, so no package dominates.
Inputs are byte values (int32 token ids), labels the package. Prepared offline on first use.
"""
import hashlib
import os
import sysconfig

import numpy as np
import tensorflow_datasets as tfds

from tfscale.data import dedup, pycode

PACKAGES = ("asyncio", "distutils", "email", "idlelib", "importlib", "lib2to3", "multiprocessing",
            "tkinter", "unittest", "xml")
WINDOW_BYTES = 128
HELD_OUT_SHARE = 0.25
MAX_PER_CLASS = {"train": 1600, "validation": 400, "tuning_train": 1600, "tuning_validation": 400}


def labelled_files(stdlib=None):
    """[(path, package index)] of the standard library's files in `PACKAGES`."""
    stdlib = stdlib or sysconfig.get_paths()["stdlib"]
    out = []
    for path in pycode.source_files(stdlib):
        top = os.path.relpath(path, stdlib).split(os.sep)[0]
        if top in PACKAGES:
            out.append((path, PACKAGES.index(top)))
    return out


def _rank(text):
    return hashlib.blake2b(text, digest_size=8).digest()


def _hold_out(texts, labels):
    """(kept [(text, label)], held-out pieces [(bytes, label)]): about `HELD_OUT_SHARE` of each
    package's bytes held out by near-duplicate group, less every span shared with what is kept."""
    texts, labels = list(texts), list(labels)
    groups, _ = dedup.near_duplicate_groups(texts)
    held_out = np.zeros(len(texts), bool)
    for label in range(len(PACKAGES)):
        members = [i for i in range(len(texts)) if labels[i] == label]
        budget = HELD_OUT_SHARE * sum(len(texts[i]) for i in members)
        used = 0
        for group in sorted({groups[i] for i in members}, key=lambda g: _rank(texts[min(
                i for i in members if groups[i] == g)])):
            size = sum(len(texts[i]) for i in members if groups[i] == group)
            if used + size <= budget:
                held_out |= groups == group
                used += size
    # A group spanning two packages goes wholly to one side: held out if any member was chosen.
    held_out = np.isin(groups, groups[held_out])
    kept = [(t, l) for t, l, h in zip(texts, labels, held_out) if not h]
    reference = dedup.window_hashes(dedup.stream([t for t, _ in kept]))
    reference.sort()
    pieces = [(piece, l) for t, l, h in zip(texts, labels, held_out) if h
              for piece in dedup.cut_shared([t], reference, WINDOW_BYTES)]
    return kept, pieces


def split(files, tuning=False):
    """{"train", "validation"}: [(bytes, label)] pieces, split by near-duplicate group per class.

    tuning: also {"tuning_train", "tuning_validation"}, the training files carved again the same
    way, so that hyperparameters are chosen on files that the final model trains on and judged
    on files that none of the tuning runs saw (a carve by windows would put pieces of one file
    on both sides)."""
    unique = {}
    for path, label in files:
        with open(path, "rb") as f:
            text = f.read()
        unique.setdefault(hashlib.blake2b(text).digest(), (text, label))
    train, validation = _hold_out(*zip(*unique.values()))
    out = {"train": train, "validation": validation}
    if tuning:
        out["tuning_train"], out["tuning_validation"] = _hold_out(*zip(*train))
    return out


def windows(pieces, max_per_class):
    """(inputs [n, WINDOW_BYTES] uint8, labels [n]) with at most `max_per_class` per class."""
    inputs, labels = [], []
    for label in range(len(PACKAGES)):
        cut = [np.frombuffer(p[:len(p) // WINDOW_BYTES * WINDOW_BYTES], np.uint8).reshape(-1, WINDOW_BYTES)
               for p, l in pieces if l == label and len(p) >= WINDOW_BYTES]
        if not cut:
            continue
        rows = np.concatenate(cut)
        if len(rows) > max_per_class:
            rows = rows[np.linspace(0, len(rows) - 1, max_per_class).round().astype(np.int64)]
        inputs.append(rows)
        labels.append(np.full(len(rows), label, np.int64))
    return np.concatenate(inputs), np.concatenate(labels)


class PycodePackage(tfds.core.GeneratorBasedBuilder):
    """Standard-library source windows labelled by their package."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Ten packages, 128-byte windows, split by near-duplicate group per package.",
                     "1.1.0": "tuning_train and tuning_validation: the training files split again, by file."}

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "bytes": tfds.features.Tensor(shape=(WINDOW_BYTES,), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=PACKAGES),
            }),
            supervised_keys=("bytes", "label"),
            description=f"Python {sysconfig.get_python_version()} standard library: the package of a window.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        pieces = split(labelled_files(), tuning=True)
        splits = {name: windows(p, MAX_PER_CLASS[name]) for name, p in pieces.items()}
        for prefix in ("", "tuning_"):
            pycode.check_no_shared_windows(splits[prefix + "train"][0], splits[prefix + "validation"][0])
        return {name: self._generate_examples(*arrays) for name, arrays in splits.items()}

    def _generate_examples(self, inputs, labels):
        for i, (x, y) in enumerate(zip(inputs, labels)):
            yield i, {"bytes": x, "label": int(y)}
