"""`pycode` 2.0.0: duplicates kept once, near-duplicates on one side, no 64-byte span shared."""
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import tiny_config
from tfscale.data import dedup, pycode, tfds_source

HEADER = b"# Licensed to the PSF under a contributor agreement; see the LICENSE file.\n" * 4


def words(rng, n):
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz_", np.uint8)
    vocab = [rng.choice(letters, rng.integers(2, 9)).tobytes() for _ in range(400)]
    return b" ".join(vocab[i] for i in rng.integers(0, len(vocab), n)) + b"\n"


def make_stdlib(root):
    """Unique modules (some with a shared header), exact duplicates, and near-duplicate tables."""
    rng = np.random.default_rng(0)

    def write(name, content):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    for i in range(80):
        write(f"mod{i:02d}.py", (HEADER if i % 3 == 0 else b"") + words(rng, int(rng.integers(300, 900))))
    dup = words(rng, 120)
    write("pkg_a/__init__.py", dup)
    write("pkg_b/__init__.py", dup)
    write("pkg_c/__init__.py", b"")
    write("pkg_d/__init__.py", b"")
    for family in range(6):
        table = words(rng, 500)
        for member in range(3):
            write(f"enc/t{family}_{member}.py", table + words(rng, 30))
    write("test/test_mod.py", words(rng, 50))  # test suites are skipped
    return str(root)


@pytest.fixture(name="stdlib")
def fake_stdlib(tmp_path):
    return make_stdlib(tmp_path / "lib")


def side_of(splits, root):
    return {os.path.relpath(p, root): name for name, paths in splits.items() for p in paths}


def read(path):
    with open(path, "rb") as f:
        return f.read()


def windows_of(stream):
    return {stream[i:i + dedup.WINDOW] for i in range(len(stream) - dedup.WINDOW + 1)}


def test_no_64_byte_span_of_validation_occurs_in_training(stdlib, monkeypatch):
    monkeypatch.setattr(pycode, "EXAMPLE_BYTES", 256)
    streams = pycode.split_streams(pycode.source_files(stdlib))
    stored = {k: pycode.to_examples(s).tobytes() for k, s in streams.items()}
    assert len(stored["validation"]) > 0.02 * len(stored["train"])
    assert not windows_of(stored["validation"]) & windows_of(stored["train"])  # byte for byte
    assert HEADER[:dedup.WINDOW] not in stored["validation"]
    assert dedup.overlap_percent(stored["train"], stored["validation"], stride=1) == 0.0
    pycode.check_no_shared_windows(*(pycode.to_examples(s) for s in streams.values()))
    headed = [p for p in pycode.split_files(pycode.source_files(stdlib))["validation"]
              if read(p).startswith(HEADER)]
    assert headed  # its header is cut out, the rest is kept
    assert all(read(p)[len(HEADER) + dedup.WINDOW:][:500] in streams["validation"] for p in headed)


def test_a_shared_window_fails_the_build():
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (4, 256), dtype=np.uint8)
    validation = rng.integers(0, 256, (2, 256), dtype=np.uint8)
    pycode.check_no_shared_windows(train, validation)
    validation[1, 100:164] = train[2, 30:94]
    with pytest.raises(RuntimeError, match="1 validation windows of 64 bytes"):
        pycode.check_no_shared_windows(train, validation)


def test_exact_duplicates_are_kept_once(stdlib):
    files = pycode.source_files(stdlib)
    assert not any("/test/" in f for f in files)
    kept = side_of(pycode.split_files(files), stdlib)
    assert len(kept) == len(files) - 2
    assert "pkg_a/__init__.py" in kept and "pkg_b/__init__.py" not in kept  # the first one stays
    assert "pkg_c/__init__.py" in kept and "pkg_d/__init__.py" not in kept
    streams = pycode.split_streams(files)
    dup = read(os.path.join(stdlib, "pkg_a", "__init__.py"))
    assert (streams["train"] + streams["validation"]).count(dup) == 1


def test_near_duplicate_groups_go_wholly_to_one_side(stdlib, monkeypatch):
    files = [p for p in pycode.source_files(stdlib) if "pkg_b" not in p and "pkg_d" not in p]
    labels, _ = dedup.near_duplicate_groups([read(p) for p in files])
    group = {os.path.basename(p): g for p, g in zip(files, labels)}
    for family in range(6):
        assert len({group[f"t{family}_{m}.py"] for m in range(3)}) == 1
    assert len(set(labels)) == len(files) - 6 * 2  # the modules sharing a header stay apart
    monkeypatch.setattr(pycode, "VALIDATION_SHARE", 0.3)
    side = side_of(pycode.split_files(pycode.source_files(stdlib)), stdlib)
    sides = [{side[f"enc/t{family}_{m}.py"] for m in range(3)} for family in range(6)]
    assert all(len(s) == 1 for s in sides)
    assert {"train"} in sides and {"validation"} in sides


def test_overlap_percent_finds_spans_of_79_bytes_or_more():
    rng = np.random.default_rng(2)
    train, validation = rng.integers(0, 256, (2, 4000), dtype=np.uint8)
    validation[1000:1100] = train[2005:2105]  # 100 bytes: found, 80 to 100 of them covered
    validation[3000:3050] = train[500:550]  # too short to be seen
    percent = dedup.overlap_percent(train.tobytes(), validation.tobytes())
    assert 80 / 40 <= percent <= 100 / 40
    assert dedup.overlap_percent(train.tobytes(), validation.tobytes(), min_span=101) == 0.0


def test_an_old_prepared_copy_is_rebuilt_at_the_new_version(stdlib, tmp_path, monkeypatch):
    config = tiny_config(data__name="pycode", data__data_dir=str(tmp_path / "data")).data
    real = pycode.source_files
    monkeypatch.setattr(pycode, "source_files", lambda: real(stdlib))
    with monkeypatch.context() as old:
        old.setattr(pycode.Pycode, "VERSION", tfds.core.Version("1.0.0"))
        old.setattr(pycode, "split_streams", lambda _: {"train": b"x" * 4096, "validation": b"y" * 2048})
        assert tfds_source.builder_for(config, pycode.Pycode).version == "1.0.0"
    builder = tfds_source.builder_for(config, pycode.Pycode)
    assert builder.version == "2.0.0" and builder.is_prepared()
    assert sorted(os.listdir(tmp_path / "data" / "pycode")) == ["1.0.0", "2.0.0"]
    train = tfds.as_numpy(builder.as_dataset(split="train", batch_size=-1))["bytes"]
    assert not np.all(train == ord("x"))
    assert "2.0.0" in pycode.Pycode.RELEASE_NOTES


def test_the_real_split_shares_no_span_and_keeps_about_5_percent():
    files = pycode.source_files()
    streams = pycode.split_streams(files)
    examples = {k: pycode.to_examples(s) for k, s in streams.items()}
    pycode.check_no_shared_windows(examples["train"], examples["validation"])
    share = examples["validation"].size / (examples["train"].size + examples["validation"].size)
    assert 0.03 < share < 0.07
    sides = {name for name, paths in pycode.split_files(files).items()
             for p in paths if os.path.basename(p) in {"cp1250.py", "cp1251.py", "cp1252.py"}}
    assert len(sides) == 1
