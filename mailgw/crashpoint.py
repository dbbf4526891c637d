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
    # SMTP delivery (and IMAP-independent delivery by ``mailgw deliver``): the group commit.
    "delivery.file_written": "message file written in tmp/, not yet fsync'd",
    "delivery.file_synced": "message file fsync'd, not yet linked anywhere",
    "delivery.linked": "hard link(s) in new/, index line not yet written",
    "delivery.indexed": "index line appended and fsync'd, new/ not yet fsync'd",
    "delivery.dir_synced": "new/ fsync'd, reply not yet sent",
    "delivery.next_folder": "first recipient's folder committed, the next not yet",
    "delivery.replied": "250 written to the transport",
    # IMAP APPEND (and COPY, which appends to the target).
    "append.file_synced": "appended file fsync'd in tmp/, no UID yet",
    "append.indexed": "UID line appended and fsync'd, file still in tmp/",
    "append.renamed": "file renamed into new/ or cur/, directory not yet fsync'd",
    # Flag changes (IMAP STORE, POP3 and IMAP marking messages seen).
    "flags.renamed": "file renamed to its new flags, cur/ not yet fsync'd",
    # Expunge (IMAP EXPUNGE, MOVE's removal, POP3 QUIT deletions).
    "expunge.unlinked": "one message file unlinked, the others and the fsync not yet",
    # Index compaction (after an expunge leaves mostly dead lines).
    "compact.written": "compacted index written to its temp file and fsync'd, not renamed",
    # Outbound queue.
    "queue.enqueued": "queue entry written, directory not yet fsync'd",
    "queue.attempt_recorded": "delivery attempt recorded in the entry",
    "queue.removed": "delivered entry unlinked, directory not yet fsync'd",
    "bounce.delivered": "bounce delivered to the sender, queue entry not yet removed",
    # User database (``mailgw user add``, ``passwd``, ``delete``).
    "passwd.temp_written": "new passwd-file written to its temp file, not yet renamed",
    "passwd.renamed": "new passwd-file renamed into place, directory not yet fsync'd",
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
