"""Where an IMAP command ends: its line plus the literals it announces (RFC 3501, RFC 7888).

``CommandAssembler`` is fed the client's bytes in chunks of any size and returns events: a whole
command ready for the parser, a synchronising literal accepted (the session sends ``+``), or a
command refused for a limit.  Lines end in CRLF or a bare LF (as Dovecot accepts).  A line ending
in ``{n}`` (synchronising) or ``{n+}`` (LITERAL+) continues after n octets; the ``~{n}`` of
literal8 is framed the same way.  A malformed size (``{-1}``, ``{abc}``, 21 digits) is no literal
here: the line is a whole command and the parser answers it.

Work is linear in the input: literal octets are kept as the chunks they came in and a line end
is searched for only in new data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Most literals in one command (MULTIAPPEND, long lists of literal strings).
MAX_LITERALS = 1000
#: Room for a command's lines beyond its literal limit when ``max_command`` is not given.
LINES_ALLOWANCE = 64
#: Longest literal announcement framed: ``~{`` + 20 digits + ``+}``.
_ANNOUNCEMENT = 25

#: ``CommandRejected.reason`` values (a literal over its limit says the limit after this).
LINE_TOO_LONG = "line too long"
COMMAND_TOO_LONG = "command too long"
TOO_MANY_LITERALS = "too many literals"
LITERAL_TOO_LARGE = "literal too large"

_LINE, _LITERAL, _SKIP_LINE, _SKIP_LITERAL, _CLOSED = range(5)


@dataclass(frozen=True)
class CommandReady:
    """A whole command: its lines with their line ends, ``{n}`` markers and literal octets."""

    data: bytes


@dataclass(frozen=True)
class ContinuationNeeded:
    """A synchronising literal was announced and accepted: the session sends ``+ ...``."""


@dataclass(frozen=True)
class CommandRejected:
    """A command refused for a limit before it was complete.

    ``data_so_far`` is the start of the command (at most ``max_line`` octets, enough for its
    tag).  When ``fatal`` (a non-synchronising literal that cannot be taken: its octets are
    already on the way) the session answers BYE and closes; the assembler then ignores all
    further input.  Otherwise the rest of the command is dropped as it arrives and the next
    command is framed normally."""

    data_so_far: bytes
    reason: str
    fatal: bool


Event = CommandReady | ContinuationNeeded | CommandRejected


def literal_announced(line: bytes) -> tuple[int, bool] | None:
    """``(size, synchronising)`` if ``line`` (without its line end) ends in ``{n}`` or
    ``{n+}`` with 1 to 20 digits, else None."""
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{", max(0, len(line) - _ANNOUNCEMENT))
    if start < 0:
        return None
    inner = line[start + 1 : -1]
    sync = not inner.endswith(b"+")
    digits = inner if sync else inner[:-1]
    if not digits or len(digits) > 20 or not digits.isdigit() or not digits.isascii():
        return None
    return int(digits), sync


class CommandAssembler:
    """Frames IMAP commands out of a byte stream, enforcing the line and literal limits.

    ``max_line`` bounds each line (without its line end); an over-long line is refused as soon
    as more than that has arrived.  ``literal_limit`` is given the command's first line (its
    tag, name and arguments up to the first literal, without the line end) and returns the
    largest literal that command may carry.  ``max_command`` bounds the whole command (by
    default the first literal's limit plus ``LINES_ALLOWANCE`` lines) and ``max_literals``
    the number of literals in it."""

    def __init__(
        self,
        max_line: int,
        literal_limit: Callable[[bytes], int],
        max_command: int | None = None,
        max_literals: int = MAX_LITERALS,
    ) -> None:
        self.max_line = max_line
        self.literal_limit = literal_limit
        self.max_command = max_command
        self.max_literals = max_literals
        self.reset()

    def reset(self) -> None:
        """Forget everything buffered (a partial command), as after STARTTLS or COMPRESS."""
        self._state = _LINE
        self._line = bytearray()
        self._parts: list[bytes] = []
        self._size = 0
        self._literals = 0
        self._budget: int | None = self.max_command
        self._remaining = 0

    @property
    def closed(self) -> bool:
        """True after a fatal rejection: input is ignored from then on."""
        return self._state == _CLOSED

    @property
    def idle(self) -> bool:
        """True when no part of a command is buffered."""
        return self._state == _LINE and not self._line and not self._parts

    def feed(self, data: bytes) -> list[Event]:
        """Take the next chunk of input; return the events it completes, in order."""
        events: list[Event] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _CLOSED:
                break
            if state in (_LITERAL, _SKIP_LITERAL):
                take = min(self._remaining, end - pos)
                if state == _LITERAL:
                    self._parts.append(data[pos : pos + take])
                    self._size += take
                self._remaining -= take
                pos += take
                if not self._remaining:
                    self._state = _LINE if state == _LITERAL else _SKIP_LINE
                continue
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline + 1
            if state == _SKIP_LINE:
                self._line += data[pos:stop]
                del self._line[: -_ANNOUNCEMENT - 2]
            else:
                self._line += data[pos:stop]
            pos = stop
            if newline < 0:
                if state == _LINE and len(self._line) > self.max_line + 1:
                    events.append(self._reject(LINE_TOO_LONG, fatal=False, skip=True))
                continue
            if state == _SKIP_LINE:
                self._skip_line_ended()
            else:
                events.extend(self._line_ended())
        return events

    def _line_ended(self) -> list[Event]:
        line = bytes(self._line)
        self._line.clear()
        content = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if len(content) > self.max_line:
            self._line += line
            event = self._reject(LINE_TOO_LONG, fatal=False, skip=True)
            self._skip_line_ended()
            return [event]
        self._parts.append(line)
        self._size += len(line)
        announced = literal_announced(content)
        if announced is None:
            if self._budget is not None and self._size > self._budget:
                return [self._reject(COMMAND_TOO_LONG, fatal=False)]
            data = b"".join(self._parts)
            self.reset()
            return [CommandReady(data)]
        size, sync = announced
        first = self._parts[0]
        first = first[:-2] if first.endswith(b"\r\n") else first[:-1]
        limit = self.literal_limit(first)
        if self._budget is None:
            self._budget = limit + LINES_ALLOWANCE * (self.max_line + 2)
        self._literals += 1
        if self._literals > self.max_literals:
            return [self._reject(TOO_MANY_LITERALS, fatal=not sync)]
        if size > limit:
            return [self._reject(f"{LITERAL_TOO_LARGE} (at most {limit} octets)", fatal=not sync)]
        if self._size + size > self._budget:
            return [self._reject(COMMAND_TOO_LONG, fatal=not sync)]
        self._state, self._remaining = _LITERAL, size
        if not size:
            self._state = _LINE
        return [ContinuationNeeded()] if sync else []

    def _skip_line_ended(self) -> None:
        """The end of a line of a refused command: drop its non-synchronising literal too."""
        tail = bytes(self._line).rstrip(b"\r\n")
        self._line.clear()
        announced = literal_announced(tail)
        if announced is not None and not announced[1]:
            self._state, self._remaining = _SKIP_LITERAL, announced[0]
            if not announced[0]:
                self._state = _SKIP_LINE
        else:
            self.reset()

    def _reject(self, reason: str, fatal: bool, skip: bool = False) -> CommandRejected:
        """Refuse the command being framed; drop its rest (``skip``: the rest of this line)."""
        head = b"".join(self._parts[:1]) or bytes(self._line)
        event = CommandRejected(head[: self.max_line], reason, fatal)
        keep = bytes(self._line[-_ANNOUNCEMENT - 2 :]) if skip else b""
        self.reset()
        if fatal:
            self._state = _CLOSED
        elif skip:
            self._state = _SKIP_LINE
            self._line += keep
        return event
