"""All-or-nothing outputs: build in a staging folder, verify, mark complete, then move into place.

A run's output is a folder: the per-row results in a Zarr group that holds nothing else
(``assignments.zarr``: labels, probabilities, uncertainty), and beside it the model, report,
plots, configs and log, with the marker file ``dgmm.json`` written last. A run's working folder
``<output>.work`` holds the checkpoint, the log and the staging output; the final folder only
ever appears complete. ``dgmm predict`` writes just such a Zarr group, marked complete in its
attributes.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from dgmm import GaussianMixture
from dgmm.em import compute

from .paths import ASSIGNMENTS_KIND, MARKER, OUTPUT_KIND_ATTR, OWNER_FILE

ASSIGNMENTS = "assignments.zarr"
ARRAY_ATTRS = {
    "labels": {
        "long_name": "cluster label",
        "description": "index of the most probable component (fill value -1: not written)",
    },
    "probabilities": {
        "long_name": "posterior probability of each component",
        "description": "rows sum to 1",
    },
    "uncertainty": {
        "long_name": "classification uncertainty",
        "description": "1 - the largest posterior probability",
    },
}


class RunDirs:
    """The final output folder and the working folder beside it."""

    def __init__(self, output_path: str | Path):
        self.final = Path(output_path)
        self.work = self.final.with_name(self.final.name + ".work")
        self.staging = self.work / "staging"
        self.checkpoint = self.work / "checkpoint.npz"
        self.log = self.work / "run.log"


def in_column_order(model: GaussianMixture) -> GaussianMixture:
    """The model to apply to rows already in the order of its columns (matched by name
    before): a copy without ``feature_names_in_``, so that unnamed rows raise no warning."""
    if not hasattr(model, "feature_names_in_"):
        return model
    model = copy.copy(model)
    del model.feature_names_in_
    return model


def write_assignments(
    group_path: Path, x: da.Array, model: GaussianMixture, probabilities: bool
) -> np.ndarray:
    """Write ``labels`` (and ``probabilities``, ``uncertainty``) aligned to the rows' chunks.

    Everything comes from the model's own lazy ``predict`` / ``predict_proba`` on the Dask
    rows: one pass over the data. Returns the cluster sizes, counted while verifying that every
    label was written.
    """
    n, k = x.shape[0], model.n_components
    rows = x.chunks[0][0]
    if any(c != rows for c in x.chunks[0][:-1]) or x.chunks[0][-1] > rows:
        x = x.rechunk({0: rows})
    group = zarr.open_group(str(group_path), mode="a")
    labels = group.create_array(
        "labels",
        shape=(n,),
        chunks=(rows,),
        dtype="int32",
        fill_value=-1,
        dimension_names=["sample"],
        attributes={**ARRAY_ATTRS["labels"], "n_components": k},
        overwrite=True,
    )
    if probabilities:
        proba = model.predict_proba(x)
        prob_arr = group.create_array(
            "probabilities",
            shape=(n, k),
            chunks=(rows, k),
            dtype="float32",
            fill_value=np.nan,
            dimension_names=["sample", "component"],
            attributes=ARRAY_ATTRS["probabilities"],
            overwrite=True,
        )
        unc_arr = group.create_array(
            "uncertainty",
            shape=(n,),
            chunks=(rows,),
            dtype="float32",
            fill_value=np.nan,
            dimension_names=["sample"],
            attributes=ARRAY_ATTRS["uncertainty"],
            overwrite=True,
        )
        sources = [
            proba.argmax(axis=1).astype(np.int32),
            proba.astype(np.float32),
            (1.0 - proba.max(axis=1)).astype(np.float32),
        ]
        compute(da.store(sources, [labels, prob_arr, unc_arr], lock=False, compute=False))
    else:
        compute(da.store(model.predict(x).astype(np.int32), labels, lock=False, compute=False))
    return verify_labels(group_path / "labels", k)


def verify_labels(path: Path, n_components: int) -> np.ndarray:
    """Read the labels back: every row must hold a label in range (−1 marks a missing chunk).

    The chunk files are first counted here, in this process: workers that wrote somewhere else
    (another folder, another host) leave none where the output is published.
    """
    arr = zarr.open_array(str(path), mode="r")
    if arr.nchunks_initialized != arr.nchunks:
        raise RuntimeError(
            f"labels at '{path}': {arr.nchunks - arr.nchunks_initialized} of {arr.nchunks} "
            "chunks are not there after the workers wrote them; do the workers see this "
            "folder? Not marking the output complete"
        )
    lab = da.from_zarr(arr)
    lo, hi = compute(lab.min(), lab.max())
    if lo < 0 or hi >= n_components:
        raise RuntimeError(
            f"labels at '{path}' are incomplete or corrupt (min {lo}, max {hi}); not marking the "
            "output complete"
        )
    return compute(da.bincount(lab, minlength=n_components))[0]


def mark_complete(group_path: Path, kind: str, attrs: dict[str, Any]) -> None:
    """Mark a verified Zarr group complete, and as dgmm's output of this kind (see `paths`);
    its metadata is then consolidated, so that xarray's and zarr's defaults open it in one read
    and without a warning."""
    group = zarr.open_group(str(group_path), mode="a")
    group.attrs.update({**attrs, OUTPUT_KIND_ATTR: kind, "complete": True})
    with warnings.catch_warnings():  # "not part of the Zarr 3 specification" (yet): read fine
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        zarr.consolidate_metadata(str(group_path))


def mark_run_complete(folder: Path, attrs: dict[str, Any]) -> None:
    """Mark a verified run folder complete: its assignments group, then the marker file that
    makes the folder a finished run output (written last, atomically)."""
    mark_complete(
        folder / ASSIGNMENTS,
        ASSIGNMENTS_KIND,
        {**attrs, "model": "../model", "report": "../report.json"},
    )
    write_json(
        folder / MARKER,
        {
            **attrs,
            "model": "model",
            "report": "report.json",
            OUTPUT_KIND_ATTR: "run",
            "complete": True,
        },
    )


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def publish(staging: Path, final: Path) -> None:
    """Move a complete staging output into place, replacing an old one only now.

    The old output is renamed aside first (to a fresh hidden name) and deleted only once the
    new one is in place; if the move fails, the old output is put back where it was.
    """
    old = None
    if os.path.lexists(final):
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        while os.path.lexists(old):
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(old)
    try:
        staging.rename(final)
    except BaseException:
        if old is not None:
            old.rename(final)
        raise
    (final / OWNER_FILE).unlink(missing_ok=True)  # a companion's marker, moved along
    if old is not None:
        shutil.rmtree(old)
