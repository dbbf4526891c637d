"""Fault injection: the table of faults the protocols consult at each step, and how one acts.

A ``Fault`` says: at this protocol's step (``smtp``: ``connect``, ``mail``, ``rcpt``, ``data``;
``pop3`` and ``imap``: ``login``, ``command``), for the next ``times`` occurrences (None: until
cleared) whose subject matches ``match``, wait ``delay`` seconds, then either close the
connection (``drop``), send ``reply`` instead of the normal answer, or, with neither, carry on
normally (pure latency).  The subject is the MAIL/RCPT argument (with the address) for
``mail``/``rcpt`` and ``data``, the client's IP for ``connect``, the user name for ``login``,
and the command name, upper-cased (``RETR``, ``FETCH``, ``UID FETCH``), for ``command``.

Replies: SMTP's is the whole reply line (``451 4.3.0 later``), POP3's too (``-ERR ...``); IMAP's
is the tagged reply after the tag (``NO ...``, ``BAD ...``, or ``OK ...``).  A POP3 or IMAP fault
with no reply, no drop and no delay answers ``DEFAULT_REPLIES``.

The table lives in ``ServerContext.faults`` (None in production, where no step costs more than one
attribute test) and is shared by the test thread that adds faults and the reactor thread that
takes them, hence the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

#: The steps each protocol can fail at.
STEPS = {
    "smtp": ("connect", "mail", "rcpt", "data"),
    "pop3": ("login", "command"),
    "imap": ("login", "command"),
}

#: The reply of a POP3 or IMAP fault given neither reply, drop nor delay, by (protocol, step).
DEFAULT_REPLIES = {
    ("pop3", "login"): "-ERR [SYS/TEMP] injected failure",
    ("pop3", "command"): "-ERR [SYS/TEMP] injected failure",
    ("imap", "login"): "NO [AUTHENTICATIONFAILED] injected failure",
    ("imap", "command"): "NO [UNAVAILABLE] injected failure",
}

#: How a reply must begin, for the protocols whose replies the fault sends as they are.
_REPLY_STARTS = {"pop3": ("+OK", "-ERR"), "imap": ("OK", "NO", "BAD")}


@dataclass(eq=False)
class Fault:
    """One injected fault; ``hits`` counts how often it acted, ``times`` what is left."""

    protocol: str
    step: str
    reply: str | None = None
    #: Substring (case-insensitive) of the step's subject, or a callable(subject) -> bool.
    match: str | Callable[[str], bool] | None = None
    times: int | None = 1
    drop: bool = False
    delay: float = 0.0
    hits: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        """Refuse a fault that names an unknown step or would do nothing."""
        if self.step not in STEPS.get(self.protocol, ()):
            known = ", ".join(f"{p}: {'/'.join(s)}" for p, s in STEPS.items())
            raise ValueError(f"unknown fault step {self.protocol!r} {self.step!r} ({known})")
        if self.reply is None and not self.drop and self.delay <= 0:
            self.reply = DEFAULT_REPLIES.get((self.protocol, self.step))
            if self.reply is None:
                raise ValueError("a fault needs a reply, drop=True or a delay")
        starts = _REPLY_STARTS.get(self.protocol)
        if starts and self.reply is not None:
            if self.reply.split(" ", 1)[0] not in starts:
                raise ValueError(f"a {self.protocol} fault reply starts with {' or '.join(starts)}")
            if "\r" in self.reply or "\n" in self.reply:
                raise ValueError(f"a {self.protocol} fault reply is one line")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1 (or None: until cleared)")
        if self.delay < 0:
            raise ValueError("delay must not be negative")

    def matches(self, subject: str) -> bool:
        """Does this fault apply to ``subject``?"""
        if self.match is None:
            return True
        if callable(self.match):
            return bool(self.match(subject))
        return self.match.lower() in subject.lower()


class FaultTable:
    """The faults in force, in the order they were added; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        """Put ``fault`` in force and return it."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()

    def active(self) -> list[Fault]:
        """The faults still in force."""
        with self._lock:
            return list(self._faults)

    def take(self, protocol: str, step: str, subject: str = "") -> Fault | None:
        """The first fault for this step and subject, counted as used once; None if none."""
        with self._lock:
            for fault in self._faults:
                if fault.protocol == protocol and fault.step == step and fault.matches(subject):
                    fault.hits += 1
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    return fault
        return None


def act(
    fault: Fault,
    send: Callable[[str], None],
    hang_up: Callable[[], None],
    proceed: Callable[[], object],
    clock: object = None,
) -> Deferred | None:
    """Carry out ``fault``: after its delay, ``hang_up()``, ``send(reply)`` or ``proceed()``.

    Return a Deferred when there is a delay (firing with what ``proceed`` returned, if it ran),
    else None: the session waits for it before reading further commands."""

    go = partial(outcome, fault, send, hang_up, proceed)
    if fault.delay > 0:
        if clock is None:
            from twisted.internet import reactor as clock
        return deferLater(clock, fault.delay, go)
    result = go()
    return result if isinstance(result, Deferred) else None


def outcome(
    fault: Fault, send: Callable[[str], None], hang_up: Callable[[], None], proceed: Callable
) -> object:
    """What ``fault`` does once its delay is over: ``hang_up()``, ``send(reply)``, or else
    return ``proceed()``."""
    if fault.drop:
        hang_up()
        return None
    if fault.reply is not None:
        send(fault.reply)
        return None
    return proceed()
