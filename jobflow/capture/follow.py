"""The follower: one worker process at a time turns other applications' writes into queue work.

Every worker runs ``Capture.run`` each second (the scheduler's ``capture-changes``); the one holding the
``change-capture`` lease follows the jobs collection for a few seconds per run. On a database with change
streams (a replica set, SecantusDB) it reads the stream from the resume token stored after each handled batch,
so a restart of the worker, the host or the database continues where it stopped; when that history is gone it
sweeps every job, then follows a fresh stream. Without change streams (a standalone mongod) it polls
``updatedAt`` and sweeps every CHANGE_CAPTURE_SWEEP_INTERVAL.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

from pymongo.errors import OperationFailure, PyMongoError

from jobflow.capture.act import Change, apply
from jobflow.capture.decide import DECISION_FIELDS, WATCHED_FIELDS
from jobflow.capture.events import HISTORY_LOST, change_of, history_kept
from jobflow.capture.source import Source
from jobflow.capture.sweep import sweep
from jobflow.db import commands
from jobflow.models import CaptureState, Job, Lease
from jobflow.timeutil import utcnow

log = logging.getLogger("jobflow.capture")

LEASE = "change-capture"
RUN_SECONDS = 5.0            # at most this long per run (the lease outlives it three times)
BATCH = 1000                 # events handled (and a resume token stored) at a time at most: on a database busy with a
                             # drain each round trip waits behind its writes, so a backlog of events costs few of them
BATCH_SECONDS = 0.3          # ... and events are handled at most this long after the first of a batch arrived
IDLE_SECONDS = 0.5           # with nothing new, the stream is asked again this much later
POLL_MARGIN = timedelta(seconds=5)   # polling re-reads a little of the past: writers' clocks differ
LAGS_KEPT = 2000             # recent lags kept in the capture state for the per-minute sample
LAGS_PER_BATCH = 100
NO_CHANGE_STREAMS = {40573}                  # "The $changeStream stage is only supported on replica sets"
# Only the events that can call for something: inserts, replacements, deletions, and updates that write the text,
# the status or the language. The product's own writes (embedding, lists) never come back as events.
PIPELINE = [{"$match": {"$or": [
    {"operationType": {"$in": ["insert", "replace", "delete", "invalidate", "drop", "rename"]}},
    *({f"updateDescription.updatedFields.{name}": {"$exists": True}} for name in WATCHED_FIELDS),
    {"updateDescription.removedFields": {"$in": list(WATCHED_FIELDS)}},
]}}]


class NoChangeStreams(Exception):
    """The database offers no change streams."""


class Capture:
    """The change capture of one worker process."""

    def __init__(self, settings: dict, worker_id: str, stopping: threading.Event | None = None):
        self.setting = settings["CHANGE_CAPTURE"]
        self.lease_ttl = timedelta(milliseconds=settings["CHANGE_CAPTURE_LEASE"])
        self.sweep_every = timedelta(milliseconds=settings["CHANGE_CAPTURE_SWEEP_INTERVAL"])
        self.worker_id = worker_id
        self.source = Source(settings)
        # The board's own collection is never written by the product: every update of it is read.
        self.pipeline = [] if self.source.mirrored else PIPELINE
        self.stopping = stopping or threading.Event()
        self.stream = None
        self.holding = False
        self.mode: str | None = None
        self.reason = ""
        self._saved_token = None
        self._token_saved_at = 0.0
        self._trouble: str | None = None
        self._running = threading.Lock()   # held by a run: stop waits for it to end
        self._run_started = 0.0
        self._read_seconds = 0.0             # how long the last batch of events took to read
        self._leased_at = float("-inf")    # monotonic time of the last acquisition that held
        self._keeper: threading.Thread | None = None

    # ----- one run --------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Follow the jobs for a few seconds if this process holds the lease (else make sure it does not)."""
        if self.stopping.is_set() or not self._running.acquire(blocking=False):
            return
        self._run_started = time.monotonic()
        try:
            self._run()
        finally:
            self._running.release()

    def _run(self) -> None:
        if self.setting == "off":
            if self.mode != "off":
                self.mode, self.reason = "off", "CHANGE_CAPTURE=off: only writes through /api/jobs are noticed"
                self._state({"mode": "off", "reason": self.reason, "owner": None})
            return
        if not self._acquire():
            if self.holding:
                log.info("change capture passed to another worker")
            self._close()
            self.holding = False
            return
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep, name="capture-lease", daemon=True)
            self._keeper.start()
        if not self.holding:
            self.holding = True
            log.info("change capture: this worker follows %s (CHANGE_CAPTURE=%s)", self.source.describe(),
                     self.setting)
        deadline = time.monotonic() + min(RUN_SECONDS, self.lease_ttl.total_seconds() / 3)
        try:
            if self._resolve_mode() == "stream":
                self._follow_stream(deadline)
            else:
                self._poll()
            if self._trouble:
                log.info("change capture is back (%s)", self.mode)
                self._trouble = None
        except PyMongoError as exc:
            self._close()
            reason = str(exc).split(", full error")[0] if isinstance(exc, OperationFailure) else type(exc).__name__
            if self._trouble != reason:
                self._trouble = reason
                log.warning("change capture paused: %s; it resumes from the stored position", reason)
            try:
                CaptureState._get_collection().update_one(
                    {"_id": "jobs"}, {"$set": {"trouble": reason, "troubleAt": utcnow(), "owner": self.worker_id}},
                    upsert=True)
            except PyMongoError:
                pass
        except Exception:
            # Whatever went wrong, the events read but not handled are read again from the stored position.
            self._close()
            raise

    def stop(self, timeout: float = RUN_SECONDS + 2) -> None:
        """Close the stream and hand the lease on (SIGTERM; ``stopping`` is set, so a run under way ends soon)."""
        got = self._running.acquire(timeout=timeout)
        self._close()
        if got:
            self._running.release()
        if self.holding:
            try:
                Lease.release(LEASE, self.worker_id)
            except PyMongoError:
                pass
            self.holding = False

    # ----- mode -----------------------------------------------------------------------------------------------
    def _resolve_mode(self) -> str:
        if self.mode in ("stream", "poll"):
            return self.mode
        if self.setting == "poll":
            return self._set_mode("poll", f"CHANGE_CAPTURE=poll: polling {self.source.updated_at_path()} of "
                                          f"{self.source.describe()}, and a sweep every "
                                          f"{int(self.sweep_every.total_seconds())} s")
        try:
            self._open_stream()
        except NoChangeStreams:
            if self.setting == "stream":
                raise OperationFailure("CHANGE_CAPTURE=stream, but the database offers no change streams") from None
            return self._set_mode("poll", "the database offers no change streams (a standalone server): polling "
                                          f"{self.source.updated_at_path()} of {self.source.describe()}, and a "
                                          f"sweep every {int(self.sweep_every.total_seconds())} s")
        return self._set_mode("stream", f"following the change stream of {self.source.describe()}")

    def _set_mode(self, mode: str, reason: str) -> str:
        self.mode, self.reason = mode, reason
        log.info("change capture mode: %s (%s)", mode, reason)
        self._state({"mode": mode, "reason": reason})
        return mode

    # ----- stream ---------------------------------------------------------------------------------------------
    def _open_stream(self) -> None:
        if self.stream is not None:
            return
        coll = self.source.collection()
        token = self._stored("token")
        try:
            self.stream = coll.watch(self.pipeline, resume_after=token, max_await_time_ms=500, batch_size=BATCH)
        except OperationFailure as exc:
            if exc.code in NO_CHANGE_STREAMS:
                raise NoChangeStreams() from None
            if token is None or exc.code not in HISTORY_LOST:
                raise
            log.warning("change capture: the change history since the stored position is gone (code %s): comparing "
                        "every job, then following a fresh stream", exc.code)
            self._sweep_then_follow("change history lost")
            return
        if token is None and self.source.mirrored:
            self._close()
            log.info("change capture: copying every job of %s, then following its changes", self.source.describe())
            self._sweep_then_follow(f"first run on {self.source.name}")
        elif token is None:
            log.info("change capture: following new writes from now on (jobs written before: migrate-embeddings)")
            self._save_token(force=True)

    def _stored(self, name: str, doc: dict | None = None):
        """A stored position (resume token, poll mark), if it belongs to the collection followed now (``doc``: the
        capture state, when the caller has read it)."""
        if doc is None:
            doc = CaptureState._get_collection().find_one({"_id": "jobs"}, {name: 1, "source": 1}) or {}
        if doc.get("source", Job._meta["collection"]) != self.source.collection_name:
            return None
        return doc.get(name) or None

    def _sweep_then_follow(self, why: str) -> None:
        """A fresh stream, every job compared, and only then the fresh position stored (a worker dying mid-sweep
        leaves the next one to sweep again)."""
        self.stream = self.source.collection().watch(self.pipeline, max_await_time_ms=500, batch_size=BATCH)
        counts = sweep(why, self.source, keep_going=self._keep_lease)
        if counts["state"] != "done":
            self._close()
            return
        self._save_token(force=True)

    def _keep(self) -> None:
        """Renew the lease every third of its time while a run is under way: a batch slowed by a busy database
        (a drain's writes come first on the embedded one) must not hand capture to another worker, which would
        read the same changes again. A run that has not ended after ten lease times is left to lose it."""
        every = self.lease_ttl.total_seconds() / 3
        while not self.stopping.wait(every):
            if self.holding and self._running.locked() and \
                    time.monotonic() - self._run_started < 10 * self.lease_ttl.total_seconds():
                try:
                    self._acquire()
                except PyMongoError:
                    pass

    def _keep_lease(self) -> bool:
        return not self.stopping.is_set() and self._acquire()

    def _acquire(self) -> bool:
        """Take or renew the lease; when it was last held is remembered."""
        started = time.monotonic()
        held = Lease.acquire(LEASE, self.worker_id, self.lease_ttl)
        if held:
            self._leased_at = started
        return held

    def _follow_stream(self, deadline: float) -> None:
        self._open_stream()
        while self.stream is not None and time.monotonic() < deadline and not self.stopping.is_set():
            events = []
            first = None
            began = time.monotonic()
            before = self.stream.resume_token
            try:
                while len(events) < BATCH and (first is None or time.monotonic() - first < BATCH_SECONDS):
                    event = self.stream.try_next()
                    if event is None:
                        break
                    events.append(event)
                    first = first or time.monotonic()
            except OperationFailure as exc:
                if exc.code not in HISTORY_LOST:
                    raise
                self._close()
                self._open_stream()
                continue
            if before is not None and self.stream.resume_token != before and \
                    not history_kept(self.source.collection(), self.pipeline, before):
                log.warning("change capture: the database pruned history the stream had not read yet (an oplog too "
                            "short for the writes): comparing every job, then following a fresh stream")
                self._close()
                self._sweep_then_follow("change history pruned while following")
                return
            if any(e.get("operationType") in ("invalidate", "drop", "rename") for e in events):
                log.warning("change capture: the jobs collection was dropped or renamed; following it afresh")
                self._handle([change_of(e, self.source) for e in events])
                self._close()
                CaptureState._get_collection().update_one({"_id": "jobs"}, {"$unset": {"token": ""}})
                return
            if events:
                self._read_seconds = time.monotonic() - began
                self._handle([change_of(e, self.source) for e in events], docs=self._inserted(events))
                if not self._still_leased():     # a slow batch outlived the lease: another worker follows now
                    self._close()
                    return
            else:
                # Every ask makes the database read the jobs' new history (the product's own writes included):
                # a quiet stream is asked twice a second.
                self._save_token()
                self.stopping.wait(IDLE_SECONDS)
        self._state({})

    def _inserted(self, events: list) -> dict:
        """The documents insert events carry, of jobs with no later event in the batch: no need to read them."""
        if self.source.mirrored:
            return {}
        docs: dict = {}
        for event in events:
            key = (event.get("documentKey") or {}).get("_id")
            if event.get("operationType") == "insert" and isinstance(event.get("fullDocument"), dict):
                docs[key] = event["fullDocument"]
            else:
                docs.pop(key, None)
        return docs

    def _still_leased(self) -> bool:
        """Renew the lease after a batch unless it was renewed within a third of its time (the keeper's own)."""
        if time.monotonic() - self._leased_at < self.lease_ttl.total_seconds() / 3:
            return not self.stopping.is_set()
        return self._keep_lease()

    def _save_token(self, force: bool = False) -> None:
        token = self.stream.resume_token if self.stream is not None else None
        if token is None or (not force and (token == self._saved_token or time.monotonic() - self._token_saved_at < 5)):
            return
        self._state({"token": token, "source": self.source.collection_name})
        self._saved_token, self._token_saved_at = token, time.monotonic()

    def _close(self) -> None:
        commands.close_quietly(self.stream)
        self.stream = None

    # ----- poll -----------------------------------------------------------------------------------------------
    def _poll(self) -> None:
        state = CaptureState._get_collection().find_one({"_id": "jobs"}) or {}
        mark = self._stored("pollMark", state)
        first = mark is None
        if first:
            mark = utcnow()
            log.info("change capture: polling %s of %s from now on (jobs written before: %s)",
                     self.source.updated_at_path(), self.source.collection_name,
                     "copied by a sweep now" if self.source.mirrored else "migrate-embeddings")
            self._state({"pollMark": mark, "source": self.source.collection_name})
        path = self.source.updated_at_path()
        fields = None if self.source.mirrored else DECISION_FIELDS
        docs = [(d, self.source.updated_at(d)) for d in self.source.collection().find(
            {path: {"$gte": mark - POLL_MARGIN}}, fields).sort(path, 1).limit(BATCH)]
        docs = [(d, at) for d, at in docs if isinstance(at, datetime)]
        if docs:
            changes = [Change(d["_id"], written_at=at if at > mark else None) for d, at in docs]
            newest = max(at for _, at in docs)
            docs = [d for d, _ in docs]
            if self.source.mirrored:
                self.source.write(docs, [])
                self._handle(changes, mark=newest)
            else:
                self._handle(changes, docs={d["_id"]: d for d in docs}, mark=newest)
        finished = (state.get("sweep") or {}).get("finishedAt")
        if (first and self.source.mirrored) or finished is None or utcnow() - finished > self.sweep_every:
            sweep("poll mode: every CHANGE_CAPTURE_SWEEP_INTERVAL", self.source, keep_going=self._keep_lease)
        self._state({})

    # ----- recording ------------------------------------------------------------------------------------------
    def _handle(self, changes: list, docs: dict | None = None, mark=None) -> None:
        began = time.monotonic()
        changes = [c for c in changes if c is not None and c.job_id is not None]
        with commands.ungated():      # the drain's pacing is for the drain: capture feeds it
            if self.source.mirrored and mark is None:
                # The board's documents copied into jobs first (a deleted one: its copy deleted), then handled.
                gone = self.source.copy(list(dict.fromkeys(c.job_id for c in changes)))
                for change in changes:
                    change.deleted = change.job_id in gone
            outcome = apply(changes, docs=docs)
        lags = sorted(outcome.lags_ms)
        now = utcnow()
        if len(lags) > LAGS_PER_BATCH:
            step = len(lags) / LAGS_PER_BATCH
            lags = [lags[int(i * step)] for i in range(LAGS_PER_BATCH - 1)] + [lags[-1]]
        update: dict = {"$set": {"heartbeatAt": now, "owner": self.worker_id, "mode": self.mode, "reason": self.reason},
                        "$inc": {"events": len(changes), "enqueued": outcome.enqueued, "removed": outcome.left}}
        if lags:
            update["$set"]["lastLagMs"] = lags[len(lags) // 2]
            update["$push"] = {"lags": {"$each": [{"at": now, "ms": ms} for ms in lags], "$slice": -LAGS_KEPT}}
        written = [c.written_at for c in changes if c.written_at]
        if written:
            update["$set"]["lastEventAt"] = max(written)
        if mark is not None:
            update["$set"]["pollMark"] = mark
        if self.stream is not None and self.stream.resume_token is not None:
            update["$set"]["token"] = self.stream.resume_token
            self._saved_token, self._token_saved_at = self.stream.resume_token, time.monotonic()
        CaptureState._get_collection().update_one({"_id": "jobs"}, update, upsert=True)
        if outcome.enqueued or outcome.left or outcome.misfits:
            log.info("change capture: %d changes, %d queued, %d taken out, %d cannot be used (lag p50 %s ms; read in "
                     "%.1fs, handled in %.1fs)", len(changes), outcome.enqueued, outcome.left, outcome.misfits,
                     lags[len(lags) // 2] if lags else "-", self._read_seconds, time.monotonic() - began)

    def _state(self, fields: dict) -> None:
        CaptureState._get_collection().update_one(
            {"_id": "jobs"}, {"$set": {"heartbeatAt": utcnow(), "owner": self.worker_id if self.holding else None,
                                       "mode": self.mode, "reason": self.reason, **fields}}, upsert=True)
