"""Language balance: fitting, adopting and following the correction a ``SimilarLists`` ranks with.

The index holds corrected vectors; ``raw_blocks`` gives the raw ones back to
fit again. A fit is tried once enough jobs came or went (REFIT_CHURN) and is
adopted, with every list recomputed, only when it moves vectors past
REFIT_MOVEMENT. One process fits at a time (the recompute lease); the others
follow the version stored in ``similaritycorrections``.
"""
from __future__ import annotations

import logging

from jobflow.similarity import stored_correction
from jobflow.similarity.correction import UNDETERMINED, LanguageCorrection, counted_languages

log = logging.getLogger("jobflow.similarity")

RAW_BLOCK = 1000                        # rows a refit reads back at once (float64 temporaries: 12 MB at 1536-d)
REFIT_MOVEMENT = 0.05                   # a new correction is adopted (and every list recomputed) past this movement
REFIT_CHURN = 0.05                      # a refit is tried once this share of the jobs came or went since the last


def raw_blocks(lists, block: int = RAW_BLOCK):
    """(ids, raw unit vectors, languages) of the whole index, a block at a time, back from corrected ones.

    The languages are what a fit counts each job as: its own, or for an undetermined one the language it
    is corrected as (the nearest mean), so that bare titles count towards their language's statistics.
    """
    if lists.index is None:
        return
    for start in range(0, len(lists.index), block):
        with lists.lock:
            ids = lists.index.ids()[start:start + block]
            if not ids:
                return
            units = lists.index.vectors(ids)
            languages = [lists.languages.get(i, UNDETERMINED) for i in ids]
            keys = [lists.keys.get(i) for i in ids]
            lengths = [lists.lengths.get(i, 1.0) for i in ids]
            correction = lists.correction
        yield ids, correction.invert(units, lengths, keys), counted_languages(languages, keys)

def follow_stored(lists) -> int:
    """Adopt the version in force in the database when it is not this one's; the version in force."""
    if not lists.language_balance:
        return lists.correction.version
    version = int(stored_correction.header(lists.model).get("version") or 0)
    if version != lists.correction.version:
        try:
            adopt(lists, stored_correction.load(lists.model))
        except LookupError:
            pass        # caught between a new version's documents and its header: the next sync adopts it
    return version

def refit_due(lists) -> bool:
    """Whether enough jobs came or went since the correction in force was fitted to try a new fit."""
    if not lists.language_balance or lists.index is None or not len(lists.index):
        return False
    # Before the first fit any new job may complete a language's MIN_JOBS; after it, a share of the jobs.
    return lists.churn >= (REFIT_CHURN * len(lists.index) if lists.correction.active else 1)

def refit(lists, force: bool = False) -> float | None:
    """Fit the correction to the jobs now indexed; adopt and store it when it moves vectors past
    REFIT_MOVEMENT (or the first time). Returns the movement when adopted, else None.

    Run by one process at a time (the recompute lease): the caller then writes every list.
    """
    if not lists.language_balance or lists.index is None or not (force or refit_due(lists)):
        return None
    in_force = follow_stored(lists)      # a fit is numbered after the newest version, never beside it
    with lists.lock:
        lists.churn = 0         # jobs that come or go during the fit count towards the next one
    jobs = 0

    def blocks():
        nonlocal jobs
        for _, raw, languages in raw_blocks(lists):
            jobs += len(raw)
            yield raw, languages

    fitted, moved, worth_adopting = lists.correction.refit(blocks(), max(in_force, lists.correction.version) + 1,
                                                 REFIT_MOVEMENT)
    if not fitted.active:
        return None
    if not worth_adopting:
        log.info("language correction fitted on %d jobs moves vectors by %.3f (at most %.2f): kept version %d",
                 jobs, moved, REFIT_MOVEMENT, lists.correction.version)
        return None
    stored_correction.save(lists.model, fitted, jobs, moved)
    log.info("language correction version %d fitted on %d jobs (%s), moves vectors by %.3f: adopted",
             fitted.version, jobs, ", ".join(f"{k} {v}" for k, v in fitted.counts().items()), moved)
    adopt(lists, fitted)
    return moved

def adopt(lists, correction: LanguageCorrection) -> None:
    """Re-correct every indexed vector with ``correction`` and recompute every list in memory (no writes)."""
    with lists.lock:
        if lists.index is not None and len(lists.index):
            # Block by block: rows not reached yet are still corrected by the old version, which raw_blocks
            # inverts (the lock is held throughout, so nothing else changes the index meanwhile).
            for ids, raw, _ in raw_blocks(lists):
                corrected, lengths, keys = correction.apply(raw, [lists.languages[i] for i in ids])
                lists.index.upsert(ids, corrected)
                lists.lengths.update(zip(ids, lengths.tolist()))
                lists.keys.update(zip(ids, keys.tolist()))
        lists.correction = correction
        lists.churn = 0
        if lists.index is not None:
            for block_ids, block_lists in lists.index.all_top_k(lists.top_n, lists.min_score, lists.block_size):
                for job_id, entries in zip(block_ids, block_lists):
                    lists._set_list(job_id, entries)
    log.info("similarity index re-corrected with language correction version %d (%d jobs)",
             correction.version, len(lists))
