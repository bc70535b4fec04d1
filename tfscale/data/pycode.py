"""`pycode`: a byte-level text corpus read from the running Python's own standard library.

The `.py` files of the standard library (not site-packages, not test suites) are read in
sorted order. The library repeats itself (empty `__init__.py`s, the `encodings` tables), and a
held-out loss on text also seen in training measures recall, not generalisation, so: exact
duplicates are kept once; files sharing most of their 64-byte windows are grouped; whole groups
are drawn for validation (about `VALIDATION_SHARE` of the bytes); and every validation byte
under a 64-byte span that also occurs in the training stream is cut out. Each file (or
validation piece) is followed by a NUL separator; each split's stream is cut into examples of
`EXAMPLE_BYTES` bytes (the remainder is dropped). Vocabulary: the 256 byte values. Nothing is
downloaded: it is prepared offline on first use.
"""
import sysconfig

import numpy as np
import tensorflow_datasets as tfds

from tfscale.data import corpus, dedup

EXAMPLE_BYTES = 1024
VALIDATION_SHARE = 0.05
SKIPPED_FOLDERS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


def source_files(stdlib=None):
    """The standard library's .py files, sorted, without third-party packages and test suites."""
    return corpus.find_files(stdlib or sysconfig.get_paths()["stdlib"], skip_folders=SKIPPED_FOLDERS)


def split_files(files):
    """{"train", "validation"}: the files without exact duplicates, near-duplicate groups whole
    (`corpus.validation_mask`)."""
    return corpus.split_files(files, VALIDATION_SHARE)


def split_streams(files):
    """{"train", "validation"}: the byte streams to store, before cutting into examples."""
    return corpus.split_streams(files, VALIDATION_SHARE)


def to_examples(stream):
    array = np.frombuffer(stream, np.uint8)
    return array[:len(array) // EXAMPLE_BYTES * EXAMPLE_BYTES].reshape(-1, EXAMPLE_BYTES)


def check_no_shared_windows(train, validation):
    """Fails unless no 64-byte window of the stored validation stream occurs in training."""
    reference = dedup.window_hashes(np.ascontiguousarray(train).ravel())
    reference.sort()
    shared = dedup.shared_windows(dedup.window_hashes(np.ascontiguousarray(validation).ravel()), reference)
    if shared.any():
        raise RuntimeError(f"pycode: {int(shared.sum())} validation windows of {dedup.WINDOW} bytes "
                           "also occur in the training stream")


class Pycode(tfds.core.GeneratorBasedBuilder):
    """Python standard-library source as bytes, in fixed-length examples."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Split by file (every 20th to validation), 1,024-byte examples.",
        "2.0.0": "Exact duplicates kept once, near-duplicate files grouped on one side, and no "
                 "64-byte span of validation found anywhere in training.",
    }

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "bytes": tfds.features.Tensor(shape=(EXAMPLE_BYTES,), dtype=np.uint8)}),
            description=f"Python {sysconfig.get_python_version()} standard library source, bytes.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        splits = {name: to_examples(s) for name, s in split_streams(source_files()).items()}
        check_no_shared_windows(splits["train"], splits["validation"])
        return {name: self._generate_examples(examples) for name, examples in splits.items()}

    def _generate_examples(self, examples):
        for i, chunk in enumerate(examples):
            yield i, {"bytes": chunk}
