"""The classic model-selection example: BIC over K = 1..10 picks 4 stretched blobs."""

import numpy as np
import pytest

from dgmm import GaussianMixture


@pytest.fixture(scope="module")
def bic_table(seed_example):
    X, _ = seed_example
    return {
        cov: [
            GaussianMixture(k, covariance_type=cov, n_init=10, random_state=0).fit(X).bic(X)
            for k in range(1, 11)
        ]
        for cov in ("full", "spherical")
    }


def test_bic_selects_four_full_components(bic_table):
    assert int(np.argmin(bic_table["full"])) + 1 == 4


def test_full_beats_spherical(bic_table):
    assert min(bic_table["full"]) < min(bic_table["spherical"])
