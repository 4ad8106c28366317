"""predict_proba rows sum to 1 for rows at any distance, every covariance type and dtype."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from dgmm import GaussianMixture

from .conftest import COV_TYPES


@pytest.mark.parametrize("cov", COV_TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_probabilities_of_far_rows_sum_to_one(cov, dtype):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(300, 3)), rng.normal(size=(300, 3)) + 6]).astype(dtype)
    gm = GaussianMixture(3, covariance_type=cov, random_state=0).fit(x)
    top = 18 if dtype == np.float64 else 12  # the squared distance stays finite in the dtype
    far = np.concatenate(
        [rng.normal(size=(40, 3)) * 10.0 ** rng.uniform(0, top, size=(40, 1)), x[:5]]
    ).astype(dtype)
    for data in (far, da.from_array(far, chunks=7)):
        proba = np.asarray(gm.predict_proba(data))
        assert np.isfinite(proba).all() and (proba >= 0).all()
        np.testing.assert_allclose(
            proba.sum(axis=1), 1.0, rtol=0, atol=1e-6 if dtype == np.float32 else 1e-12
        )
        # the most probable component is the predicted one
        np.testing.assert_array_equal(proba.argmax(axis=1), np.asarray(gm.predict(data)))
