"""Models save and load without pickle, and predict the same after loading."""

import json

import numpy as np
import pytest

import dgmm
from dgmm import GaussianMixture

from .conftest import COV_TYPES


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_save_load_roundtrip(cov_type, blobs, tmp_path):
    X, _ = blobs
    gm = GaussianMixture(3, covariance_type=cov_type, random_state=0).fit(X)
    gm.save(tmp_path / "model")
    loaded = dgmm.load(tmp_path / "model")
    assert loaded.get_params() == gm.get_params()
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(gm, name))
    assert loaded.lower_bound_ == gm.lower_bound_ and loaded.n_iter_ == gm.n_iter_
    np.testing.assert_array_equal(loaded.predict(X), gm.predict(X))
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["format"] == "dgmm-gaussian-mixture"
    # arrays load with pickle disabled: nothing in the file can run code
    with np.load(tmp_path / "model" / "arrays.npz", allow_pickle=False) as npz:
        assert set(npz.files) == {"weights_", "means_", "covariances_", "precisions_cholesky_"}


def test_save_refuses_to_overwrite(blobs, tmp_path):
    X, _ = blobs
    gm = GaussianMixture(2, random_state=0).fit(X)
    gm.save(tmp_path / "m")
    before = (tmp_path / "m" / "arrays.npz").read_bytes()
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        GaussianMixture(3, random_state=0).fit(X).save(tmp_path / "m")
    assert (tmp_path / "m" / "arrays.npz").read_bytes() == before
    GaussianMixture(3, random_state=0).fit(X).save(tmp_path / "m", overwrite=True)
    assert dgmm.load(tmp_path / "m").n_components == 3


def test_load_rejects_foreign_files(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "model.json").write_text(json.dumps({"format": "pickle", "version": 1}))
    with pytest.raises(ValueError, match="is not a dgmm model"):
        dgmm.load(tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="No dgmm model"):
        dgmm.load(tmp_path / "nothing")
