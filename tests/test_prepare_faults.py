"""`experiments.prepare` faults: each is one `error:` line, exit 2, and the folder as it was.

The command runs in this process (`run_command`), but where another process holds the folder."""
import hashlib
import os
import random
import shutil
import subprocess
import sys

import pytest

from conftest import one_error_line, run_command
import tfscale
from tfscale import lock
from tfscale.data import array_record, corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_tree(folder, count=30):
    """`count` distinct small .py files (about 900 bytes each): with validation_share=0.2 a few
    are held out."""
    os.makedirs(folder)
    for i in range(count):
        rng = random.Random(i)
        text = "".join(f"def f{j}_{rng.randrange(10**9)}(x):\n    return x * {rng.randrange(999)} + {j}\n\n"
                       for j in range(20))
        with open(os.path.join(folder, f"m{i:02d}.py"), "w") as f:
            f.write(text)
    return str(folder)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return _write_tree(tmp_path_factory.mktemp("faults") / "tree")


def _flags(tree, out, *more):
    return [f"--files={tree}", f"--workdir={out}", "--seq_len=8", "--shards=2", "--validation_share=0.2", *more]


def _prepare(*args):
    """`experiments.prepare ARGS`, run in this process."""
    return run_command("prepare", args)


def _together(*runs):
    """The commands' results, one after the other; with `patch` (a function), it is called first
    and what it returns is called after the command."""
    def run(args, patch=None):
        undo = patch() if patch else None
        try:
            return _prepare(*args)
        finally:
            if undo:
                undo()
    return [run(args, **kwargs) for args, kwargs in runs]


