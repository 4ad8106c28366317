"""Input checks with messages that name the problem and the remedy (pure numpy, no Dask)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import xxhash

__all__ = [
    "ColumnProfile",
    "DataError",
    "block_digest",
    "check_constant_columns",
    "check_dtype_and_shape",
    "check_magnitude",
    "check_profile",
]


def _nonfinite_message(
    name: str, has_nan: bool, dtype: np.dtype, n_bad: int, span: str, first: int
) -> str:
    kind = "NaN" if has_nan else f"infinity or a value too large for dtype({str(dtype)!r})"
    return (
        f"Input {name} contains {kind}: {n_bad} row(s) with NaN or infinite values among {span}, "
        f"the first at row {first}. Remove or impute those rows before fitting."
    )


def check_block_finite(x: np.ndarray, row0: int = 0) -> None:
    """Raise a ValueError naming the rows if a block of rows holds NaN or infinity.

    Parameters
    ----------
    x : ndarray of shape (n_rows, n_features)
    row0 : int
        Global index of the block's first row, so the message names global rows.
    """
    if x.dtype.kind not in "fc":
        return
    finite = np.isfinite(x).all(axis=1)
    if finite.all():
        return
    bad = np.flatnonzero(~finite)
    span = f"rows {row0} to {row0 + x.shape[0] - 1}"
    raise ValueError(
        _nonfinite_message(
            "X", bool(np.isnan(x[bad]).any()), x.dtype, bad.size, span, row0 + int(bad[0])
        )
    )


@dataclass
class ColumnProfile:
    """Per-column range and non-finite rows of some rows; profiles of blocks add up.

    Attributes
    ----------
    n : int
        Rows profiled.
    n_bad : int
        Rows holding NaN or infinity; ``first_bad`` is the first of them (-1 if none) and
        ``has_nan`` whether any is NaN (else they are all infinite).
    lo, hi : ndarray of shape (n_features,)
        Column minimum and maximum over the finite rows.
    digest : int
        A 128-bit digest of the rows' bytes and positions: the XOR of one keyed digest per
        block, so it does not depend on the order in which blocks are added.
    n_good : int
        Rows without NaN/inf, over which ``mean`` and ``m2`` are taken.
    mean, m2 : ndarray of shape (n_features,)
        Column means and sums of squared deviations from them, merged across blocks with Chan
        et al.'s pairwise update (no cancellation, whatever the offset).
    """

    n: int
    n_bad: int
    first_bad: int
    has_nan: bool
    lo: np.ndarray
    hi: np.ndarray
    digest: int = 0
    n_good: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def __add__(self, other: ColumnProfile) -> ColumnProfile:
        firsts = [f for f in (self.first_bad, other.first_bad) if f >= 0]
        n = self.n_good + other.n_good
        if not other.n_good:
            mean, m2 = self.mean, self.m2
        elif not self.n_good:
            mean, m2 = other.mean, other.m2
        else:  # spreads float64 cannot square overflow here; `check_magnitude` names them
            delta = other.mean - self.mean
            mean = self.mean + delta * (other.n_good / n)
            with np.errstate(over="ignore", invalid="ignore"):
                m2 = self.m2 + other.m2 + delta**2 * (self.n_good * other.n_good / n)
        return ColumnProfile(
            self.n + other.n,
            self.n_bad + other.n_bad,
            min(firsts, default=-1),
            self.has_nan or other.has_nan,
            np.fmin(self.lo, other.lo),
            np.fmax(self.hi, other.hi),
            self.digest ^ other.digest,
            n,
            mean,
            m2,
        )

    @property
    def std(self) -> np.ndarray:
        """Column standard deviations (population, over the finite rows)."""
        return np.sqrt(self.m2 / max(self.n_good, 1))

    def affine(self, center: np.ndarray, scale: np.ndarray) -> ColumnProfile:
        """The profile of ``(x − center) / scale``; its digest is the raw rows' combined with
        the transform's, so that transformed rows never pass for the raw ones (a checkpoint or
        a stored fit of one is never taken for the other)."""
        lo, hi = (self.lo - center) / scale, (self.hi - center) / scale
        transform = np.concatenate(
            [
                np.asarray(center, dtype=np.float64).ravel(),
                np.asarray(scale, dtype=np.float64).ravel(),
            ]
        )
        digest = xxhash.xxh3_128_intdigest(self.digest.to_bytes(16, "little") + transform.tobytes())
        return ColumnProfile(
            self.n,
            self.n_bad,
            self.first_bad,
            self.has_nan,
            np.fmin(lo, hi),
            np.fmax(lo, hi),
            digest,
            self.n_good,
            None if self.mean is None else (self.mean - center) / scale,
            None if self.m2 is None else self.m2 / scale**2,
        )


def block_digest(x: np.ndarray, row0: int) -> int:
    """A 128-bit digest of a block's bytes, dtype, shape and first row (a change detector).

    XXH3-128 over all of the block's bytes, read at ~20 GB/s a core (faster than the pass's
    own NaN and range checks): two different blocks share a digest with probability 2⁻¹²⁸, so
    changed data cannot keep it by chance. Keyed by the block's place, so that blocks combine
    by XOR in any order and a moved block changes the total.
    """
    h = xxhash.xxh3_128(f"{row0}/{x.shape}/{x.dtype.str}/".encode())
    h.update(np.ascontiguousarray(x).view(np.uint8).reshape(-1))
    return h.intdigest()


def block_profile(x: np.ndarray, row0: int = 0) -> ColumnProfile:
    """The `ColumnProfile` of one block of rows whose first row has global index ``row0``."""
    finite = np.isfinite(x).all(axis=1)
    bad = np.flatnonzero(~finite)
    good = x[finite] if bad.size else x
    nan = np.full(x.shape[1], np.nan)
    with np.errstate(over="ignore", invalid="ignore"):  # spreads float64 cannot square are
        mean, m2 = _moments(good)  # refused by name afterwards (`check_magnitude`)
    return ColumnProfile(
        x.shape[0],
        int(bad.size),
        row0 + int(bad[0]) if bad.size else -1,
        bool(bad.size and np.isnan(x[bad]).any()),
        good.min(axis=0).astype(np.float64) if len(good) else nan,
        good.max(axis=0).astype(np.float64) if len(good) else nan,
        block_digest(x, row0),
        len(good),
        mean,
        m2,
    )


def _moments(x: np.ndarray, step: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Column means and sums of squared deviations in float64, a few thousand rows at a time
    (temporaries stay small whatever the block) and merged pairwise."""
    n, mean, m2 = 0, np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for s in range(0, x.shape[0], step):
        part = x[s : s + step].astype(np.float64)
        k = part.shape[0]
        pm = part.mean(axis=0)
        part -= pm
        pm2 = np.einsum("nd,nd->d", part, part)
        delta = pm - mean
        mean = mean + delta * (k / (n + k))
        m2 = m2 + pm2 + delta**2 * (n * k / (n + k))
        n += k
    return mean, m2


