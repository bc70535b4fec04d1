"""Shared byte spans between corpora: 64-bit hashes of every 64-byte window, in numpy.

Equal windows always have equal hashes, so "no validation hash among the training hashes"
proves "no validation window in training"; a hash collision can only make a clean window look
shared (a few bytes dropped too many), never let a shared one through.
"""
import numpy as np

WINDOW = 64
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(z):
    """splitmix64's finaliser, in place: a bijection of uint64 that spreads every input bit."""
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def window_hashes(stream, window=WINDOW):
    """uint64 hash of stream[i:i + window] for every i (window a multiple of 8)."""
    data = np.ascontiguousarray(np.frombuffer(stream, np.uint8) if isinstance(stream, (bytes, bytearray))
                                else stream, np.uint8)
    n = len(data) - window + 1
    if n <= 0:
        return np.zeros(0, np.uint64)
    # Little-endian 8-byte word starting at every byte offset, without copying the stream.
    words = np.ndarray((len(data) - 7,), "<u8", data, 0, (1,))
    h, tmp = np.zeros(n, np.uint64), np.empty(n, np.uint64)
    for k in range(0, window, 8):  # a multiply-xorshift round per word, then a full mix
        h ^= words[k:k + n]
        h *= _M1
        h ^= np.right_shift(h, np.uint64(29), out=tmp)
    return _mix(h)


def shared_windows(hashes, reference):
    """Mask of `hashes` found in `reference` (a sorted uint64 array)."""
    if len(reference) == 0 or len(hashes) == 0:
        return np.zeros(len(hashes), bool)
    at = np.minimum(np.searchsorted(reference, hashes), len(reference) - 1)
    return reference[at] == hashes


def covered(starts_mask, length, window=WINDOW):
    """Mask of the `length` bytes covered by the windows starting where `starts_mask` is true."""
    starts = np.flatnonzero(starts_mask)
    edges = np.bincount(starts, minlength=length + 1) - np.bincount(
        np.minimum(starts + window, length), minlength=length + 1)
    return np.cumsum(edges[:-1]) > 0


def runs(mask):
    """(start, end) of each run of true values in a boolean mask."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    change = np.flatnonzero(np.diff(padded))
    return change[0::2], change[1::2]


def overlap_percent(train, validation, window=WINDOW, stride=16, min_span=0):
    """% of validation bytes under a validation window (every offset) equal to a training window
    (every `stride` bytes): every span of window + stride - 1 bytes or more shared verbatim is
    found. Runs of covered bytes shorter than `min_span` are not counted.

    `train` and `validation` are byte strings or lists of them (documents: no window crosses
    one's end, and the training grid restarts at each start).
    """
    train = [train] if isinstance(train, (bytes, bytearray)) else train
    validation = [validation] if isinstance(validation, (bytes, bytearray)) else validation
    reference = np.sort(np.concatenate([window_hashes(t, window)[::stride] for t in train]))
    total = inside = 0
    for text in validation:
        mask = covered(shared_windows(window_hashes(text, window), reference), len(text), window)
        starts, ends = runs(mask)
        lengths = ends - starts
        total, inside = total + len(text), inside + int(lengths[lengths >= min_span].sum())
    return 100.0 * inside / max(total, 1)


def stream(pieces):
    """The pieces joined, each followed by a NUL separator."""
    return b"".join(bytes(p) + b"\0" for p in pieces)


def near_duplicate_groups(texts, share=0.5, sample=8, min_samples=4, window=WINDOW):
    """(group label per text, fraction of each text's windows also found in another group).

    Two texts are linked when `share` of the smaller one's windows occur in the other; groups
    are the connected components. Windows are sampled by hash value (1 in `sample`), so the
    same windows are kept in every text and shares stay unbiased.
    """
    import scipy.sparse as sp  # pylint: disable=import-outside-toplevel
    from scipy.sparse.csgraph import connected_components  # pylint: disable=import-outside-toplevel
    sizes = np.array([len(t) for t in texts], np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes + 1)[:-1]])
    hashes = window_hashes(stream(texts), window)
    keep = np.flatnonzero(hashes % np.uint64(sample) == 0)
    doc = np.searchsorted(starts, keep, side="right") - 1
    inside = keep + window <= starts[doc] + sizes[doc]  # not across a separator
    hashes, doc = hashes[keep[inside]], doc[inside]
    order = np.argsort(hashes, kind="stable")
    hashes, doc = hashes[order], doc[order]
    uid = np.concatenate([[0], np.cumsum(hashes[1:] != hashes[:-1])]).astype(np.int64)
    n, m = len(texts), int(uid[-1]) + 1 if len(uid) else 0
    incidence = sp.csr_matrix((np.ones(len(uid)), (doc, uid)), shape=(n, m))
    incidence.data[:] = 1.0  # a window repeated inside one text counts once
    counts = incidence.sum(axis=1).A.ravel()
    pairs = sp.triu(incidence @ incidence.T, k=1).tocoo()
    smaller = np.minimum(counts[pairs.row], counts[pairs.col])
    linked = (smaller >= min_samples) & (pairs.data >= share * smaller)
    graph = sp.coo_matrix((np.ones(linked.sum()), (pairs.row[linked], pairs.col[linked])), shape=(n, n))
    labels = connected_components(graph, directed=False)[1]
    member = sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(labels.max() + 1, n))
    groups_per_window = ((member @ incidence) > 0).sum(axis=0).A.ravel()
    shared = incidence @ (groups_per_window > 1).astype(np.float64)
    return labels, np.divide(shared, counts, out=np.zeros(n), where=counts > 0)


def cut_shared(pieces, reference, min_piece=128, window=WINDOW):
    """Pieces of `pieces` whose stream shares no window with `reference` (sorted hashes).

    Bytes under a shared window are cut out and leftovers under `min_piece` bytes dropped;
    repeated because new joins make new windows.
    """
    pieces = [bytes(p) for p in pieces if len(p) >= min_piece]
    while True:
        joined = stream(pieces)
        bad = shared_windows(window_hashes(joined, window), reference)
        if not bad.any():
            return pieces
        keep = ~covered(bad, len(joined), window)
        keep[np.cumsum([len(p) + 1 for p in pieces]) - 1] = False  # separators
        starts, ends = runs(keep)
        pieces = [joined[a:b] for a, b in zip(starts, ends) if b - a >= min_piece]
