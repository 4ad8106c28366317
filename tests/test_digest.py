"""A digest that changed data cannot keep: any change of any byte, any move of a block, changes
the 128-bit digest that binds a checkpoint to its data."""

import numpy as np
import pytest

from dgmm.validation import block_profile


def _digest(x: np.ndarray, rows: int) -> int:
    total = None
    for r0 in range(0, len(x), rows):
        p = block_profile(x[r0 : r0 + rows], r0)
        total = p if total is None else total + p
    return total.digest


@pytest.mark.parametrize("seed", range(30))
def test_any_changed_byte_or_moved_block_changes_the_digest(seed):
    rng = np.random.default_rng(seed)
    dtype = rng.choice([np.float32, np.float64])
    x = rng.normal(size=(int(rng.integers(50, 400)), int(rng.integers(1, 6)))).astype(dtype)
    rows = int(rng.integers(7, 60))
    base = _digest(x, rows)
    # the digest does not depend on how the blocks are added up
    assert base == _digest(x, rows)
    flipped = x.copy()
    raw = flipped.view(np.uint8).reshape(-1)
    i = rng.integers(raw.size)
    raw[i] ^= np.uint8(1 << int(rng.integers(8)))  # one bit of one byte
    assert _digest(flipped, rows) != base
    # two different blocks swapped: same bytes, other places
    n_blocks = -(-len(x) // rows)
    if n_blocks >= 3:
        a, b = sorted(rng.choice(n_blocks - 1, 2, replace=False))  # full blocks only
        moved = x.copy()
        moved[a * rows : (a + 1) * rows], moved[b * rows : (b + 1) * rows] = (
            x[b * rows : (b + 1) * rows],
            x[a * rows : (a + 1) * rows],
        )
        if not np.array_equal(moved, x):
            assert _digest(moved, rows) != base
    # the same values in another dtype are other data
    other = x.astype(np.float64 if dtype == np.float32 else np.float32)
    assert _digest(other, rows) != base
