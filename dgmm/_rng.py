"""``RandomState.choice(n, k, replace=False)`` without the O(n) permutation.

scikit-learn's ``random_from_data`` init picks its rows with ``rng.choice(n, k, replace=False)``,
which numpy's legacy generator implements as ``permutation(n)[:k]``: an int64 array of every row
index, shuffled. For 10⁸ rows that is 0.8 GB on the client. This module returns the same indices
and leaves ``rng`` in the same state, in about the same time and O(k + BATCH) memory plus one
saved generator state (2.5 kB) per batch: ~7 MB for 10⁸ rows.

The shuffle is Fisher–Yates from the end: for i = n−1 … 1 it swaps positions i and
``j = random_interval(i)``, where ``random_interval`` draws raw 32-bit outputs, masks them to the
bits of ``i`` and rejects values above ``i``. We regenerate the draws in batches (vectorised
accept/reject), then follow the first k positions backwards through the swaps: the value that
ends at position p is the index that started where p's chain leads. Each batch is generated twice
(forward to know the draws consumed, backward for the chain), from saved generator states.
"""

from __future__ import annotations

import heapq

import numpy as np

BATCH = 1 << 16
_MAX32 = 0xFFFFFFFF


def _mask(i: int) -> int:
    return (1 << int(i).bit_length()) - 1


def _batch_js(raw: np.ndarray, i0: int) -> np.ndarray:
    """The swap partners of i0, i0−1, … decided by the raw draws of one batch, in draw order.

    All draws share ``i0``'s mask (the batch stays within one power of two). A draw is accepted
    iff its masked value is at most the current i, which is ``i0`` minus the draws accepted
    before it; only values in ``(i0 − len(raw), i0]`` depend on that count and are resolved one
    by one.
    """
    v = (raw & np.uint64(_mask(i0))).astype(np.int64)
    sure = v <= i0 - len(raw)
    unsure = np.flatnonzero((v <= i0) & ~sure)
    accept = sure.copy()
    if unsure.size:
        before = np.cumsum(sure) - sure  # sure accepts before each draw
        extra = 0  # unsure accepts so far
        rows = zip(unsure.tolist(), v[unsure].tolist(), before[unsure].tolist(), strict=True)
        for t, vt, bt in rows:
            if vt <= i0 - bt - extra:
                accept[t] = True
                extra += 1
    return v[accept]


def _batches(rng: np.random.RandomState, n: int):
    """Forward pass: (generator state, i0, number of draws) of every batch; consumes ``rng``
    exactly as the shuffle does."""
    bitgen = rng._bit_generator
    i = n - 1
    plan = []
    while i >= 1:
        lowest = 1 << (int(i).bit_length() - 1)  # the batch stays in i's power of two
        size = min(BATCH, i - lowest + 1)
        state = bitgen.state
        js = _batch_js(bitgen.random_raw(size), i)
        plan.append((state, i, size))
        i -= js.size
    return plan


def choice_without_replacement(rng: np.random.RandomState, n: int, k: int) -> np.ndarray:
    """``rng.choice(n, k, replace=False)``, bit for bit and state for state, in bounded memory.

    Parameters
    ----------
    rng : numpy.random.RandomState
        Legacy generator (MT19937); advanced exactly as ``choice`` would advance it.
    n, k : int
        Population size and number of distinct draws, ``0 < k <= n``.

    Returns
    -------
    ndarray of shape (k,), int64
    """
    if n - 1 > _MAX32 or not isinstance(rng._bit_generator, np.random.MT19937):
        return rng.choice(n, size=k, replace=False)
    plan = _batches(rng, n)
    end_state = rng._bit_generator.state
    where = {p: e for e, p in enumerate(range(k))}  # tracked position -> element
    bitgen = np.random.MT19937()
    for state, i0, size in reversed(plan):
        bitgen.state = state
        js = _batch_js(bitgen.random_raw(size), i0)
        # Swap number t of this batch exchanged positions i0 − t and js[t]; walk them from the
        # last swap (smallest i) back to the first.
        is_ = i0 - np.arange(js.size)
        events = [int(t) for t in np.flatnonzero(np.isin(js, list(where)))]
        events += [i0 - p for p in where if 0 <= i0 - p < js.size]
        heap = [-t for t in set(events)]
        heapq.heapify(heap)
        while heap:
            t = -heapq.heappop(heap)
            while heap and -heap[0] == t:
                heapq.heappop(heap)
            a, b = int(is_[t]), int(js[t])
            ea, eb = where.pop(a, None), where.pop(b, None)
            for elem, dest in ((ea, b), (eb, a)):
                if elem is None:
                    continue
                where[dest] = elem
                later = np.flatnonzero(js[:t] == dest).tolist()  # smaller t is a later swap
                if 0 <= i0 - dest < t:
                    later.append(i0 - dest)
                for u in later:
                    heapq.heappush(heap, -u)
    rng._bit_generator.state = end_state
    out = np.empty(k, dtype=np.int64)
    for p, e in where.items():
        out[e] = p
    return out
