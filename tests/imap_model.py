"""What tests/test_imap_stress.py checks every IMAP response against, written against the
protocol only (RFC 3501, with RFC 9051's optional text after a response code).

- ``parse_response``: a strict parser of the responses a client of SELECT, FETCH, STORE, APPEND,
  EXPUNGE, SEARCH, NOOP and IDLE can get; anything off the grammar is a ``ProtocolError``.
- ``Connection``: a raw socket framed into whole responses (lines with their literals).
- ``Registry``: what all clients know together: every APPENDed message's bytes, its owner (the
  only client that ever changes its flags) and the owner's history of flag states; UIDVALIDITY
  and the UIDs seen expunged.
- ``View``: one client's picture of its selected mailbox, built only from server responses, and
  checked as each one arrives.
"""

from __future__ import annotations

import re
import select
import socket
import threading
from dataclasses import dataclass, field

#: Bytes an atom may not hold (RFC 3501 atom-specials), with CTL and DEL.
ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x20)) | {0x7F}
MAX_NUMBER = 2**32 - 1
SYSTEM_FLAGS = frozenset({"\\answered", "\\flagged", "\\deleted", "\\seen", "\\draft"})
RECENT = "\\recent"
DELETED = "\\deleted"
_LITERAL_END = re.compile(rb"\{(\d{1,10})\}\Z")
_DATE_TIME = re.compile(rb'"[ 0-3]\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}"')
_SECTION = re.compile(
    rb"(|HEADER|TEXT|MIME|HEADER\.FIELDS(\.NOT)? \([^()\r\n]+\)|[1-9]\d*(\.[1-9]\d*)*(\..+)?)\Z"
)


class ProtocolError(AssertionError):
    """A response off the grammar, or one the model says cannot be right."""


@dataclass
class Response:
    """One parsed response: ``kind`` is 'tagged', 'untagged' or 'continue'; ``name`` is the
    status (OK/NO/BAD/BYE/PREAUTH) or data name (EXISTS, FETCH, SEARCH, FLAGS...)."""

    kind: str
    raw: bytes
    tag: bytes = b""
    name: str = ""
    number: int | None = None
    code: str | None = None
    code_data: object = None
    text: bytes = b""
    data: object = None


