"""Filling the memory of one web process and keeping it current.

A thread opens the jobs' change stream first, then loads every active job in pages (until that load ends the
process answers from the database), then follows the stream: a deletion, or a status written as anything but
active, is applied from the event at once, and so is a worker's write of a list or an embedding; every other
event has its job read again once the events at hand are taken, 50 ids a query. Where the database offers no
change streams, jobs written since the last look (``updatedAt``) are read every second, and the whole set again
every ``RELOAD_SECONDS`` (lists written by the workers, deletions). The rollback level is read every second, so
that answers never wait for it.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from pymongo.errors import OperationFailure, PyMongoError

from jobflow.db import commands
from jobflow.jobs import rollback
from jobflow.models import Job
from jobflow.readmodel.memory import Memory
from jobflow.timeutil import utcnow

log = logging.getLogger("jobflow.readmodel")

PAGE = 1000                 # jobs read per page while loading
LEVEL_SECONDS = 1.0         # the rollback level is read this often
POLL_SECONDS = 1.0          # without change streams: jobs written since the last look, this often
RELOAD_SECONDS = 30.0       # ... and every job again this often
RETRY_SECONDS = 1.0
POLL_MARGIN = timedelta(seconds=5)   # polling reads a little of the past again: writers' clocks differ
NO_CHANGE_STREAMS = {40573}
HISTORY_LOST = {286, 280, 260, 9}
FIELDS = {"embedding.vector": 0}
# What the memory needs of an event: which job, what happened, and what an update wrote (not the whole document).
PIPELINE = [{"$project": {"operationType": 1, "documentKey": 1, "updateDescription": 1}}]


class Follower:
    """The thread that loads and follows; its state tells whether answers may come from memory."""

    def __init__(self, memory: Memory):
        self.memory = memory
        self.loaded = False
        self.mode = ""
        self.level = 0
        self.contact = 0.0          # monotonic time the database last answered this thread
        self.stopping = threading.Event()
        self.stream = None
        self.token = None           # the stream's position after the last handled batch
        self._dirty: set = set()
        self._lock = threading.Lock()
        self.patched = 0            # updates applied from their events, with no read
        self._reloaded = 0.0
        self._level_read = 0.0
        self.thread = threading.Thread(target=self._run, name="read-model", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def silent_for(self) -> float:
        """Seconds since the database last answered (how stale the memory may be)."""
        return time.monotonic() - self.contact

    # ----- the thread --------------------------------------------------------------------------------------------
    def _run(self) -> None:
        trouble = None
        while not self.stopping.is_set():
            try:
                if not self.loaded:
                    self._open()
                    self._load()
                elif self.mode == "stream" and self.stream is None:
                    self._open(self.token)     # after a database outage: from where it stopped
                if self.stream is not None:
                    self._follow()
                else:
                    self._poll()
                trouble = None
            except OperationFailure as exc:
                self._close()
                if exc.code in HISTORY_LOST:
                    log.warning("read model: the change history since its position is gone; loading every job again")
                    self.loaded = False
                elif trouble != exc.code:
                    trouble = exc.code
                    log.warning("read model: the database refused the change stream (code %s); retrying", exc.code)
                self.stopping.wait(RETRY_SECONDS)
            except PyMongoError as exc:
                self._close()
                if trouble != type(exc).__name__:
                    trouble = type(exc).__name__
                    log.warning("read model: the database did not answer (%s); answers come from memory, marked "
                                "stale, until it does", type(exc).__name__)
                self.stopping.wait(RETRY_SECONDS)
            except Exception as exc:      # never a dead thread: answers come from the database meanwhile
                self._close()
                self.loaded = False
                if trouble != repr(exc)[:200]:
                    trouble = repr(exc)[:200]
                    log.error("read model: loading again after an error (%s); answers come from the database "
                              "until then", type(exc).__name__)
                self.stopping.wait(RETRY_SECONDS * 5)
        self._close()

    def _open(self, token=None) -> None:
        """The stream before the load: nothing written during the load is missed."""
        self._close()
        try:
            self.stream = Job._get_collection().watch(PIPELINE, resume_after=token, max_await_time_ms=200,
                                                      batch_size=PAGE)
            self.token, self.mode = self.stream.resume_token, "stream"
        except OperationFailure as exc:
            if exc.code not in NO_CHANGE_STREAMS:
                raise
            self.stream, self.mode = None, "poll"

    def _load(self) -> None:
        started = time.monotonic()
        self._reload()
        self._read_level(force=True)
        self.loaded = True
        log.info("read model: %d active jobs in memory in %.1fs (%s); answers come from memory", len(self.memory),
                 time.monotonic() - started, "following the change stream" if self.stream is not None else
                 f"no change streams: polling updatedAt every {POLL_SECONDS:.0f}s, every job every {RELOAD_SECONDS:.0f}s")

    def _reload(self) -> None:
        """Every active job read again, in pages; jobs no longer found are forgotten."""
        seen: set = set()
        after = None
        while not self.stopping.is_set():
            query = {"status": "active", **({"_id": {"$gt": after}} if after is not None else {})}
            docs = list(Job._get_collection().find(query, FIELDS).sort("_id", 1).limit(PAGE))
            self._touch()
            if not docs:
                break
            for doc in docs:
                self._put(doc)
                seen.add(doc["_id"].binary)
            after = docs[-1]["_id"]
        for key in self.memory.keys() - seen:
            self.memory.forget(key)
        self._reloaded = time.monotonic()

    def _follow(self) -> None:
        while not self.stopping.is_set():
            event = self.stream.try_next()
            self._touch()
            while event is not None:
                self._event(event)
                event = self.stream.try_next() if len(self._dirty) < PAGE else None
            self._reread()
            self.token = self.stream.resume_token
            self._read_level()

    def _event(self, event: dict) -> None:
        kind = event.get("operationType")
        key = (event.get("documentKey") or {}).get("_id")
        if kind in ("invalidate", "drop", "rename"):
            raise OperationFailure("the jobs collection was dropped or renamed", code=260)
        if key is None or not hasattr(key, "binary"):
            return
        update = event.get("updateDescription") or {}
        updated, removed = update.get("updatedFields") or {}, update.get("removedFields") or []
        if kind == "delete" or updated.get("status", "active") != "active" or "status" in removed:
            self.memory.forget(key.binary)      # out of every answer now; a reopened job is read again below
        elif kind == "update" and self.memory.patch(key, updated, removed):
            self.patched += 1                   # a list or an embedding written by a worker: applied as it is
            return
        if kind != "delete":
            self.reread(key)

    def reread(self, job_id) -> None:
        """Read this job again soon (its next state, whatever wrote it)."""
        with self._lock:
            self._dirty.add(job_id)

    def _reread(self) -> None:
        while self._dirty:
            # A read of at most CHUNK ids each: a long $in costs the embedded database time in its square.
            with self._lock:
                ids = [self._dirty.pop() for _ in range(min(commands.CHUNK, len(self._dirty)))]
            found = {d["_id"]: d for d in Job._get_collection().find({"_id": {"$in": ids}}, FIELDS)}
            self._touch()
            for job_id in ids:
                doc = found.get(job_id)
                if doc is None:
                    self.memory.forget(job_id.binary)
                else:
                    self._put(doc)

    def _poll(self) -> None:
        mark = utcnow()
        while not self.stopping.is_set():
            if time.monotonic() - self._reloaded > RELOAD_SECONDS:
                self._reload()
            since, mark = mark, utcnow()
            for doc in Job._get_collection().find({"updatedAt": {"$gte": since - POLL_MARGIN}}, FIELDS):
                self._put(doc)
            self._touch()
            self._read_level()
            self.stopping.wait(POLL_SECONDS)

    def _put(self, doc: dict) -> None:
        try:
            self.memory.put(doc)
        except Exception:       # a document no answer can use: answered from the database, which says why
            if hasattr(doc.get("_id"), "binary"):
                self.memory.forget(doc["_id"].binary)

    def _read_level(self, force: bool = False) -> None:
        if force or time.monotonic() - self._level_read >= LEVEL_SECONDS:
            self.level = rollback.level(fresh=True)
            self._level_read = time.monotonic()
            self._touch()

    def _touch(self) -> None:
        self.contact = time.monotonic()

    def _close(self) -> None:
        commands.close_quietly(self.stream)
        self.stream = None
