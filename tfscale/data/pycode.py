"""`pycode`: a byte-level text corpus read from the running Python's own standard library.

The `.py` files of the standard library (not site-packages, not test suites) are read in
sorted order; every 20th file goes to validation, so the split is by file. Each file's bytes,
followed by a NUL separator, are concatenated per split and cut into fixed-length examples of
`EXAMPLE_BYTES` bytes (the remainder is dropped). Vocabulary: the 256 byte values. Nothing of
this project is in it, and nothing is downloaded: it is prepared offline on first use.
"""
import os
import sysconfig

import numpy as np
import tensorflow_datasets as tfds

EXAMPLE_BYTES = 1024
VALIDATION_EVERY = 20
SKIPPED_FOLDERS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


def source_files(stdlib=None):
    """The standard library's .py files, sorted, without third-party packages and test suites."""
    stdlib = stdlib or sysconfig.get_paths()["stdlib"]
    found = []
    for folder, subfolders, files in os.walk(stdlib):
        subfolders[:] = sorted(d for d in subfolders if d not in SKIPPED_FOLDERS)
        found += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    return sorted(found, key=lambda p: os.path.relpath(p, stdlib))


def split_files(files):
    return {"train": [f for i, f in enumerate(files) if i % VALIDATION_EVERY],
            "validation": files[::VALIDATION_EVERY]}


class Pycode(tfds.core.GeneratorBasedBuilder):
    """Python standard-library source as bytes, in fixed-length examples."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Split by file (every 20th to validation), 1,024-byte examples."}

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "bytes": tfds.features.Tensor(shape=(EXAMPLE_BYTES,), dtype=np.uint8)}),
            description=f"Python {sysconfig.get_python_version()} standard library source, bytes.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {name: self._generate_examples(files)
                for name, files in split_files(source_files()).items()}

    def _generate_examples(self, files):
        stream = bytearray()
        for path in files:
            with open(path, "rb") as f:
                stream += f.read() + b"\0"
        array = np.frombuffer(bytes(stream), np.uint8)
        usable = len(array) // EXAMPLE_BYTES * EXAMPLE_BYTES
        for i, chunk in enumerate(array[:usable].reshape(-1, EXAMPLE_BYTES)):
            yield i, {"bytes": chunk}