class _Cursor:
    """A position in one response, with a reader per grammar element."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, what: str) -> ProtocolError:
        return ProtocolError(f"{what} at offset {self.pos} of {self.data[:300]!r}")

    def at_end(self) -> bool:
        return self.pos == len(self.data)

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def take(self, token: bytes) -> bool:
        end = self.pos + len(token)
        if self.data[self.pos : end].upper() == token.upper():
            self.pos = end
            return True
        return False

    def expect(self, token: bytes) -> None:
        if not self.take(token):
            raise self.fail(f"expected {token!r}")

    def end(self) -> None:
        if not self.at_end():
            raise self.fail("trailing bytes")

    def number(self, nonzero: bool = False) -> int:
        match = re.compile(rb"\d+").match(self.data, self.pos)
        if not match:
            raise self.fail("expected a number")
        self.pos = match.end()
        value = int(match[0])
        if value > MAX_NUMBER or (nonzero and value == 0):
            raise self.fail(f"number {value} out of range")
        return value

    def atom(self, also_allowed: bytes = b"") -> bytes:
        start = self.pos
        while self.pos < len(self.data) and (
            self.data[self.pos] not in ATOM_SPECIALS or self.data[self.pos] in also_allowed
        ):
            self.pos += 1
        if self.pos == start:
            raise self.fail("expected an atom")
        return self.data[start : self.pos]

    def text(self, required: bool) -> bytes:
        rest = self.data[self.pos :]
        if (required and not rest) or b"\r" in rest or b"\n" in rest or b"\x00" in rest:
            raise self.fail("expected text (1*TEXT-CHAR)")
        self.pos = len(self.data)
        return rest

    def flag(self, extra: frozenset = frozenset()) -> str:
        """A flag, lower-cased: system flags and keywords alike compare case-insensitively."""
        backslash = self.take(b"\\")
        if backslash and self.take(b"*"):
            value = "\\*"
        else:
            value = ("\\" if backslash else "") + self.atom().decode("ascii").lower()
        if value in ("\\*", RECENT) and value not in extra:
            raise self.fail(f"flag {value} not allowed here")
        return value

    def flag_list(self, extra: frozenset = frozenset()) -> list[str]:
        self.expect(b"(")
        flags: list[str] = []
        while not self.take(b")"):
            if flags:
                self.expect(b" ")
            flags.append(self.flag(extra))
        if len(set(flags)) != len(flags):
            raise self.fail(f"a flag twice in {flags}")
        return flags

    def string(self) -> bytes:
        """A quoted string or a literal."""
        if self.take(b'"'):
            match = re.compile(rb'((?:[^"\\\r\n\x00]|\\["\\])*)"').match(self.data, self.pos)
            if not match:
                raise self.fail("bad quoted string")
            self.pos = match.end()
            return re.sub(rb'\\(["\\])', rb"\1", match[1])
        self.expect(b"{")
        size = self.number()
        self.expect(b"}\r\n")
        if self.pos + size > len(self.data):
            raise self.fail("literal runs past the response")
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        return value

    def nstring(self) -> bytes | None:
        return None if self.take(b"NIL") else self.string()


def parse_response(raw: bytes) -> Response:
    """Parse one whole response (its final CRLF removed); raise ProtocolError off the grammar."""
    c = _Cursor(raw)
    if c.take(b"+"):
        c.expect(b" ")
        return Response("continue", raw, text=c.text(required=False))
    if c.take(b"* "):
        return _untagged(c, raw)
    tag = c.atom(also_allowed=b"]")
    if b"+" in tag:
        raise c.fail("a tag holds no '+'")
    c.expect(b" ")
    name = c.atom().decode().upper()
    if name not in ("OK", "NO", "BAD"):
        raise c.fail(f"tagged status {name!r}")
    c.expect(b" ")
    response = Response("tagged", raw, tag=tag, name=name)
    _resp_text(c, response)
    return response


def _untagged(c: _Cursor, raw: bytes) -> Response:
    response = Response("untagged", raw)
    if c.peek() is not None and 0x30 <= c.peek() <= 0x39:
        response.number = c.number()
        c.expect(b" ")
        response.name = c.atom().decode().upper()
        if response.name in ("EXPUNGE", "FETCH") and response.number == 0:
            raise c.fail(f"{response.name} of message 0")
        if response.name == "FETCH":
            c.expect(b" ")
            response.data = _msg_att(c)
        elif response.name not in ("EXISTS", "RECENT", "EXPUNGE"):
            raise c.fail(f"unknown message data {response.name!r}")
        c.end()
        return response
    response.name = c.atom().decode().upper()
    if response.name in ("OK", "NO", "BAD", "BYE", "PREAUTH"):
        c.expect(b" ")
        _resp_text(c, response)
    elif response.name == "CAPABILITY":
        response.data = _capabilities(c)
    elif response.name == "FLAGS":
        c.expect(b" ")
        response.data = c.flag_list()
        c.end()
    elif response.name == "SEARCH":
        numbers = []
        while c.take(b" "):
            numbers.append(c.number(nonzero=True))
        c.end()
        response.data = numbers
    else:
        raise c.fail(f"unknown untagged response {response.name!r}")
    return response


def _capabilities(c: _Cursor) -> list[str]:
    names = []
    while c.take(b" "):
        names.append(c.atom().decode().upper())
    c.end()
    if "IMAP4REV1" not in names and "IMAP4REV2" not in names:
        raise c.fail("CAPABILITY without IMAP4rev1 or IMAP4rev2")
    return names


def _resp_text(c: _Cursor, response: Response) -> None:
    """["[" resp-text-code "]"] then text (RFC 9051 lets text be empty after a code)."""
    if not c.take(b"["):
        response.text = c.text(required=True)
        return
    response.code = code = c.atom().decode().upper()
    if code == "PERMANENTFLAGS":
        c.expect(b" ")
        response.code_data = c.flag_list(extra=frozenset({"\\*"}))
    elif code in ("UIDNEXT", "UIDVALIDITY", "UNSEEN"):
        c.expect(b" ")
        response.code_data = c.number(nonzero=True)
    elif code == "APPENDUID":
        c.expect(b" ")
        validity = c.number(nonzero=True)
        c.expect(b" ")
        response.code_data = (validity, c.number(nonzero=True))
    elif code == "CAPABILITY":
        rest = c.data[c.pos : c.data.index(b"]", c.pos)] if b"]" in c.data[c.pos :] else b""
        response.code_data = _capabilities(_Cursor(rest))
        c.pos += len(rest)
    elif c.take(b" "):
        match = re.compile(rb"[^\]\r\n\x00]+").match(c.data, c.pos)
        if not match:
            raise c.fail("empty response code argument")
        c.pos = match.end()
        response.code_data = match[0]
    c.expect(b"]")
    if not c.at_end():
        c.expect(b" ")
        response.text = c.text(required=False)


def _msg_att(c: _Cursor) -> dict:
    """FETCH data: {"FLAGS": [...], "UID": n, "RFC822.SIZE": n, "BODY[...]": bytes, ...}."""
    c.expect(b"(")
    items: dict = {}
    while True:
        match = re.compile(rb"[A-Za-z0-9.]+").match(c.data, c.pos)
        if not match:
            raise c.fail("expected a FETCH item name")
        c.pos = match.end()
        name = match[0].decode().upper()
        if name == "BODY" and c.take(b"["):
            end = c.data.find(b"]", c.pos)
            section = c.data[c.pos : end] if end >= 0 else b""
            if end < 0 or not _SECTION.match(section.upper()):
                raise c.fail(f"bad section {section!r}")
            c.pos = end + 1
            name = "BODY[" + section.decode().upper() + "]"
            if c.take(b"<"):
                name += f"<{c.number()}>"
                c.expect(b">")
            c.expect(b" ")
            value: object = c.nstring()
        elif name == "FLAGS":
            c.expect(b" ")
            value = c.flag_list(extra=frozenset({RECENT}))
        elif name == "UID":
            c.expect(b" ")
            value = c.number(nonzero=True)
        elif name == "RFC822.SIZE":
            c.expect(b" ")
            value = c.number()
        elif name == "INTERNALDATE":
            c.expect(b" ")
            match = _DATE_TIME.match(c.data, c.pos)
            if not match:
                raise c.fail("bad INTERNALDATE")
            c.pos = match.end()
            value = match[0]
        else:
            raise c.fail(f"unexpected FETCH item {name!r}")
        if name in items:
            raise c.fail(f"FETCH item {name} twice")
        items[name] = value
        if c.take(b")"):
            return items
        c.expect(b" ")


class Disconnected(ProtocolError):
    """The server closed the connection (or it broke) where the client did not expect it."""


class Connection:
    """A raw IMAP connection on loopback that hands out whole responses as bytes."""

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = bytearray()

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(1 << 18)
        except OSError as error:
            raise Disconnected(f"connection broken: {error!r}") from None
        if not chunk:
            raise Disconnected("the server closed the connection")
        self.buffer += chunk

    def send(self, data: bytes) -> None:
        """Send ``data`` whole."""
        try:
            self.sock.sendall(data)
        except OSError as error:
            raise Disconnected(f"send failed: {error!r}") from None

    def ready(self, timeout: float = 0.0) -> bool:
        """Is response data buffered or arriving within ``timeout`` seconds?"""
        return bool(self.buffer) or bool(select.select([self.sock], [], [], timeout)[0])

    def read(self) -> bytes:
        """One whole response without its final CRLF: lines joined with their literals."""
        out = b""
        while True:
            end = self.buffer.find(b"\r\n")
            while end < 0:
                self._fill()
                end = self.buffer.find(b"\r\n")
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            out += line
            literal = _LITERAL_END.search(line)
            if not literal:
                return out
            size = int(literal[1])
            while len(self.buffer) < size:
                self._fill()
            out += b"\r\n" + bytes(self.buffer[:size])
            del self.buffer[:size]

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def flag_state(flags: list[str]) -> frozenset:
    """The flags to compare between sessions: lower-cased, without the per-session \\Recent."""
    return frozenset(f for f in flags if f != RECENT)


@dataclass
class Message:
    """An APPENDed message: its exact bytes, the client that owns its flags, and the history of
    the flag states its owner gave it (the last one is the truth; \\Deleted is final)."""

    msgid: str
    folder: tuple
    owner: int
    body: bytes
    subject_header: bytes
    history: list = field(default_factory=list)
    uid: int | None = None

    @property
    def deleted(self) -> bool:
        """Has the owner set \\Deleted (so that any EXPUNGE may remove it)?"""
        return DELETED in self.history[-1]


class Registry:
    """What every client knows together; each call is atomic (one lock)."""

    def __init__(self, strict_recent: bool = True) -> None:
        self.strict_recent = strict_recent
        self.recent_conflicts = 0
        self.lock = threading.Lock()
        self.by_id: dict[str, Message] = {}
        self.by_uid: dict[tuple, Message] = {}
        self.uidvalidity: dict[tuple, int] = {}
        self.expunged: set[tuple] = set()
        self.recent_owner: dict[tuple, int] = {}

    def add(self, message: Message, flags: frozenset) -> None:
        """Record a message about to be APPENDed with ``flags``."""
        with self.lock:
            message.history.append(flags)
            self.by_id[message.msgid] = message

    def bind(self, message: Message, uidvalidity: int, uid: int) -> None:
        """The APPENDUID the server gave ``message``."""
        self.check_uidvalidity(message.folder, uidvalidity)
        with self.lock:
            if (message.folder, uid) in self.by_uid:
                raise ProtocolError(f"APPENDUID {uid} given twice in {message.folder}")
            message.uid = uid
            self.by_uid[(message.folder, uid)] = message

    def check_uidvalidity(self, folder: tuple, value: int) -> None:
        """UIDVALIDITY never changes during the run."""
        with self.lock:
            known = self.uidvalidity.setdefault(folder, value)
        if known != value:
            raise ProtocolError(f"UIDVALIDITY of {folder} changed from {known} to {value}")

    def lookup(self, folder: tuple, uid: int) -> Message | None:
        """The message with ``uid`` (None before its APPENDUID is known)."""
        with self.lock:
            return self.by_uid.get((folder, uid))

    def set_flags(self, message: Message, flags: frozenset) -> None:
        """The owner is about to give ``message`` these flags."""
        with self.lock:
            message.history.append(flags)

    def highest_uid(self, folder: tuple) -> int:
        """The highest UID the server has handed out by APPENDUID in ``folder`` so far."""
        with self.lock:
            return max((uid for (f, uid) in self.by_uid if f == folder), default=0)

    def note_expunged(self, folder: tuple, uid: int) -> None:
        """A client was told ``uid`` is gone; only a message its owner \\Deleted may go."""
        message = self.lookup(folder, uid)
        with self.lock:
            self.expunged.add((folder, uid))
            deleted = message is None or DELETED in message.history[-1]
        if not deleted:
            raise ProtocolError(f"UID {uid} of {folder} expunged without \\Deleted")

    def note_recent(self, folder: tuple, uid: int, client: int) -> None:
        """\\Recent of a message is shown to one read-write session only (RFC 3501 2.3.2);
        unless ``strict_recent``, a second one is only counted in ``recent_conflicts``."""
        with self.lock:
            first = self.recent_owner.setdefault((folder, uid), client)
            self.recent_conflicts += first != client
        if first != client and self.strict_recent:
            raise ProtocolError(f"UID {uid} of {folder} \\Recent for clients {first} and {client}")


#: Commands during which the server may not send EXPUNGE (RFC 3501 7.4.1); None is no command.
NO_EXPUNGE_DURING = ("FETCH", "STORE", "SEARCH", None)
_STRESS_ID = re.compile(rb"\r\nX-Stress-Id: (\S+)\r\n")


class View:
    """One client's picture of its selected mailbox, changed only by server responses.

    ``uids`` maps sequence number - 1 to a UID (None until a response names it), ``flags`` the
    last flag state the server reported per UID.  ``positions`` (shared by the client's views)
    is, per message, how far along its owner's history this client has been shown: flags may
    lag, never go back.  ``fetched`` collects the FETCH items per UID of the current command.
    """

    def __init__(
        self, registry: Registry, client: int, folder: tuple, readonly: bool, positions: dict
    ) -> None:
        self.registry = registry
        self.client = client
        self.folder = folder
        self.readonly = readonly
        self.positions = positions
        self.uids: list[int | None] = []
        self.flags: dict[int, frozenset] = {}
        self.fetched: dict[int, dict] = {}

    def apply(self, response: Response, command: str | None) -> None:
        """Take one untagged response that arrived during ``command`` (None: between commands);
        raise ProtocolError where it cannot be right."""
        name, n = response.name, response.number
        if name == "EXISTS":
            if n < len(self.uids):
                raise ProtocolError(f"EXISTS {n} after {len(self.uids)} without EXPUNGE")
            self.uids.extend([None] * (n - len(self.uids)))
        elif name == "RECENT":
            if n > len(self.uids):
                raise ProtocolError(f"RECENT {n} with {len(self.uids)} messages")
        elif name == "EXPUNGE":
            if command in NO_EXPUNGE_DURING:
                raise ProtocolError(f"EXPUNGE while {command or 'no command'} is in progress")
            if n > len(self.uids):
                raise ProtocolError(f"EXPUNGE {n} with {len(self.uids)} messages")
            uid = self.uids.pop(n - 1)
            if uid is not None:
                self.flags.pop(uid, None)
                self.registry.note_expunged(self.folder, uid)
        elif name == "FETCH":
            self._fetch(n, response.data, command)
        elif name == "FLAGS":
            if not SYSTEM_FLAGS <= set(response.data):
                raise ProtocolError(f"FLAGS {response.data} lacks a system flag")
        elif name == "SEARCH":
            if command not in ("SEARCH", "UID SEARCH"):
                raise ProtocolError(f"SEARCH response during {command}")
        elif name not in ("OK", "CAPABILITY"):
            raise ProtocolError(f"untagged {name} during {command}: {response.raw[:200]!r}")

    def _fetch(self, n: int, items: dict, command: str | None) -> None:
        if n > len(self.uids):
            raise ProtocolError(f"FETCH of message {n} with {len(self.uids)} messages")
        if "UID" in items:
            self._bind(n, items["UID"])
        uid = self.uids[n - 1]
        if uid is None:
            return
        merged = self.fetched.setdefault(uid, {})
        merged.update(items)
        message = self.registry.lookup(self.folder, uid)
        if "FLAGS" in items:
            self._flags(uid, message, items["FLAGS"], command)
        body = items.get("BODY[]")
        if body is not None or (message and not message.deleted and "BODY[]" in items):
            message = self._check_body(uid, message, body)
        if message is None:
            return
        if "RFC822.SIZE" in items and items["RFC822.SIZE"] != len(message.body):
            raise ProtocolError(
                f"UID {uid} RFC822.SIZE {items['RFC822.SIZE']}, not {len(message.body)}"
            )
        header = items.get("BODY[HEADER.FIELDS (SUBJECT)]")
        if header is not None and header != message.subject_header + b"\r\n\r\n":
            raise ProtocolError(f"UID {uid} HEADER.FIELDS (Subject) gave {header!r}")

    def _check_body(self, uid: int, message: Message | None, body: bytes | None) -> Message:
        """BODY[] is the exact bytes APPENDed: found by UID or by the X-Stress-Id it holds."""
        if message is None:
            found = _STRESS_ID.search(body or b"")
            with self.registry.lock:
                message = self.registry.by_id.get(found[1].decode()) if found else None
            if message is None or message.folder != self.folder:
                raise ProtocolError(f"UID {uid} BODY[] is no message APPENDed here: {body[:200]!r}")
            if message.uid not in (None, uid):
                raise ProtocolError(f"UID {uid} BODY[] is the message APPENDed as {message.uid}")
        if body != message.body:
            raise ProtocolError(f"UID {uid} BODY[] differs from the APPENDed bytes: {body!r:.200}")
        return message

    def _bind(self, n: int, uid: int) -> None:
        """Sequence number ``n`` is ``uid``: as before, and UIDs strictly ascending."""
        known = self.uids[n - 1]
        if known is not None:
            if known != uid:
                raise ProtocolError(f"message {n} was UID {known}, now UID {uid}")
            return
        before = next((u for u in reversed(self.uids[: n - 1]) if u is not None), 0)
        after = next((u for u in self.uids[n:] if u is not None), MAX_NUMBER + 1)
        if not before < uid < after:
            raise ProtocolError(f"UID {uid} at {n} breaks ascending order ({before}, {after})")
        self.uids[n - 1] = uid

    def _flags(self, uid: int, message: Message | None, flags: list, command: str | None) -> None:
        """Flags the owner gave the message, never older than shown before; to the owner
        itself outside its own STORE, exactly the last it set."""
        state = flag_state(flags)
        if RECENT in flags and not self.readonly:
            self.registry.note_recent(self.folder, uid, self.client)
        self.flags[uid] = state
        if message is None:
            return
        with self.registry.lock:
            history = list(message.history)
        key = (self.folder, uid)
        start = self.positions.get(key, 0)
        later = [i for i in range(start, len(history)) if history[i] == state]
        if not later:
            raise ProtocolError(
                f"UID {uid} FLAGS {sorted(state)} never set by its owner after state {start} "
                f"of {[sorted(h) for h in history]}"
            )
        self.positions[key] = later[0]
        own = message.owner == self.client and command not in ("STORE", "UID STORE")
        if own and state != history[-1]:
            raise ProtocolError(
                f"UID {uid} FLAGS {sorted(state)} to its owner, who set {sorted(history[-1])}"
            )

    def check_search(self, results: list[int], by_uid: bool, criterion: str) -> None:
        """SEARCH results name messages of this view only; ALL names every one not \\Deleted;
        DELETED names only \\Deleted ones."""
        if len(set(results)) != len(results):
            raise ProtocolError(f"SEARCH {criterion} names a message twice: {results}")
        if by_uid:
            named = set(results)
        else:
            if any(n > len(self.uids) for n in results):
                raise ProtocolError(f"SEARCH {criterion} {results} past {len(self.uids)} messages")
            named = {self.uids[n - 1] for n in results}
        for uid in self.uids:
            message = None if uid is None else self.registry.lookup(self.folder, uid)
            if message is None:
                continue
            if criterion == "ALL" and uid not in named and not message.deleted:
                raise ProtocolError(f"SEARCH ALL left out UID {uid}, not \\Deleted")
            if criterion == "DELETED" and uid in named and not message.deleted:
                raise ProtocolError(f"SEARCH DELETED named UID {uid}, never \\Deleted")
