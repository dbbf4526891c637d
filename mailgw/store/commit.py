"""Group commit: the deliveries that threads commit at the same moment are made durable together.

A thread calling ``GroupCommitter.commit`` first writes and fsyncs its message file itself, so
that the files of concurrent deliveries are flushed in parallel (the file system merges their
journal commits).  Then it queues the message; if no commit is running it takes every queued
message and links them all (it is the leader), else it sleeps until the running batch is over
and then either finds its own message committed or leads the next batch.  A batch costs, per
recipient folder, for all its messages together: the hard links, one index append with one
fsync, and one fsync of new/.

Durability is that of a single delivery: a message file is fsync'd before any link to it exists,
and ``commit`` returns only once the file, its index lines and its directory entries are on
disk.  Each message succeeds or fails on its own: a failed one leaves no copy anywhere.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from mailgw.crashpoint import crash_point
from mailgw.store.files import store_error
from mailgw.store.interfaces import StoreError


class Job:
    """One message waiting to be committed: its file and its recipients' (address, folder)."""

    __slots__ = ("message", "folders", "delivered", "error", "done")

    def __init__(self, message: object, folders: list[tuple[str, object]]) -> None:
        self.message = message
        self.folders = folders
        #: (address, folder, uid, key) of each copy made so far.
        self.delivered: list[tuple] = []
        self.error: BaseException | None = None
        self.done = False


class GroupCommitter:
    """Commits messages of concurrent threads in batches; ``folder_of(address)`` finds folders.

    A message handed to ``commit`` must offer ``write_out() -> int`` (write its file, return the
    open descriptor, not yet fsync'd), ``source`` (the file's path), ``size``, and
    ``discard()`` (close and remove its file)."""

    def __init__(self, folder_of: Callable[[str], object]) -> None:
        self._folder_of = folder_of
        self._ready = threading.Condition(threading.Lock())
        self._queue: list[Job] = []
        self._running = False

    def commit(self, message: object, addresses: list[str]) -> dict[str, int]:
        """Deliver ``message`` durably to each address; return {address: uid} or raise."""
        try:
            folders = [(address, self._folder_of(address)) for address in addresses]
            fd = message.write_out()
            crash_point("delivery.file_written")
            os.fsync(fd)
            crash_point("delivery.file_synced")
        except (OSError, StoreError) as e:
            message.discard()
            if isinstance(e, StoreError):
                raise
            raise store_error("cannot write the message", e) from e
        job = Job(message, folders)
        with self._ready:
            self._queue.append(job)
            while not job.done:
                if self._running:
                    self._ready.wait()
                    continue
                self._running = True
                batch, self._queue = self._queue, []
                self._ready.release()
                try:
                    self._run(batch)
                finally:
                    self._ready.acquire()
                    self._running = False
                    self._ready.notify_all()
        if job.error is not None:
            raise job.error
        return {address: uid for address, _, uid, _ in job.delivered}

    def _run(self, batch: list[Job]) -> None:
        try:
            self._deliver(batch)
        except BaseException as error:
            for job in batch:
                if job.error is None:
                    job.error = error
            raise
        finally:
            # Every job is done even if finishing one fails: no waiting thread may spin.
            for job in batch:
                job.done = True
            shown: dict[int, tuple[object, list[tuple[int, str]]]] = {}
            for job in batch:
                for folder, uid, key in self._finish(job):
                    shown.setdefault(id(folder), (folder, []))[1].append((uid, key))
            for folder, delivered in shown.values():
                folder.publish(delivered)

    def _deliver(self, jobs: list[Job]) -> None:
        """Link every message into its recipients' folders, one batch per folder."""
        by_folder: dict[int, tuple[object, list[tuple[Job, str]]]] = {}
        for job in jobs:
            for address, folder in job.folders:
                by_folder.setdefault(id(folder), (folder, []))[1].append((job, address))
        for n, (folder, entries) in enumerate(by_folder.values()):
            if n:
                crash_point("delivery.next_folder")
            try:
                results = folder.deliver_links(
                    [(j.message.source, j.message.size) for j, _ in entries]
                )
            except StoreError as e:
                results = [e] * len(entries)
            for (job, address), result in zip(entries, results, strict=True):
                if isinstance(result, StoreError):
                    if job.error is None:
                        job.error = result
                else:
                    job.delivered.append((address, folder, *result))

    @staticmethod
    def _finish(job: Job) -> list[tuple[object, int, str]]:
        """Withdraw the copies of a failed message and drop its file; return the copies to
        show, ``(folder, uid, key)`` (the batch's copies in one folder are shown together)."""
        if job.error is not None:
            for _, folder, _, key in job.delivered:
                folder.withdraw(key)
            job.delivered = []
        job.message.discard()
        return [(folder, uid, key) for _, folder, uid, key in job.delivered]
