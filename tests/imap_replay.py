"""Replaying RFC examples over a real socket, for the RFC 9051 tests (IMAP4rev2).

An example is the RFC's transcript (its editorial line breaks joined, "..." elisions written
out), run against a mailbox set up so that its numbers come out, and compared byte for byte
after one normalisation (``normalised``): the human-readable text of status responses and
continuations is cut, and the values the RFC's server chose and mailgw chooses differently
(UIDVALIDITY, UIDs and UIDNEXT, the hierarchy delimiter "." for "/", names sent as quoted
strings, PERMANENTFLAGS, CAPABILITY lists, special-use attributes) are put into the RFC's text
before it is compared (``Example.choices``).  Where mailgw's answer differs for another reason,
the example says so in ``Example.reason`` and its ``differs`` gives the RFC's line and mailgw's
in its place, so the test shows mailgw's answer.  SELECT and EXAMINE answers are compared
without regard to the order of their untagged responses (RFC 9051 6.3.2: "The order of
individual responses is not important").
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from test_imap import ALICE, PASSWORD, message, read_until

#: The folders every new user gets, removed where an example lists folders.
DEFAULTS = ("Sent", "Drafts", "Trash", "Junk", "Archive")
_STATUS = re.compile(rb"(\S+ (?:OK|NO|BAD|BYE|PREAUTH))(?: (\[[^\]]*\]))?(?: .*)?")


class Client:
    """A raw connection; ``send`` runs one command (its literals too) and returns its lines."""

    def __init__(self, port: int, login: bool = True, rev2: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.greeting = read_until(self.sock, b"* OK")
        if login:
            assert self.send(b"l LOGIN " + ALICE.encode() + b" " + PASSWORD.encode())[-1] == (
                b"l OK LOGIN completed"
            )
        if rev2:
            assert self.send(b"e ENABLE IMAP4rev2") == [
                b"* ENABLED IMAP4rev2",
                b"e OK ENABLE completed",
            ]

    def send(self, *parts: bytes) -> list[bytes]:
        """Send a command made of ``parts`` (a part ending in a synchronising literal's
        ``{n}`` waits for the continuation); every line received up to the tagged reply."""
        tag = parts[0].split(b" ", 1)[0] + b" "
        received = b""
        for part in parts[:-1]:
            self.sock.sendall(part + b"\r\n")
            if re.search(rb"\{\d+\}$", part):
                received += read_until(self.sock, b"+")
        self.sock.sendall(parts[-1] + b"\r\n")
        received += read_until(self.sock, tag)
        return received.split(b"\r\n")[:-1]

    def ok(self, line: bytes) -> list[bytes]:
        """Run a command that must succeed."""
        answer = self.send(line)
        assert answer[-1].startswith(line.split(b" ", 1)[0] + b" OK"), answer
        return answer

    def only_inbox(self) -> None:
        """Delete the default folders and their subscriptions (INBOX stays)."""
        for name in DEFAULTS:
            self.ok(b"d DELETE " + name.encode())
            self.send(b"u UNSUBSCRIBE " + name.encode())
        self.send(b"u UNSUBSCRIBE INBOX")

    def close(self) -> None:
        """Hang up."""
        self.sock.close()


def normalised(line: bytes) -> bytes:
    """A response line without its human-readable text: a status response keeps its status and
    response code, a continuation only its ``+``."""
    if line.startswith(b"+"):
        return b"+"
    found = _STATUS.fullmatch(line)
    if found:
        return b" ".join(part for part in found.groups() if part)
    return line


def fill(folder, count: int, flags: Callable[[int], set] = lambda n: set()) -> list:
    """``count`` messages (not \\Recent), message n with ``flags(n)``; their UIDs."""
    uids = []
    for n in range(1, count + 1):
        uids.append(folder.append(message(f"m{n}"), flags=sorted(flags(n))))
    folder.mark_seen_by_client(uids)
    return uids


@dataclass
class Example:
    """One RFC 9051 example: its transcript, the mailbox it needs (``setup(server, client)``
    makes it and returns the values mailgw chose, as ``choices``), and where mailgw
    legitimately differs."""

    transcript: str
    setup: Callable = lambda server, client: {}
    #: RFC text -> mailgw's choice of the same value.
    choices: dict = field(default_factory=dict)
    #: RFC line (after ``choices``) -> mailgw's lines in its place ("" for none), for ``reason``.
    differs: dict = field(default_factory=dict)
    reason: str = ""
    #: Compare the untagged responses of each command as a set (SELECT, EXAMINE)?
    unordered: bool = False
    #: Is IMAP4rev2 enabled before the transcript starts (it is unless the example does it)?
    rev2: bool = True
    #: Does the transcript start logged in (and so with IMAP4rev2 enabled)?
    login: bool = True


def _literal_size(data: bytes) -> int | None:
    """The octets of the literal ``data`` ends by announcing, if it does."""
    found = re.search(rb"\{(\d+)\+?\}$", data)
    return int(found.group(1)) if found else None


def commands(transcript: str) -> list[tuple[list[bytes], list[bytes]]]:
    """The transcript's commands, each as (its parts to send, the lines answered); a line that
    starts with neither "C: " nor "S: " continues the one before (an editorial break)."""
    lines: list[str] = []
    for raw in transcript.strip().splitlines():
        if not raw.strip():
            continue
        if raw.strip() in ("C:", "S:"):  # an empty line
            lines.append(raw.strip() + " ")
        elif raw.strip()[:3] in ("C: ", "S: "):
            lines.append(raw.strip())
        else:  # the RFC's editorial line break
            lines[-1] += " " + raw.strip()
    out: list[tuple[list[bytes], list[bytes]]] = []
    state = None  # None: no command open; n: literal octets to come; -1: the line after one
    for raw in lines:
        who, _, text = raw.partition(": ")
        data = text.encode()
        if who == "S":
            out[-1][1].append(data)
        elif state is None:
            out.append(([data], []))
            state = _literal_size(data)
        elif state == -1 or len(data) >= state:
            out[-1][0].append(data)
            state = _literal_size(data if state == -1 else data[state:])
        else:
            out[-1][0].append(data)
            state = state - len(data) - 2 or -1
    return out


def replay(client: Client, example: Example, choices: dict) -> None:
    """Run the example's commands; compare each answer with the RFC's, normalised."""
    every = {**example.choices, **choices}

    def chosen(text: str) -> str:
        for rfc, ours in every.items():
            text = text.replace(rfc, ours)
        return text

    differs = {chosen(rfc): chosen(ours) for rfc, ours in example.differs.items()}
    for parts, expected in commands(example.transcript):
        parts = [chosen(part.decode("utf-8")).encode("utf-8") for part in parts]
        wanted = []
        for line in expected:
            mine = chosen(line.decode("utf-8"))
            mine = differs.get(mine, mine)
            wanted += [m.encode("utf-8") for m in mine.split("\n") if m]
        got = [normalised(line) for line in client.send(*parts)]
        wanted = [normalised(line) for line in wanted]
        if example.unordered:
            got, wanted = sorted(got[:-1]) + got[-1:], sorted(wanted[:-1]) + wanted[-1:]
        assert got == wanted, parts


def letter(n: int, sender: str = "Bob Sender <bob@elsewhere.test>", text: str = "Hello.") -> bytes:
    """Message ``n``: from ``sender``, with ``text`` (UTF-8) as its body."""
    return (
        f"From: {sender}\r\nTo: {ALICE}\r\nSubject: m{n}\r\nMessage-ID: <m{n}@elsewhere.test>\r\n"
        "Date: Tue, 01 Oct 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{text}\r\n"
    ).encode()


def store_all(folder, letters: list[tuple[bytes, set]]) -> list[int]:
    """Append ``(message, flags)`` each, none \\Recent; their UIDs."""
    uids = [folder.append(data, flags=sorted(flags)) for data, flags in letters]
    folder.mark_seen_by_client(uids)
    return uids


def selected(setup: Callable) -> Callable:
    """``setup``, then INBOX selected."""

    def run(server, client) -> dict:
        choices = setup(server, client)
        client.ok(b"s SELECT INBOX")
        return choices

    return run


class Lines:
    """The lines a socket receives, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def next(self) -> bytes:
        """The next line, without its CRLF."""
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def take(self, count: int) -> list[bytes]:
        """The next ``count`` lines, normalised."""
        return [normalised(self.next()) for _ in range(count)]


def check(connect, server, example: Example) -> None:
    """Set ``example``'s mailbox up, replay it and compare (a difference needs its reason)."""
    assert example.reason or not example.differs, "a difference needs its reason"
    client = connect(login=example.login, rev2=example.rev2 and example.login)
    replay(client, example, example.setup(server, client))
