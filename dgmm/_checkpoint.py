"""Checkpoints of the engine: every candidate's state after a pass, in one ``.npz`` bound to
its settings and data."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ._candidates import Candidate
from .em import (
    EMState,
)
from .files import DamagedFile, read_own, write_own
from .params import GaussianParams
from .persistence import check_gaussian_arrays
from .variational import VARIATIONAL_ARRAYS, Prior, VariationalParams

CHECKPOINT_KIND = "checkpoint"
_ARRAYS = ("weights", "means", "covariances", "precisions_cholesky")


def save_checkpoint(path: Path, key: dict, cands: list[Candidate], n_passes: int) -> None:
    """All candidates' state in one ``.npz`` written atomically (temp file + replace).

    ``key`` identifies what the state belongs to (the sweep's settings and the data); a
    checkpoint is resumed only under an equal key.
    """
    write_own(path, CHECKPOINT_KIND, encode_candidates(key, cands, n_passes))


def encode_candidates(key: dict, cands: list[Candidate], n_passes: int) -> bytes:
    """Candidates' states, starts and scores as ``.npz`` bytes (`decode_candidates` reads
    them): a checkpoint's payload, or one stored fit's."""
    meta, arrays = [], {}
    for i, c in enumerate(cands):
        s = c.state
        meta.append(
            {
                "retries": c.retries,
                "reg_covar": c.reg_covar,
                "init_error": c.init_error,
                "stopped": c.stopped,
                "cell_stopped": c.cell_stopped,
                "estimate": c.estimate,
                "sample_iter": c.sample_iter,
                "log_likelihood": c.log_likelihood,
                "entropy": c.entropy,
                "reused": c.reused,
                "state": None
                if s is None
                else {
                    "reg_covar": s.reg_covar,
                    "lower_bound": s.lower_bound,
                    "lower_bounds": s.lower_bounds,
                    "n_iter": s.n_iter,
                    "converged": s.converged,
                    "error": s.error,
                },
            }
        )
        for tag, p in (("start", c.start), ("cur", s.params if s else None)):
            if p is not None:
                for a in _ARRAYS:
                    arrays[f"{tag}{i}_{a}"] = getattr(p, a)
                for a, v in p.checkpoint_arrays().items():  # a variational fit's posterior
                    arrays[f"{tag}{i}_{a}"] = v
                prior = p.checkpoint_prior()
                if prior is not None:
                    meta[-1][f"{tag}_prior"] = prior
    header = {"key": key, "n_passes": n_passes, "candidates": meta}
    buf = io.BytesIO()
    np.savez(buf, header=np.array(json.dumps(header)), **arrays)
    return buf.getvalue()


def read_checkpoint(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """A checkpoint's header (key, passes, candidate metadata) and arrays.

    Raises
    ------
    NotOwnFile
        ``path`` is not a dgmm checkpoint.
    DamagedFile
        It is one, but damaged: changed since written, or not readable as one.
    """
    return decode_candidates(read_own(path, CHECKPOINT_KIND), f"'{path}'")


def decode_candidates(payload: bytes, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and arrays of `encode_candidates`' bytes; `DamagedFile` (naming ``what``)
    when they cannot be read as such."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            header = json.loads(str(npz["header"]))
            arrays = {k: npz[k] for k in npz.files if k != "header"}
        if not isinstance(header, dict) or not isinstance(header.get("candidates"), list):
            raise ValueError("no candidate list")
    except Exception as e:  # any failure to parse what the digest vouched for
        raise DamagedFile(f"{what} cannot be read ({type(e).__name__}: {e})") from None
    return header, arrays


def load_checkpoint(
    header: dict, arrays: dict[str, np.ndarray], cands: list[Candidate], path: Path
) -> int:
    """Restore candidates in place from a checkpoint read by `read_checkpoint`; returns the
    passes made so far.

    Every parameter set a live candidate resumes from is checked as a saved model's is
    (`dgmm.persistence.check_gaussian_arrays`: shapes, finite values, weights on the simplex,
    factors and covariances that invert each other); a `ModelFileError` names the first that
    is not.
    """
    n_features = int(header["key"]["shape"][1])
    pairs = list(zip(cands, header["candidates"], strict=True))
    for i, (c, m) in enumerate(pairs):  # all checked before any candidate changes
        live = m["state"] is None or m["state"]["error"] is None
        # a start is an initialisation's raw statistics (weights need not sum to 1 yet):
        # finite values only; the state EM resumes from is checked as a saved model is
        for key in (k for k in arrays if k.startswith(f"start{i}_")):
            if arrays[key].dtype.kind not in "iuf" or not np.isfinite(arrays[key]).all():
                raise ValueError(f"{path}: {key}: expected finite numbers")
        for tag in ("cur",) if live else ():
            if f"{tag}{i}_weights" in arrays:
                found = {f"{a}_": arrays[f"{tag}{i}_{a}"] for a in _ARRAYS}
                process = None
                if f"{tag}_prior" in m:  # a variational candidate: its posterior and priors
                    process = bool(m[f"{tag}_prior"][0])
                    found |= {f"{a}_": arrays[f"{tag}{i}_{a}"] for a in VARIATIONAL_ARRAYS}
                    found["mean_prior_"] = arrays[f"{tag}{i}_prior_mean"]
                    found["covariance_prior_"] = arrays[f"{tag}{i}_prior_covariance"]
                check_gaussian_arrays(
                    found, c.covariance_type, c.n_components, n_features, path / f"{tag}{i}",
                    process,
                )  # fmt: skip
    for i, (c, m) in enumerate(pairs):
        c.retries, c.init_error, c.reg_covar = m["retries"], m["init_error"], m["reg_covar"]
        c.stopped, c.sample_iter = m.get("stopped"), m.get("sample_iter", 0)
        c.cell_stopped = bool(m.get("cell_stopped", False))
        c.estimate = m.get("estimate")
        c.log_likelihood, c.entropy = m.get("log_likelihood"), m.get("entropy")
        c.reused = m.get("reused")

        def params(
            tag: str, c: Candidate = c, i: int = i, m: dict = m
        ) -> GaussianParams | VariationalParams | None:
            if f"{tag}{i}_weights" not in arrays:
                return None
            g = GaussianParams(c.covariance_type, *(arrays[f"{tag}{i}_{a}"] for a in _ARRAYS))
            if f"{tag}_prior" not in m:
                return g
            process, wc, mp, dof = m[f"{tag}_prior"]
            prior = Prior(
                process, wc, mp, arrays[f"{tag}{i}_prior_mean"], dof,
                arrays[f"{tag}{i}_prior_covariance"],
            )  # fmt: skip
            extra = (arrays[f"{tag}{i}_{a}"] for a in VARIATIONAL_ARRAYS)
            return VariationalParams(g, *extra, prior)

        c.start = params("start")
        s = m["state"]
        c.state = None if s is None else EMState(params("cur"), **s)
    return int(header["n_passes"])


_DATA_KEYS = ("shape", "dtype", "row_chunks", "digest")


def _brief(value: Any) -> str:
    """A key value for a message: long lists (row chunks) by their length and ends."""
    if isinstance(value, list) and len(value) > 6:
        return f"[{value[0]}, {value[1]}, ... {value[-1]}] ({len(value)} values)"
    return str(value)


def key_difference(old: Any, new: dict) -> str | None:
    """Why a checkpoint made under key ``old`` may not resume under ``new`` (None: it may)."""
    if not isinstance(old, dict):
        return "it records no key"
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if not diff:
        return None
    data = [k for k in diff if k in _DATA_KEYS]
    settings = [k for k in diff if k not in _DATA_KEYS]
    parts = [
        f"the {what} changed "
        f"({'; '.join(f'{k} {_brief(old.get(k))} -> {_brief(new.get(k))}' for k in keys)})"
        for what, keys in (("settings", settings), ("data", data))
        if keys
    ]
    return " and ".join(parts) + " since it was written"
