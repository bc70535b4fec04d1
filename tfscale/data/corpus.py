"""A text corpus split for honest held-out loss: files deduplicated, split by file, shared spans cut.

Source trees repeat themselves (empty `__init__.py`s, vendored copies, generated tables), and a
held-out loss on text also seen in training measures recall, not generalisation. So: exact
duplicates are kept once; files sharing most of their 64-byte windows are grouped; whole groups
are drawn for validation (about `validation_share` of the bytes, in an order fixed by each
group's first relative path, so the split is the same on every machine); and every validation
byte under a 64-byte span that also occurs in the training stream is cut out. `pycode` (the
standard library) and `experiments.prepare --files=DIR` (any tree, e.g. site-packages) both go
through here.

The tree must hold still while it is read. The listing records each file's size
(`file_sizes`); a file that is gone, or of another size, when it is read, or a folder that
cannot be listed, is refused with one line naming it ("changed while preparing; run again"),
never dropped silently: the folder's `prepare.json` names the listing, and a corpus missing a
file it lists would not be the corpus a re-run makes.
"""
import hashlib
import os

import numpy as np

from tfscale.data import dedup
from tfscale.errors import ConfigError

NEAR_DUPLICATE_SHARE = 0.5  # of the smaller file's windows found in the other
MIN_PIECE = 128  # validation leftovers shorter than this are dropped
TEST_FOLDERS = {"test", "tests", "idle_test", "testing", "__pycache__"}


def find_files(root, suffixes=(".py",), skip_folders=TEST_FOLDERS):
    """Files under `root` ending in one of `suffixes`, sorted by relative path; folders named in
    `skip_folders` are not entered."""
    found = []
    for folder, subfolders, files in os.walk(root, onerror=_unlistable):
        subfolders[:] = sorted(d for d in subfolders if d not in skip_folders)
        found += [os.path.join(folder, f) for f in files if f.endswith(tuple(suffixes))]
    return sorted(found, key=lambda p: os.path.relpath(p, root))


def _unlistable(error):
    """os.walk skips a folder it cannot list; a corpus must not lose it silently."""
    if isinstance(error, FileNotFoundError):
        raise _changed(error.filename, "vanished")
    raise ConfigError(f"folder {error.filename} cannot be listed ({error.strerror}): make it readable or "
                      "skip it (--skip_folders)")


def _changed(path, how):
    return ConfigError(f"{path} {how} while preparing: the tree changed under the command; run again "
                       "once it holds still")


def file_sizes(files):
    """{path: size in bytes} of listed files: what `read_unique` checks the text it reads against."""
    sizes = {}
    for path in files:
        try:
            sizes[path] = os.path.getsize(path)
        except FileNotFoundError:
            if os.path.islink(path):
                raise ConfigError(f"{path} is a broken link: remove it, or skip its folder (--skip_folders)") from None
            raise _changed(path, "vanished") from None
    return sizes


def read_file(path, size=None):
    """The bytes of `path`; a ConfigError if it is gone or is not `size` bytes (see the module docstring)."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        raise _changed(path, "vanished") from None
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({e.strerror or type(e).__name__})") from None
    if size is not None and len(text) != size:
        raise _changed(path, f"changed size ({size} bytes when listed, {len(text)} when read)")
    return text


def _stable_rank(name):
    return hashlib.blake2b(name.encode(), digest_size=8).digest()


def read_unique(files, sizes=None):
    """(paths, texts) of `files` with exact duplicates kept once (the first, in order); each
    checked against its listed size in `sizes` ({path: bytes}, `file_sizes`) if given."""
    unique = {}
    for path in files:
        text = read_file(path, None if sizes is None else sizes[path])
        unique.setdefault(hashlib.blake2b(text).digest(), (path, text))
    paths, texts = zip(*unique.values()) if unique else ((), ())
    return list(paths), list(texts)


def validation_mask(paths, texts, validation_share):
    """Which texts go to validation: whole near-duplicate groups, while their bytes not shared
    with other groups fit `validation_share` of the corpus, none taking more than a quarter of
    that budget (validation is many unrelated files, not one large table)."""
    return _draw_validation(paths, texts, validation_share)[0]


def _draw_validation(paths, texts, validation_share):
    """(`validation_mask`, what explains it: the number of groups, the budget in bytes and the
    smallest group's bytes, for the message of a split that comes out empty)."""
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    labels, shared = dedup.near_duplicate_groups(texts, NEAR_DUPLICATE_SHARE)
    sizes = np.array([len(t) for t in texts], np.float64)
    group_bytes, clean = np.bincount(labels, sizes), np.bincount(labels, sizes * (1 - shared))
    budget = validation_share * sizes.sum()
    first = {g: os.path.relpath(paths[i], root) for i, g in reversed(list(enumerate(labels)))}
    validation, used = [], 0.0
    for group in sorted(first, key=lambda g: _stable_rank(first[g])):
        if used + clean[group] <= budget and group_bytes[group] <= budget / 4:
            validation.append(group)
            used += clean[group]
    rule = {"groups": len(first), "budget": int(budget), "smallest_group": int(min(group_bytes[g] for g in first))}
    return np.isin(labels, validation), rule


def split_files(files, validation_share):
    """{"train", "validation"}: the paths of each side, duplicates dropped, groups whole."""
    paths, texts = read_unique(files)
    held = validation_mask(paths, texts, validation_share)
    return {"train": [p for p, v in zip(paths, held) if not v], "validation": [p for p, v in zip(paths, held) if v]}


def split_documents(files, validation_share, min_piece=MIN_PIECE):
    """{"train", "validation"}: lists of documents (bytes). Training documents are whole files;
    validation ones are what is left of the held-out files once every span shared with the
    training stream is cut out (pieces under `min_piece` bytes dropped)."""
    split = split_corpus(files, validation_share, min_piece=min_piece)
    return {"train": split["train"], "validation": split["validation"]}


def split_corpus(files, validation_share, sizes=None, min_piece=MIN_PIECE):
    """`split_documents` with what a message about the split needs: the paths of each side
    ("train_files", "validation_files") and the rule's figures ("groups", "budget",
    "smallest_group", `_draw_validation`). `sizes`: the listed sizes to read against."""
    paths, texts = read_unique(files, sizes)
    if not paths:
        return {"train": [], "validation": [], "train_files": [], "validation_files": [], "groups": 0, "budget": 0,
                "smallest_group": 0}
    held, rule = _draw_validation(paths, texts, validation_share)
    train = [t for t, v in zip(texts, held) if not v]
    reference = dedup.window_hashes(dedup.stream(train))
    reference.sort()
    return {"train": train, "validation": dedup.cut_shared([t for t, v in zip(texts, held) if v], reference, min_piece),
            "train_files": [p for p, v in zip(paths, held) if not v],
            "validation_files": [p for p, v in zip(paths, held) if v], **rule}


def split_streams(files, validation_share):
    """{"train", "validation"}: each side's documents as one stream, each followed by a NUL."""
    return {name: dedup.stream(docs) for name, docs in split_documents(files, validation_share).items()}
