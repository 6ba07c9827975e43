"""The worker's full recompute and language refit, given up between steps when the worker stops or a rollback
comes into force (a stopping worker starts no fit, and one under way writes no further block of lists)."""
from __future__ import annotations

import logging

from jobflow.ops import recompute
from jobflow.worker.threads import Halted

log = logging.getLogger("jobflow.worker")


def recompute_if_due(worker) -> int:
    """Recompute every list when asked or every SIMILARITY_RECOMPUTE_INTERVAL (one process at a time).

    A recompute given up (``Halted``) leaves the stored lists marked stale: the next worker to check asks again.
    """
    lists = worker.lists
    if lists is None or worker.giving_up():
        return 0

    def check() -> None:
        """Between the steps (the fit, each block of lists): give up when the worker stops or a rollback is in force."""
        if worker.giving_up():
            raise Halted()

    def checked(progress):
        def report(done: int, total: int) -> None:
            progress(done, total)
            check()
        return report

    def recompute_lists(progress) -> int:
        lists.sync()
        check()
        adopted = lists.refit(force=True) is not None
        check()
        write = lists.write_all if adopted else lists.recompute_all     # adopted: lists recomputed in memory
        return write(checked(progress))

    def write_lists(progress) -> int:
        check()
        return lists.write_all(checked(progress))
    if lists.stored_lists_stale():
        # The lists were written under another correction and their recompute did not finish (its worker
        # stopped): ask again. A recompute running meanwhile ends after this request, so it is not repeated.
        recompute.request()
    # Mid-drain the minute's check does not refit: each adopted fit rewrites every list, and a drain that
    # grows the board would do it again and again. The drain's end refits (process_queue).
    refit = (lambda: not worker.giving_up() and lists.refit() is not None) if lists.refit_due() and worker.idle else None
    try:
        return recompute.run_if_due(worker.settings, worker.worker_id, recompute_lists, refit=refit, write=write_lists)
    except Halted:
        if not worker.stopping.is_set():
            log.info("recompute of the similar-jobs lists given up: a rollback is in force")
        return 0