class DataError(ValueError):
    """The data's values make a fit impossible (NaN/inf rows, identical rows, constant columns)."""


def check_finite_profile(p: ColumnProfile, dtype: np.dtype, name: str = "X") -> None:
    """Raise a `DataError` naming the first row with NaN/inf, if any."""
    if p.n_bad:
        span = f"rows 0 to {p.n - 1}"
        raise DataError(_nonfinite_message(name, p.has_nan, dtype, p.n_bad, span, p.first_bad))


def check_profile(
    p: ColumnProfile, dtype: np.dtype, name: str = "X", columns: Sequence[str] | None = None
) -> None:
    """Raise a `DataError` for data no mixture can be fitted to.

    Non-finite rows are counted and the first one named; data whose rows are all identical, or
    with a constant column (which carries no information and makes every covariance singular),
    is refused with the columns named (by ``columns``, else 0-based).
    """
    check_finite_profile(p, dtype, name)
    check_constant_columns(p.lo, p.hi, p.n, name, columns)
    check_magnitude(p, name)


def check_constant_columns(
    lo: np.ndarray, hi: np.ndarray, n: int, name: str = "X", columns: Sequence[str] | None = None
) -> None:
    """Refuse, with a `DataError` naming them, the columns whose smallest and largest values
    ``lo`` and ``hi`` over ``n`` rows are equal."""
    const = np.flatnonzero(lo == hi)
    if const.size == lo.size and n > 1:
        raise DataError(
            f"Input {name}: all {n} rows are identical (every column is constant); there is "
            "nothing to cluster."
        )
    if const.size:
        label = (lambda j: repr(columns[j])) if columns is not None else str
        shown = ", ".join(f"{label(int(j))} (always {lo[j]:g})" for j in const[:5])
        more = f" and {const.size - 5} more" if const.size > 5 else ""
        raise DataError(
            f"Input {name} has {const.size} constant column(s): {shown}{more}"
            f"{'' if columns is not None else ' (0-based)'}. A constant column carries no "
            "information and makes every covariance singular; drop it from the data."
        )


