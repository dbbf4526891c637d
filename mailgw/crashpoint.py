"""Test-only crash points: SIGKILL this process at one named durable step of a write path.

Set ``MAILGW_CRASH_AT`` to a step name from ``STEPS`` (optionally ``NAME:N`` for the Nth time
the step is reached, default the first) before the process starts; ``crash_point(name)`` then
kills the process with SIGKILL exactly there, after writing ``mailgw crash point: NAME`` to
stderr so that a test can tell the crash happened where it asked.  The variable is read once,
at import; unset, ``crash_point`` is an empty function.  An unknown step name is refused at
import (a typo must not silently test nothing).

The steps are listed here, in the order each write path passes them, so that a test can run
every path once per step; ``tests/test_crash_points.py`` does, and prints the table.
"""

from __future__ import annotations

import os
import signal

#: Every durable step, by write path: name -> what has happened when the process dies there.
STEPS: dict[str, str] = {
    # SMTP delivery (and ``mailgw deliver``): the group commit, per recipient folder.
    "delivery.file_written": "message file written in the spool (DATA/tmp), not yet fsync'd",
    "delivery.file_synced": "message file fsync'd in the spool, not yet linked into any folder",
    "delivery.linked": "hard link(s) made in new/ (not fsync'd), no index line yet",
    "delivery.indexed": "index line(s) appended and fsync'd, new/ not yet fsync'd",
    "delivery.dir_synced": "new/ fsync'd: this folder's copy durable; next folder, reply not yet",
    "delivery.next_folder": "one recipient's folder committed, the next one not yet touched",
    "delivery.replied": "250 handed to the transport, not yet sent; spool file removed",
    # IMAP APPEND (and COPY and MOVE, which append each message to the target in turn).
    "append.file_synced": "message file written and fsync'd in the folder's tmp/, no UID yet",
    "append.indexed": "UID line appended and fsync'd, file still in tmp/",
    "append.renamed": "file renamed into new/ or cur/, that directory not yet fsync'd",
    "append.dir_synced": "new/ or cur/ fsync'd: the message durable; not yet answered",
    # Flag changes (IMAP STORE, and FETCH of a body, which sets \\Seen); a new keyword is first
    # added to the folder's keyword table (dovecot-keywords).
    "flags.renamed": "file renamed to its new flags in cur/, directories not yet fsync'd",
    "flags.dir_synced": "cur/ (and new/) fsync'd: the new flags durable; not yet answered",
    "keywords.written": "keyword table with a new keyword fsync'd in its temp file, not renamed",
    "keywords.renamed": "keyword table renamed into place, no message renamed to use it yet",
    # IMAP SELECT claiming \\Recent: messages moved from new/ to cur/, flags unchanged.
    "recent.moved": "one message renamed from new/ to cur/, the others and the fsync not yet",
    "recent.dir_synced": "new/ and cur/ fsync'd after moving the claimed messages",
    # Expunge (IMAP EXPUNGE and CLOSE, MOVE's removal, POP3 QUIT deletions).
    "expunge.unlinked": "one message file unlinked, the others and the fsync not yet",
    "expunge.dir_synced": "the unlinked files' directories fsync'd; index not compacted yet",
    # Index compaction (when an expunge or scan leaves dead lines outnumbering live ones).
    "compact.written": "compacted index written and fsync'd in its temp file, not renamed",
    "compact.renamed": "compacted index renamed into place, the folder not yet fsync'd",
    # The modseq index (mailgw-modseq), in every store write path above: a change's modseq is
    # recorded before the change is made (an added message's once it has its UID).
    "modseq.created": "modseq index of a folder that had none linked into place, dir not fsync'd",
    "modseq.logged": "change's modseq line appended and fsync'd, the change itself not yet made",
    "modseq.compact_written": "compacted modseq index fsync'd in its temp file, not renamed",
    "modseq.compact_renamed": "compacted modseq index renamed into place, dir not yet fsync'd",
    # Outbound queue: enqueue (submission to another domain, a bounce to a remote sender).
    "queue.message_written": "message written and fsync'd in queue/tmp/, no metadata yet",
    "queue.metadata_written": "metadata written and fsync'd in queue/tmp/, nothing in msg/ yet",
    "queue.message_renamed": "message renamed into msg/, its metadata not (an incomplete entry)",
    "queue.metadata_renamed": "metadata renamed into msg/ (the commit), msg/ not yet fsync'd",
    "queue.enqueued": "msg/ fsync'd: the entry durable; the submission's 250 not yet sent",
    # Outbound queue: an attempt recorded (a temporary failure, or some recipients accepted).
    "queue.attempt_written": "new metadata fsync'd in its temp file in msg/, not renamed",
    "queue.attempt_renamed": "new metadata renamed over the old, msg/ not yet fsync'd",
    "queue.attempt_recorded": "msg/ fsync'd: the attempt durable",
    # Outbound queue: an entry removed (all delivered, bounced, or ``mailgw queue delete``).
    "queue.metadata_unlinked": "metadata unlinked (the entry gone), its message file not yet",
    "queue.message_unlinked": "message file unlinked too, msg/ not yet fsync'd",
    "queue.removed": "msg/ fsync'd: the removal durable",
    # Bounce of recipients refused for good (or expired), to a local sender's INBOX.
    "bounce.recorded": "pending bounce durable in the entry, its recipients dropped; not sent",
    "bounce.delivered": "bounce in the sender's INBOX (or queued), pending bounce not cleared",
    # User database (``mailgw user add``, ``passwd``, ``delete``).
    "passwd.temp_written": "new passwd-file written and fsync'd in its temp file, not renamed",
    "passwd.renamed": "new passwd-file renamed into place, directory not yet fsync'd",
    "passwd.dir_synced": "directory fsync'd: the change durable; lock not yet released",
}

_ENV = "MAILGW_CRASH_AT"


def _target() -> tuple[str, int]:
    value = os.environ.get(_ENV, "")
    if not value:
        return "", 0
    name, _, count = value.partition(":")
    if name not in STEPS:
        raise RuntimeError(f"{_ENV}={value!r}: no such crash point (see mailgw.crashpoint.STEPS)")
    return name, int(count or 1)


_step, _remaining = _target()


def _crash_if_reached(step: str) -> None:
    """Kill the process if ``step`` is the armed step reached for the armed time."""
    global _remaining
    if step != _step:
        return
    _remaining -= 1
    if _remaining == 0:
        os.write(2, f"mailgw crash point: {step}\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)


def _ignore(step: str) -> None:
    """No crash point is armed."""


#: ``crash_point(step)``: die here if ``MAILGW_CRASH_AT`` names ``step``; otherwise nothing.
crash_point = _crash_if_reached if _step else _ignore
