"""Fits the engine reads from and keeps in a `ResultStore`: each candidate's specification, and
its fit encoded as a one-candidate checkpoint (`dgmm._checkpoint`)."""

from __future__ import annotations

import logging
from typing import Any

from ._candidates import Candidate
from ._checkpoint import decode_candidates, encode_candidates, load_checkpoint
from .files import NotOwnFile
from .sampling import SamplePlan
from .store import ResultStore

logger = logging.getLogger(__name__)


def candidate_spec(
    base: dict, c: Candidate, stage: str, plan: SamplePlan | None = None
) -> dict[str, Any]:
    """What determines ``c``'s fit at ``stage`` ('sample': EM on the sample; 'final': the
    finished fit on all rows with its scores): the sweep's shared specification (data,
    settings, sample), its cell, its restart and the sample rows it is fitted on (``plan``)."""
    spec = {
        **base,
        "stage": stage,
        "cell": [c.covariance_type, c.n_components],
        "restart": c.restart,
    }
    n_rows = base["data"]["shape"][0]
    if base.get("sample") is not None and plan is not None:
        # the rows drawn are what the fit depends on, however they came to be asked for
        spec["sample"] = {"seed": plan.seed, "rows": min(plan.rows_for(c.cell), n_rows)}
    # the strategy that really ran: its cell decides whether EM starts on the sample
    asked = base["settings"]["strategy"]
    on_sample = plan is not None and plan.starts_on_sample(asked, c.cell, n_rows)
    spec["settings"] = {**base["settings"], "strategy": "sample" if on_sample else "exact"}
    return spec


def fetch(
    store: ResultStore,
    base: dict,
    cands: list[Candidate],
    stage: str,
    plan: SamplePlan | None = None,
) -> dict[int, str]:
    """Restore in place every candidate stored at ``stage``; returns, by ``id``, the origin of
    each fit read. An entry that does not hold such a candidate is ignored with one warning."""
    found: dict[int, str] = {}
    for c in cands:
        payload = store.get(candidate_spec(base, c, stage, plan))
        if payload is None:
            continue
        try:
            meta, body = store.split(payload)
            header, arrays = decode_candidates(body, f"store entry of {c.cell}")
            load_checkpoint(header, arrays, [c], store.path / "entries")
        except Exception as e:  # what the digest vouched for does not fit this candidate
            c.reset()
            logger.warning(
                "store entry of %s K=%d restart %d ignored (%s: %s)",
                c.covariance_type,
                c.n_components,
                c.restart,
                type(e).__name__,
                e,
            )
            continue
        found[id(c)] = str(meta.get("origin"))
    return found


def keep(
    store: ResultStore,
    base: dict,
    cands: list[Candidate],
    stage: str,
    origin: str,
    plan: SamplePlan | None = None,
) -> int:
    """Store the fits of ``cands`` (those with a state) at ``stage``; returns how many."""
    kept = 0
    for c in cands:
        if c.state is None:
            continue
        payload = encode_candidates({"shape": base["data"]["shape"]}, [c], 0)
        try:
            store.put(candidate_spec(base, c, stage, plan), payload, origin)
        except (OSError, NotOwnFile) as e:  # a store not written costs reuse, not the run
            logger.warning("store '%s' not written (%s); fits are not kept", store.path, e)
            return kept
        kept += 1
    if kept:
        store.prune()
    return kept