def check_magnitude(p: ColumnProfile, name: str = "X") -> None:
    """Refuse columns whose spread float64 cannot square: summed over the rows, squares of a
    spread above ``sqrt(max / n)`` overflow, and squares of one below ``sqrt(tiny)`` are no
    longer normal numbers (every variance would be lost against ``reg_covar``)."""
    fin = np.finfo(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        spread = p.hi - p.lo
    big = np.flatnonzero(~(spread <= np.sqrt(fin.max / max(p.n, 1))))
    small = np.flatnonzero((spread > 0) & (spread < np.sqrt(fin.tiny)))
    for cols, what, remedy in (
        (big, "too large", "divide the data by a power of ten"),
        (small, "too small", "multiply the data by a power of ten"),
    ):
        if cols.size:
            shown = ", ".join(f"{int(j)} (from {p.lo[j]:.3g} to {p.hi[j]:.3g})" for j in cols[:5])
            more = f" and {cols.size - 5} more" if cols.size > 5 else ""
            raise DataError(
                f"Input {name}: the spread of {cols.size} column(s) is {what} for float64 "
                f"arithmetic over {p.n} rows: {shown}{more} (0-based); {remedy} (in the data "
                "itself: standardizing would need the same arithmetic)."
            )


def check_dtype_and_shape(dtype: np.dtype, shape: tuple, name: str = "X") -> np.dtype:
    """Check what can be checked without reading data; return the dtype to compute in.

    float32 and float64 are kept; integers, booleans and other floats (float16, long double)
    become float64.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {dtype}.")
    if dtype.kind not in "biuf":
        raise ValueError(
            f"Input {name} has a non-numeric dtype ({dtype}); expected an array of numbers."
        )
    if len(shape) != 2:
        raise ValueError(
            f"Expected 2D array, got {len(shape)}D array instead (shape={tuple(shape)}). "
            "Reshape your data either using array.reshape(-1, 1) if your data has a single "
            "feature or array.reshape(1, -1) if it contains a single sample."
        )
    if shape[0] < 1:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={tuple(shape)}) while a minimum of 1 is required."
        )
    if shape[1] < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(shape)}) while a minimum of 1 is "
            "required."
        )
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


def as_numpy_2d(X: Any, name: str = "X") -> np.ndarray:
    """Convert array-likes (lists, object arrays of numbers) to a checked float ndarray."""
    if hasattr(X, "tocsr") or hasattr(X, "todense"):
        raise TypeError(
            f"Sparse data was passed for {name}, but dense data is required. Use '.toarray()' "
            "to convert to a dense numpy array."
        )
    arr = np.asarray(X)
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise type(e)(
                f"Input {name} has dtype object with values that are not numbers: {e}"
            ) from None
    dtype = check_dtype_and_shape(arr.dtype, arr.shape, name)
    arr = np.asarray(arr, dtype=dtype)
    check_block_finite(arr, 0)
    return arr


WEIGHTS_SUM_TO_ZERO = "sample_weight sums to zero; at least one row needs a positive weight."


def check_weight_block(w: np.ndarray, row0: int = 0) -> None:
    """Raise a ValueError naming the first bad row if weights are negative, NaN or infinite.

    The same check serves in-memory weights (``row0=0``, all rows) and every block of Dask
    weights as it is read.
    """
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"sample_weight must be finite and non-negative: {int(bad.sum())} bad weight(s) "
            f"among rows {row0} to {row0 + w.shape[0] - 1}, the first at row {row0 + first} "
            f"({float(w[first])})."
        )


def check_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray:
    """Check in-memory sample weights: 1-D, finite, non-negative, not all zero."""
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(n_samples, float(w))
    if w.shape != (n_samples,):
        raise ValueError(
            f"sample_weight.shape == {w.shape}, expected ({n_samples},) (one weight per row of X)."
        )
    check_weight_block(w)
    if w.sum() <= 0:
        raise ValueError(WEIGHTS_SUM_TO_ZERO)
    return w


def check_n_components(n_components: int, n_samples: int) -> None:
    """scikit-learn's rule: no more components than rows."""
    if n_samples < n_components:
        raise ValueError(
            "Expected n_samples >= n_components but got "
            f"n_components = {n_components}, n_samples = {n_samples}"
        )


def check_number(
    name: str,
    value: Any,
    kind: type,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> None:
    """Raise a ValueError naming the parameter when a number is of the wrong type or range."""
    ok_type = isinstance(value, kind) and not isinstance(value, bool)
    if kind is Real:
        ok_type = ok_type and np.isfinite(value)
    if not ok_type:
        what = "an integer" if kind is Integral else "a finite real number"
        raise ValueError(f"The '{name}' parameter must be {what}; got {value!r}.")
    if low is not None and (value <= low if low_open else value < low):
        rel = ">" if low_open else ">="
        raise ValueError(f"The '{name}' parameter must be {rel} {low}; got {value!r}.")
    if high is not None and value > high:
        raise ValueError(f"The '{name}' parameter must be <= {high}; got {value!r}.")