def _snapshot(folder):
    """{relative path: SHA-256} of everything under `folder`; None when it is not there."""
    if not os.path.exists(folder):
        return None
    out = {}
    for base, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(base, name), "rb") as f:
                out[os.path.relpath(os.path.join(base, name), folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def sentencepiece_folder(tree, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sp") / "data")
    proc = _prepare(*_flags(tree, out, "--tokenizer=sentencepiece", "--vocab_size=300"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_a_prepare_on_a_folder_in_use_is_refused_naming_the_holder(tree, tmp_path):
    out = str(tmp_path / "data")
    with lock.WorkdirLock(out):  # as a first prepare (or a run) holds it
        before = _snapshot(out)
        # a lock is shared within a process: the second prepare is a process of its own
        line = one_error_line(subprocess.run([sys.executable, "-m", "experiments.prepare", *_flags(tree, out)],
                                             cwd=ROOT, capture_output=True, text=True, timeout=300))
        assert f"workdir {out} is in use by pid {os.getpid()} on " in line
        assert _snapshot(out) == before


def test_a_folder_prepared_from_one_config_refuses_another_config_and_files(tree, tmp_path):
    out = str(tmp_path / "digits")
    first = _prepare("--config=experiments/configs/digits_mlp.py:tiny", f"--workdir={out}", "--shards=2")
    assert first.returncode == 0, first.stderr[-2000:]
    before = _snapshot(out)
    other_config, other_files = _together(
        (["--config=experiments/configs/digits_mlp.py:tiny", "--config.data.num_features=16", f"--workdir={out}",
          "--shards=2"], {}),
        (_flags(tree, out), {}))
    assert f"{out} was prepared with other settings (data.num_features differ)" in one_error_line(other_config)
    assert f"{out} was prepared with other settings (" in one_error_line(other_files)
    assert _snapshot(out) == before
    assert array_record.verify(out) == 4


def test_a_prepare_that_fails_before_its_first_shard_leaves_nothing_behind(tree, tmp_path):
    new, existing = str(tmp_path / "new" / "data"), str(tmp_path / "existing")
    os.makedirs(existing)
    with open(os.path.join(existing, "notes.txt"), "w") as f:
        f.write("kept\n")
    too_large = ("--tokenizer=sentencepiece", "--vocab_size=100000")
    for proc in _together((_flags(tree, new, *too_large), {}), (_flags(tree, existing, *too_large), {})):
        assert "Vocabulary size too high (100000)" in one_error_line(proc)
    assert not os.path.exists(tmp_path / "new")
    assert os.listdir(existing) == ["notes.txt"]
    corrected = _prepare(*_flags(tree, existing, "--tokenizer=sentencepiece", "--vocab_size=300"))
    assert corrected.returncode == 0, corrected.stderr[-2000:]
    assert array_record.verify(existing) == 6  # 4 shards, tokenizer.model and tokenizer.json


def _vanish(name, path):
    """A patch (`_together`) that removes `path` just after `corpus.<name>` has run."""
    def patch():
        real = getattr(corpus, name)

        def wrapper(*args, **kwargs):
            result = real(*args, **kwargs)
            os.remove(path)
            return result
        setattr(corpus, name, wrapper)
        return lambda: setattr(corpus, name, real)
    return patch


def _vanish_before_read(path):
    """A patch (`_together`) that removes `path` just before `corpus.split_corpus` reads the files."""
    def patch():
        real = corpus.split_corpus

        def split_corpus(*args, **kwargs):
            os.remove(path)
            return real(*args, **kwargs)
        corpus.split_corpus = split_corpus
        return lambda: setattr(corpus, "split_corpus", real)
    return patch


def test_a_file_that_vanishes_while_preparing_is_one_line_naming_it(tree, tmp_path):
    listing, reading = (shutil.copytree(tree, tmp_path / name) for name in ("listing", "reading"))
    gone_listing, gone_reading = os.path.join(listing, "m05.py"), os.path.join(reading, "m07.py")
    during_listing, before_reading = _together(
        (_flags(listing, tmp_path / "out_listing"), {"patch": _vanish("find_files", gone_listing)}),
        (_flags(reading, tmp_path / "out_reading"), {"patch": _vanish_before_read(gone_reading)}))
    assert f"{gone_listing} vanished while preparing" in one_error_line(during_listing)
    assert f"{gone_reading} vanished while preparing" in one_error_line(before_reading)
    assert not os.path.exists(tmp_path / "out_listing") and not os.path.exists(tmp_path / "out_reading")
    # a file that changed between listing and reading is refused the same way
    files = corpus.find_files(tree)
    sizes = {**corpus.file_sizes(files), files[3]: 1}
    with pytest.raises(tfscale.ConfigError, match="m03.py changed size .1 bytes when listed, .* when read. while"):
        corpus.read_unique(files, sizes)


def test_a_split_that_comes_out_empty_is_one_line_naming_files_and_rule(tree, tmp_path):
    two = tmp_path / "two"
    two.mkdir()
    for name in ("m01.py", "m02.py"):
        shutil.copy(os.path.join(tree, name), two / name)
    no_held_out_file, no_held_out_window = _together(
        ([f"--files={two}", f"--workdir={tmp_path / 'out_two'}", "--seq_len=8"], {}),
        (_flags(tree, tmp_path / "out_long", "--seq_len=10000"), {}))
    line = one_error_line(no_held_out_file)
    assert f"--files {two}: no file can be held out: 2 distinct files (m01.py, m02.py) in 2 near-duplicate " \
           "groups" in line and "validation_share=0.05" in line
    line = one_error_line(no_held_out_window)
    assert "the held-out files (m" in line and "fewer than one window of seq_len + 1 = 10001" in line
    assert not os.path.exists(tmp_path / "out_two") and not os.path.exists(tmp_path / "out_long")


def test_verify_checks_the_tokenizer_model_and_names_a_bad_manifest(sentencepiece_folder, tmp_path):
    assert array_record.verify(sentencepiece_folder) == 6
    folders = {name: str(shutil.copytree(sentencepiece_folder, tmp_path / name))
               for name in ("model", "json", "none")}
    with open(os.path.join(folders["model"], "tokenizer.model"), "r+b") as f:  # one byte flipped
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    with open(os.path.join(folders["json"], "manifest.json"), "r+") as f:
        f.truncate(100)
    os.remove(os.path.join(folders["none"], "manifest.json"))
    before = {name: _snapshot(folder) for name, folder in folders.items()}
    model, damaged, missing = _together(*(([f"--workdir={folders[name]}", "--verify"], {}) for name in folders))
    assert f"tokenizer model {folders['model']}/tokenizer.model does not match its manifest's SHA-256" \
        in one_error_line(model)
    assert f"{folders['json']}/manifest.json is not valid JSON" in one_error_line(damaged)
    assert f"{folders['none']} holds no manifest.json" in one_error_line(missing)
    assert {name: _snapshot(folder) for name, folder in folders.items()} == before


def test_a_workdir_that_is_a_file_is_one_error_line(tree, tmp_path):
    path = tmp_path / "file"
    path.write_text("not a folder\n")
    prepare, verify = _together((_flags(tree, path), {}), ([f"--workdir={path}", "--verify"], {}))
    assert f"--workdir {path} is not a folder: name the folder to prepare into" in one_error_line(prepare)
    assert f"--workdir {path} is not a folder: name the folder to verify" in one_error_line(verify)
    assert path.read_text() == "not a folder\n"


def test_a_rerun_writes_a_damaged_shard_again_rather_than_recording_it_anew(tree, tmp_path, caplog):
    from tfscale.data import prepare_corpus  # pylint: disable=import-outside-toplevel
    out = str(tmp_path / "out")
    settings = dict(seq_len=8, shards=2, validation_share=0.2)
    first = prepare_corpus.prepare(tree, out, **settings)
    truncated, flipped = (os.path.join(out, n) for n in first["splits"]["train"]["files"][:2])
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) // 2)
    with open(flipped, "r+b") as f:  # the same size, other bytes
        f.seek(100)
        block = f.read(200)
        f.seek(100)
        f.write(bytes(b ^ 0xFF for b in block))
    with caplog.at_level("WARNING", logger="absl"):
        again = prepare_corpus.prepare(tree, out, **settings)
    assert caplog.text.count("is not as it was written") == 2
    assert again["sha256"] == first["sha256"] and again["bytes"] == first["bytes"]
    assert array_record.verify(out) >= 4
