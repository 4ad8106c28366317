"""The bounded-memory ``choice`` used by ``random_from_data`` equals numpy's, state included."""

import numpy as np
import pytest

from dgmm._rng import BATCH, choice_without_replacement

SIZES = [1, 2, 3, 17, 1000, BATCH - 1, BATCH, BATCH + 1, 3 * BATCH + 5]
CASES = [(n, k) for n in SIZES for k in (1, 8, 50) if k <= n]


@pytest.mark.parametrize(("n", "k"), CASES)
def test_same_rows_and_same_generator_state_as_numpy(n, k):
    for seed in range(3):
        expected_rng, rng = np.random.RandomState(seed), np.random.RandomState(seed)
        expected = expected_rng.choice(n, size=k, replace=False)
        got = choice_without_replacement(rng, n, k)
        np.testing.assert_array_equal(got, expected)
        assert rng.randint(2**31) == expected_rng.randint(2**31)  # same draws consumed


@pytest.mark.slow
def test_memory_does_not_grow_with_the_population():
    import tracemalloc

    rng = np.random.RandomState(0)
    tracemalloc.start()
    choice_without_replacement(rng, 3_000_000, 8)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 12 * 2**20  # numpy's permutation alone would hold 24 MB of int64 here
