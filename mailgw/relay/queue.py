"""The durable outbound queue: messages waiting for delivery to another mail server.

Layout under ``queue_dir`` (``DATA/queue``)::

    tmp/            files being written, named after the writing process (a dead process's,
                    or any an hour old, are a crash's left-overs, removed at open)
    msg/<id>.eml    the message, exactly the bytes given to ``enqueue`` (CRLF line ends)
    msg/<id>.json   its metadata: sender, recipients still to deliver, times, attempts, errors

``queue_dir`` itself is flock'd around every change, so processes (the server, ``mailgw queue``)
and threads never see or make a half-done change.  A metadata file rewritten by root (``mailgw
queue flush`` run as root) is given to the owner of ``msg/``, so the server can still read it.

``enqueue`` writes and fsyncs the message, then the metadata, each in ``tmp/`` renamed into
``msg/``, then fsyncs ``msg/``: once it returns, the message survives a crash.  A ``.eml``
without its ``.json`` is an enqueue that did not finish (its caller got no success) and is
removed when a queue is opened.  Metadata is rewritten atomically (temp file, fsync, rename,
fsync of the directory); a rewrite's temp file (``msg/.<id>.json.*.tmp``) left by a crash is
removed when a queue is opened.  Removal unlinks the metadata first (the commit point), then
the message.  Each of these steps is a crash point (``mailgw.crashpoint``, ``queue.*``).

Recipients given up on (``fail_recipients``) can leave a ``PendingBounce`` in the entry: the
bounce decided but not yet known to be delivered, so that a crash neither loses it nor, once
the caller has delivered it, makes it go twice (see ``mailgw.relay.scheduler``).

The queue is synchronous and thread-safe, and imports nothing of Twisted: the server calls it
in a thread.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from mailgw.crashpoint import crash_point
from mailgw.durable import fsync_dir, process_gone, replace_file, write_all

#: Mode of the queue's files and directories.
FILE_MODE = 0o600
DIR_MODE = 0o700

#: Files in tmp/ older than this are left-overs of a crash whatever process they name (the
#: pid may have been reused); younger ones only if their process is gone.
STALE_TMP_SECONDS = 3600

#: A file in tmp/: ``<id>.<pid>.eml`` or ``<id>.<pid>.json``.
_TMP_NAME = re.compile(r"^[0-9a-f-]+\.(\d+)\.(?:eml|json)$")

#: A message being queued stays in memory up to this many octets, then goes to its file.
MEMORY_SPOOL = 256 * 1024

#: A queue id: what ``enqueue`` makes (hex time stamp, '-', random hex); nothing else is a path.
_ID = re.compile(r"^[0-9a-f]{8,16}-[0-9a-f]{16}$")


class QueueError(Exception):
    """The queue cannot do what was asked (disk full, permission denied, unreadable metadata)."""


class NoSuchEntry(QueueError):
    """No queue entry has this id (never had, or delivered, bounced or deleted since)."""


@dataclass
class PendingBounce:
    """A bounce to the sender decided for some recipients, not yet known to be delivered."""

    #: {recipient: reply or error text} of the recipients it reports (no longer in the entry).
    failures: dict[str, str]
    #: Did they fail by staying in the queue too long (rather than being refused)?
    expired: bool
    #: The bounce's Message-ID, by which a delivered copy is recognised after a crash.
    message_id: str
    #: For a local sender: {user: that INBOX's UIDNEXT before delivery} (a delivered copy has a
    #: UID at least that); empty for a sender elsewhere.
    marks: dict[str, int] = field(default_factory=dict)
    #: For a sender elsewhere: the id the bounce's own queue entry gets; else None.
    queue_id: str | None = None


@dataclass
class QueueEntry:
    """One queued message, as its metadata says; a snapshot, not a live view."""

    #: The queue id (also in the file names, and in the submission's 250 reply).
    id: str
    #: The envelope sender ('' for the null sender of a bounce: never bounce it).
    sender: str
    #: Recipients not yet delivered (nor failed for good), in the order given.
    recipients: list[str]
    #: When the message was enqueued (the queue's clock, seconds since the epoch).
    created: float
    #: Delivery attempts recorded so far.
    attempts: int = 0
    #: When the next attempt is due (``created`` at first).
    next_attempt: float = 0.0
    #: The last failure, in words ('recipient: reply' joined by '; '), or None.
    last_error: str | None = None
    #: The last failure of each pending recipient that has failed: {recipient: reply text}.
    errors: dict[str, str] = field(default_factory=dict)
    #: A bounce not yet known to be delivered, or None.
    bounce: PendingBounce | None = None


class OutboundQueue:
    """The messages in ``queue_dir`` waiting for delivery; ``clock()`` gives the time."""

    def __init__(self, queue_dir: Path, clock: Callable[[], float] = time.time) -> None:
        """Use (and create) ``queue_dir``; remove incomplete enqueues and temp files."""
        self.queue_dir = Path(queue_dir)
        self.clock = clock
        self.msg_dir = self.queue_dir / "msg"
        self.tmp_dir = self.queue_dir / "tmp"
        self._thread_lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []
        try:
            for directory in (self.queue_dir, self.msg_dir, self.tmp_dir):
                directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as error:
            raise QueueError(f"cannot create the queue in {self.queue_dir}: {error}") from None
        self._recover()

    # -- adding -------------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Have ``listener(queue_id)`` called by ``announce`` (e.g. the relay, to send at once)."""
        self._listeners.append(listener)

    def announce(self, queue_id: str) -> None:
        """Tell the listeners that ``queue_id`` was accepted for good (its 250 is on the way)."""
        for listener in list(self._listeners):
            listener(queue_id)

    def enqueue(
        self, data: bytes, sender: str, recipients: list[str], entry_id: str | None = None
    ) -> str:
        """Durably queue ``data`` for ``recipients``; return the new entry's id.

        ``entry_id`` is the id to give it (from ``new_id``; default a new one).  Once this
        returns, the message and its metadata are fsync'd and survive a crash.  Raise
        QueueError (and leave nothing behind) if they cannot be written, or if an entry
        ``entry_id`` exists."""
        message = self.incoming(entry_id)
        message.write(data)
        return message.commit(sender, recipients)

    def incoming(self, entry_id: str | None = None) -> QueuedMessage:
        """A message to be written piece by piece, then queued by its ``commit``.

        For the SMTP server: ``write`` costs no file system call for a typical message (it
        stays in memory up to ``MEMORY_SPOOL`` octets), ``commit`` is called in a thread.
        ``entry_id`` (see ``enqueue``) may be one whose enqueue a crash cut short: its files in
        ``tmp/`` are removed first (blocking then)."""
        message = QueuedMessage(self, entry_id)
        if entry_id is not None:
            try:
                for path in (message.path, message.metadata_path):
                    path.unlink(missing_ok=True)
            except OSError as error:
                raise QueueError(f"cannot queue the message: {error}") from None
        return message

    def new_id(self) -> str:
        """A fresh entry id (for ``enqueue(..., entry_id=)``)."""
        return f"{int(self.clock() * 1000):x}-{os.urandom(8).hex()}"

    def has(self, entry_id: str) -> bool:
        """Is ``entry_id`` queued (its metadata there)?"""
        return self._json(entry_id).exists()

    def _commit(self, message: QueuedMessage, sender: str, recipients: list[str]) -> str:
        """Queue the written ``message``: see ``QueuedMessage.commit``."""
        if not recipients:
            message.abort()
            raise ValueError("a queue entry needs at least one recipient")
        now = self.clock()
        entry_id = message.entry_id
        entry = QueueEntry(entry_id, sender, list(recipients), now, next_attempt=now)
        eml_tmp = message.path
        json_tmp = message.metadata_path
        try:
            message.write_out()
            crash_point("queue.message_written")
            _write_new(json_tmp, _encode(entry))
            crash_point("queue.metadata_written")
            with self._locked():
                if self._json(entry_id).exists():
                    raise FileExistsError(f"queue entry {entry_id} exists")
                os.rename(eml_tmp, self._eml(entry_id))
                crash_point("queue.message_renamed")
                os.rename(json_tmp, self._json(entry_id))
                crash_point("queue.metadata_renamed")
                fsync_dir(self.msg_dir)
                crash_point("queue.enqueued")
        except FileExistsError as error:
            message.abort()
            json_tmp.unlink(missing_ok=True)
            raise QueueError(f"cannot queue the message: {error}") from None
        except OSError as error:
            for path in (eml_tmp, json_tmp, self._json(entry_id), self._eml(entry_id)):
                path.unlink(missing_ok=True)
            raise QueueError(f"cannot queue the message: {error}") from None
        return entry_id

    # -- reading ------------------------------------------------------------------------------

    def entries(self) -> list[QueueEntry]:
        """Every entry, oldest first."""
        found = []
        for entry_id in self._ids():
            try:
                found.append(self.get(entry_id))
            except NoSuchEntry:
                continue  # delivered or deleted while we listed
        return sorted(found, key=lambda entry: (entry.created, entry.id))

    def due(self, now: float) -> list[QueueEntry]:
        """The entries whose next attempt is due at ``now``, and those with a pending bounce
        (whenever due), the longest-waiting first."""
        ready = [
            entry
            for entry in self.entries()
            if entry.next_attempt <= now or entry.bounce is not None
        ]
        return sorted(ready, key=lambda entry: (entry.next_attempt, entry.id))

    def get(self, entry_id: str) -> QueueEntry:
        """The entry ``entry_id``; raise NoSuchEntry (also for a malformed id)."""
        path = self._json(entry_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NoSuchEntry(f"no queue entry {entry_id}") from None
        except OSError as error:
            raise QueueError(f"cannot read queue entry {entry_id}: {error}") from None
        return _decode(entry_id, text)

    def open_message(self, entry_id: str) -> BinaryIO:
        """The message of ``entry_id``, open for reading in binary; raise NoSuchEntry."""
        path = self._eml(entry_id)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise NoSuchEntry(f"no queue entry {entry_id}") from None
        except OSError as error:
            raise QueueError(f"cannot read queue entry {entry_id}: {error}") from None

    # -- changing -----------------------------------------------------------------------------

    def record_attempt(
        self,
        entry_id: str,
        failed: dict[str, str],
        delivered: list[str],
        next_attempt: float | None,
    ) -> QueueEntry | None:
        """Durably record one delivery attempt; return the updated entry, or None if removed.

        ``delivered``: recipients done with for good — accepted by the next hop, or failed
        permanently (and bounced by the caller); they are removed from the entry.
        ``failed``: {recipient: reply text} of recipients that failed temporarily and stay.
        ``next_attempt``: when to try the remaining recipients again; None means never (the
        caller gave up, e.g. on expiry, and bounced them): the entry is removed.  The entry is
        removed too when no recipient is left (and no bounce is pending).  Raise NoSuchEntry
        if it is gone."""
        with self._locked():
            entry = self.get(entry_id)
            done = {address.lower() for address in delivered}
            entry.recipients = [r for r in entry.recipients if r.lower() not in done]
            entry.errors = {
                r: failed.get(r, entry.errors.get(r, ""))
                for r in entry.recipients
                if r in failed or r in entry.errors
            }
            entry.attempts += 1
            if failed:
                entry.last_error = "; ".join(f"{r}: {text}" for r, text in failed.items())
            if (not entry.recipients or next_attempt is None) and entry.bounce is None:
                self._remove(entry_id)
                return None
            if next_attempt is not None:
                entry.next_attempt = next_attempt
            self._rewrite(entry, ("queue.attempt_written", "queue.attempt_renamed"))
            crash_point("queue.attempt_recorded")
            return entry

    def fail_recipients(
        self, entry_id: str, recipients: list[str], bounce: PendingBounce | None
    ) -> QueueEntry | None:
        """Durably give up on ``recipients`` (failed for good), recording ``bounce`` if given
        (a bounce pending already is kept).

        The entry is removed if nothing is left (no recipient, no bounce); return it as it is
        now, or None then.  Raise QueueError if a bounce is pending already (finish it with
        ``bounce_done`` first), NoSuchEntry if the entry is gone."""
        with self._locked():
            entry = self.get(entry_id)
            if bounce is not None and entry.bounce is not None:
                raise QueueError(f"queue entry {entry_id} has a bounce pending already")
            done = {address.lower() for address in recipients}
            entry.recipients = [r for r in entry.recipients if r.lower() not in done]
            entry.errors = {r: text for r, text in entry.errors.items() if r in entry.recipients}
            if bounce is not None:
                entry.bounce = bounce
            if not entry.recipients and entry.bounce is None:
                self._remove(entry_id)
                return None
            self._rewrite(entry)
            crash_point("bounce.recorded" if bounce is not None else "")
            return entry

    def bounce_done(self, entry_id: str) -> QueueEntry | None:
        """Durably forget the entry's pending bounce (it was delivered); remove the entry if no
        recipient is left.  Return the entry, or None if removed; raise NoSuchEntry."""
        with self._locked():
            entry = self.get(entry_id)
            entry.bounce = None
            if not entry.recipients:
                self._remove(entry_id)
                return None
            self._rewrite(entry)
            return entry

    def reschedule(self, entry_id: str, when: float) -> QueueEntry:
        """Durably make ``entry_id`` due at ``when``; return it; raise NoSuchEntry."""
        with self._locked():
            entry = self.get(entry_id)
            entry.next_attempt = when
            self._rewrite(entry)
            return entry

    def flush(self, when: float | None = None) -> int:
        """Make every entry due at ``when`` (default: now); return how many there are.

        A running server's scheduler sees this at its next rescan of the queue directory."""
        when = self.clock() if when is None else when
        count = 0
        for entry_id in self._ids():
            try:
                self.reschedule(entry_id, when)
            except NoSuchEntry:
                continue
            count += 1
        return count

    def delete(self, entry_id: str) -> None:
        """Remove ``entry_id`` and its message, durably, without a bounce; raise NoSuchEntry."""
        with self._locked():
            if not self._json(entry_id).exists():
                raise NoSuchEntry(f"no queue entry {entry_id}")
            self._remove(entry_id)

    # -- inside -------------------------------------------------------------------------------

    def _eml(self, entry_id: str) -> Path:
        """The message file of ``entry_id`` (validated: an id is never a path)."""
        if not _ID.match(entry_id):
            raise NoSuchEntry(f"no queue entry {entry_id!r} (not a queue id)")
        return self.msg_dir / f"{entry_id}.eml"

    def _json(self, entry_id: str) -> Path:
        """The metadata file of ``entry_id`` (validated)."""
        return self._eml(entry_id).with_suffix(".json")

    def _ids(self) -> list[str]:
        """The ids that have metadata (complete entries)."""
        try:
            names = os.listdir(self.msg_dir)
        except OSError as error:
            raise QueueError(f"cannot list the queue: {error}") from None
        return [name[:-5] for name in names if name.endswith(".json") and _ID.match(name[:-5])]

    def _rewrite(self, entry: QueueEntry, crash_steps: tuple[str, str] = ("", "")) -> None:
        """Atomically and durably replace the metadata of ``entry`` (``msg/`` may be large and
        ``_recover`` removes temp files left by a crash, so the write does not sweep)."""
        path = self._json(entry.id)
        try:
            data = _encode(entry)
            replace_file(path, data, FILE_MODE, self._give_to_owner, crash_steps, sweep=False)
        except OSError as error:
            raise QueueError(f"cannot update queue entry {entry.id}: {error}") from None

    def _give_to_owner(self, fd: int) -> None:
        """Run as root, make the new file ``fd`` belong to the owner of ``msg/``."""
        if os.geteuid() == 0:
            owner = os.stat(self.msg_dir)
            os.fchown(fd, owner.st_uid, owner.st_gid)

    def _remove(self, entry_id: str) -> None:
        """Unlink the metadata (the commit point), then the message; fsync the directory."""
        try:
            self._json(entry_id).unlink(missing_ok=True)
            crash_point("queue.metadata_unlinked")
            self._eml(entry_id).unlink(missing_ok=True)
            crash_point("queue.message_unlinked")
            fsync_dir(self.msg_dir)
            crash_point("queue.removed")
        except OSError as error:
            raise QueueError(f"cannot remove queue entry {entry_id}: {error}") from None

    def _recover(self) -> None:
        """Remove incomplete enqueues (a .eml without .json), metadata rewrites cut short by
        a crash, and files in tmp/ of processes that died (or an hour old)."""
        with self._locked():
            try:
                names = set(os.listdir(self.msg_dir))
                for name in names:
                    stem, dot, suffix = name.rpartition(".")
                    if suffix == "eml" and f"{stem}.json" not in names:
                        os.unlink(self.msg_dir / name)
                    elif suffix == "tmp" and name.startswith("."):
                        os.unlink(self.msg_dir / name)  # a metadata rewrite cut short
                limit = time.time() - STALE_TMP_SECONDS
                for name in os.listdir(self.tmp_dir):
                    writer = _TMP_NAME.match(name)
                    if writer is not None and process_gone(int(writer.group(1))):
                        os.unlink(self.tmp_dir / name)
                    elif os.stat(self.tmp_dir / name).st_mtime < limit:
                        os.unlink(self.tmp_dir / name)
                fsync_dir(self.msg_dir)
            except OSError as error:
                raise QueueError(f"cannot clean the queue: {error}") from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclude other threads and other processes from changing the queue."""
        with self._thread_lock:
            try:
                fd = os.open(self.queue_dir, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as error:
                raise QueueError(f"cannot lock the queue: {error}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)


class QueuedMessage:
    """A message being written for the queue (from ``OutboundQueue.incoming``).

    It stays in memory up to ``MEMORY_SPOOL`` octets, then goes on in a file in ``tmp/``;
    ``commit`` makes it a durable queue entry, ``abort`` throws it away."""

    def __init__(self, queue: OutboundQueue, entry_id: str | None = None) -> None:
        """Start an empty message for ``queue``, to be entry ``entry_id`` (default a new id)."""
        self._queue = queue
        #: The id the entry will have.
        self.entry_id = queue.new_id() if entry_id is None else entry_id
        queue._eml(self.entry_id)  # validate: an id is never a path
        #: The message file in tmp/ (made when the message outgrows memory, or at commit).
        self.path = queue.tmp_dir / f"{self.entry_id}.{os.getpid()}.eml"
        #: Its metadata's file in tmp/, until both are renamed into msg/.
        self.metadata_path = queue.tmp_dir / f"{self.entry_id}.{os.getpid()}.json"
        self.size = 0
        self._spool: bytearray | None = bytearray()
        self._fd: int | None = None
        self._done = False

    def write(self, data: bytes) -> None:
        """Append ``data`` (CRLF line ends); raise QueueError (the message is then aborted)."""
        if self._done:
            raise QueueError("message already queued or aborted")
        try:
            if self._spool is not None:
                self._spool += data
                if len(self._spool) > MEMORY_SPOOL:
                    self._spill()
            else:
                write_all(self._fd, data)
        except OSError as error:
            self.abort()
            raise QueueError(f"cannot write the message: {error}") from None
        self.size += len(data)

    def commit(self, sender: str, recipients: list[str]) -> str:
        """Durably queue the message for ``recipients``; return its id (blocks: use a thread).

        Raise QueueError, or ValueError without recipients; nothing is then left behind."""
        if self._done:
            raise QueueError("message already queued or aborted")
        self._done = True
        return self._queue._commit(self, sender, recipients)

    def write_out(self) -> None:
        """Write what is in memory to the file and fsync it; raise OSError."""
        if self._spool is not None:
            self._spill()
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None

    def abort(self) -> None:
        """Throw the message away (harmless once committed or aborted)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._spool = None
        self.path.unlink(missing_ok=True)  # once committed, it is in msg/ under another name
        self._done = True

    def _spill(self) -> None:
        """Create the file and move what is in memory to it; raise OSError."""
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        write_all(self._fd, bytes(self._spool))
        self._spool = None


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data``, fsync'd; raise OSError (removing the file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _encode(entry: QueueEntry) -> bytes:
    """The metadata file's content."""
    return json.dumps(asdict(entry), indent=1, sort_keys=True).encode("utf-8") + b"\n"


def _decode(entry_id: str, text: str) -> QueueEntry:
    """Parse metadata; raise QueueError when it is not what ``_encode`` writes."""
    try:
        values = json.loads(text)
        entry = QueueEntry(
            id=entry_id,
            sender=str(values["sender"]),
            recipients=[str(r) for r in values["recipients"]],
            created=float(values["created"]),
            attempts=int(values["attempts"]),
            next_attempt=float(values["next_attempt"]),
            last_error=values.get("last_error"),
            errors={str(k): str(v) for k, v in values.get("errors", {}).items()},
            bounce=_decode_bounce(values.get("bounce")),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise QueueError(f"queue entry {entry_id} has unreadable metadata: {error}") from None
    return entry


def _decode_bounce(values: dict | None) -> PendingBounce | None:
    """The pending bounce of metadata (absent from entries that never had one)."""
    if values is None:
        return None
    queue_id = values.get("queue_id")
    return PendingBounce(
        failures={str(k): str(v) for k, v in values["failures"].items()},
        expired=bool(values["expired"]),
        message_id=str(values["message_id"]),
        marks={str(k): int(v) for k, v in values.get("marks", {}).items()},
        queue_id=None if queue_id is None else str(queue_id),
    )
