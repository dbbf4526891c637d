"""IMAP4rev2 (RFC 9051) announced beside IMAP4rev1: the examples of RFC 9051 sections 6 and 7
that differ from RFC 3501's, replayed over a real socket after ``ENABLE IMAP4rev2``, and what an
IMAP4rev1 session (no ENABLE) keeps.

Each example is the RFC's transcript (its editorial line breaks joined, "..." elisions written
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

import pytest
from test_imap import ALICE, PASSWORD, message, read_until
from test_imap_list import user_dir

from mailgw.imap import make_factory
from mailgw.imap import session as imap_session

#: The folders every new user gets, removed where an example lists folders.
DEFAULTS = ("Sent", "Drafts", "Trash", "Junk", "Archive")
_STATUS = re.compile(rb"(\S+ (?:OK|NO|BAD|BYE|PREAUTH))(?: (\[[^\]]*\]))?(?: .*)?")


@pytest.fixture
def port(server):
    """Alice and an IMAP listener."""
    server.add_user(ALICE, PASSWORD)
    return server.listen(make_factory)


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


@pytest.fixture
def connect(port):
    """Make logged-in connections (``ENABLE IMAP4rev2`` done unless ``rev2=False``)."""
    clients = []

    def make(**options) -> Client:
        clients.append(Client(port, **options))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def normalised(line: bytes) -> bytes:
    """A response line without its human-readable text: a status response keeps its status and
    response code, a continuation only its ``+``."""
    if line.startswith(b"+"):
        return b"+"
    found = _STATUS.fullmatch(line)
    if found:
        return b" ".join(part for part in found.groups() if part)
    return line


def fill(folder, count: int, flags: Callable[[int], set] = lambda n: set(), body=None) -> list:
    """``count`` messages (not \\Recent), message n with ``flags(n)`` and, if ``body`` is given,
    ``body(n)`` as its text; their UIDs."""
    uids = []
    for n in range(1, count + 1):
        text = body(n) if body is not None else "Hello.\r\n"
        uids.append(folder.append(message(f"m{n}", text), flags=sorted(flags(n))))
    folder.mark_seen_by_client(uids)
    return uids


@dataclass
class Example:
    """One RFC 9051 example: its transcript, the mailbox it needs (``setup(server, store)``
    returns the values mailgw chose, as ``choices``), and where mailgw legitimately differs."""

    transcript: str
    setup: Callable = lambda server, client: {}
    #: RFC text -> mailgw's choice of the same value.
    choices: dict = field(default_factory=dict)
    #: RFC line (after ``choices``) -> mailgw's lines in its place ("" for none), for ``reason``.
    differs: dict = field(default_factory=dict)
    reason: str = ""
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


def caps_after_login(server, client) -> dict:
    """The capability list as the RFC's example server spells it -> mailgw's."""
    caps = client.send(b"c CAPABILITY")[0].decode()[len("* CAPABILITY ") :]
    return {"IMAP4rev2 ID LITERAL+ X-GOOD-IDEA": caps}


def inbox_of(count: int, name: str = "INBOX", uidnext: str = "4392", validity="3857529045"):
    """A setup: ``count`` messages in ``name`` (created unless INBOX)."""

    def setup(server, client) -> dict:
        if name != "INBOX":
            client.ok(b"c CREATE " + name.encode())
        folder = server.store.folder(ALICE, name)
        fill(folder, count)
        return {
            validity: str(folder.uid_validity),
            f"[UIDNEXT {uidnext}]": f"[UIDNEXT {folder.uid_next}]",
            "[HIGHESTMODSEQ]": f"[HIGHESTMODSEQ {folder.highest_modseq}]",
        }

    return setup


def select_closed(server, client) -> dict:
    inbox, drafts = server.store.folder(ALICE), server.store.folder(ALICE, "Drafts")
    fill(inbox, 172)
    fill(drafts, 5)
    return {
        "3857529045": str(inbox.uid_validity),
        "9877410381": str(drafts.uid_validity),
        "[UIDNEXT 4392]": f"[UIDNEXT {inbox.uid_next}]",
        "[UIDNEXT 102]": f"[UIDNEXT {drafts.uid_next}]",
        "[HIGHESTMODSEQ]": f"[HIGHESTMODSEQ {inbox.highest_modseq}]",
        "[HIGHESTMODSEQ D]": f"[HIGHESTMODSEQ {drafts.highest_modseq}]",
    }


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


@selected
def search_box(server, client) -> dict:
    """The mailbox of 6.4.4's examples: 43 messages; 2, 10 and 11 \\Flagged (and 5, from
    Smith); 1 to 3 \\Seen; 20 to 34 \\Deleted; 43 says "отпуск"."""
    letters = []
    for n in range(1, 44):
        flags = {"\\Flagged"} if n in (2, 5, 10, 11) else set()
        flags |= {"\\Seen"} if n <= 3 else set()
        flags |= {"\\Deleted"} if 20 <= n <= 34 else set()
        sender = "John Smith <smith@elsewhere.test>" if n == 5 else "Bob <bob@elsewhere.test>"
        letters.append((letter(n, sender, "отпуск" if n == 43 else "Hello."), flags))
    uids = store_all(server.store.folder(ALICE), letters)
    return {"UID MIN 7 MAX 3800": f"UID MIN {uids[0]} MAX {uids[-1]}"}


@selected
def saved_smaller(server, client) -> dict:
    """Six messages: 1 from Smith, 3 and 4 of more than 4096 octets."""
    letters = []
    for n in range(1, 7):
        sender = "John Smith <smith@elsewhere.test>" if n == 1 else "Bob <bob@elsewhere.test>"
        letters.append((letter(n, sender, "x" * 5000 if n in (3, 4) else "small"), set()))
    uids = store_all(server.store.folder(ALICE), letters)
    return {"17,900,901": f"{uids[1]},{uids[4]}:{uids[5]}"}


@selected
def saved_or(server, client) -> dict:
    """3021 messages; 882, 1102, 3003, 3005 and 3006 say "мать", and so do 500 and 3010, from
    Smith (outside ``$``), of which only 3010 is in 3000:3021."""
    letters = []
    for n in range(1, 3022):
        smith = n in (500, 3003, 3005, 3010)
        sender = "John Smith <smith@elsewhere.test>" if smith else "Bob <bob@elsewhere.test>"
        says = n in (500, 882, 1102, 3003, 3005, 3006)
        letters.append((letter(n, sender, "мать" if says else "Hello."), set()))
    store_all(server.store.folder(ALICE), letters)
    return {}


def music(server, client) -> dict:
    """Example 10's hierarchy: ``music.rock``, and no ``music``."""
    client.only_inbox()
    client.ok(b"c CREATE music.rock")
    client.ok(b"d DELETE music")
    return {}


def foo_and_bar(server, client) -> dict:
    """Example 11's mailboxes: INBOX (17, 1 \\Seen) and foo (30, 1 \\Seen), subscribed INBOX
    and foo.sub, and bar.baz without bar (made as another program would)."""
    client.only_inbox()
    client.ok(b"c CREATE foo")
    client.ok(b"s SUBSCRIBE INBOX")
    client.ok(b"s SUBSCRIBE foo.sub")
    fill(server.store.folder(ALICE), 17, lambda n: {"\\Seen"} if n == 1 else set())
    fill(server.store.folder(ALICE, "foo"), 30, lambda n: {"\\Seen"} if n == 1 else set())
    for sub in ("cur", "new", "tmp"):
        (user_dir(server) / ".bar.baz" / sub).mkdir(parents=True)
    return {}


@selected
def move_box(server, client) -> dict:
    """89 messages with UIDs 1 to 20 expunged, so UID 42 is message 22; a folder foo."""
    inbox = server.store.folder(ALICE)
    fill(inbox, 89)
    inbox.expunge(list(range(1, 21)))
    client.ok(b"c CREATE foo")
    foo = server.store.folder(ALICE, "foo")
    return {"432432": str(foo.uid_validity), "1202:1229": f"{foo.uid_next}:{foo.uid_next + 27}"}


@selected
def uid_expunge_box(server, client) -> dict:
    """Five messages, 1 and 3 to 5 \\Deleted."""
    uids = fill(server.store.folder(ALICE), 5, lambda n: {"\\Deleted"} if n != 2 else set())
    return {"3000:3002": f"{uids[2]}:{uids[4]}"}


def flagged_at(count: int, flagged) -> Callable:
    """``count`` messages, those of ``flagged`` \\Flagged; INBOX selected."""

    @selected
    def setup(server, client) -> dict:
        fill(server.store.folder(ALICE), count, lambda n: {"\\Flagged"} if n in flagged else set())
        return {}

    return setup


@selected
def fetch_box(server, client) -> dict:
    """23 messages, 23 \\Seen."""
    inbox = server.store.folder(ALICE)
    uids = fill(inbox, 23, lambda n: {"\\Seen"} if n == 23 else set())
    size = inbox.get(uids[-1]).size
    return {"RFC822.SIZE 44827 UID 447": f"RFC822.SIZE {size} UID {uids[-1]}"}


@selected
def from_maria(server, client) -> dict:
    """42 messages, 1 to 3, 5, 8, 13, 21 and 42 from maria@example.com."""
    maria = (1, 2, 3, 5, 8, 13, 21, 42)
    letters = [
        (letter(n, "maria@example.com" if n in maria else "bob@elsewhere.test"), set())
        for n in range(1, 43)
    ]
    store_all(server.store.folder(ALICE), letters)
    return {}


def folders(*names: str) -> Callable:
    """A setup: the folders ``names`` created."""

    def setup(server, client) -> dict:
        for name in names:
            client.ok(b"c CREATE " + name.encode())
        return {}

    return setup


def saved_messages(server, client) -> dict:
    """A folder saved-messages; the APPENDUID its next message gets."""
    client.ok(b"c CREATE saved-messages")
    saved = server.store.folder(ALICE, "saved-messages")
    return {"[APPENDUID]": f"[APPENDUID {saved.uid_validity} {saved.uid_next}]"}


def append_copy(server, client) -> dict:
    """6.3.12's second example: saved-messages, meeting and funny; INBOX selected with four
    messages whose UIDs skip after the second (UIDs 3 to 6 expunged)."""
    for name in ("saved-messages", "meeting", "funny"):
        client.ok(b"c CREATE " + name.encode())
    inbox = server.store.folder(ALICE)
    fill(inbox, 8)
    inbox.expunge([3, 4, 5, 6])
    client.ok(b"s SELECT INBOX")
    saved, meeting, funny = (
        server.store.folder(ALICE, n) for n in ("saved-messages", "meeting", "funny")
    )
    return {
        "38505 3955": f"{saved.uid_validity} {saved.uid_next}",
        "38505 304,319:320 3956:3958": f"{meeting.uid_validity} 2,7:8 1:3",
        "305:310": "3:6",
        "3857529045": str(funny.uid_validity),
        "[HIGHESTMODSEQ]": f"[HIGHESTMODSEQ {funny.highest_modseq + 1}]",  # after A006's copy
        "[COPYUID funny]": f"[COPYUID {funny.uid_validity} 2 1]",
    }


def hierarchy(folders=(), subscribed=(), missing=()) -> Callable:
    """A setup: only INBOX and ``folders``, less ``missing`` (their children stay), with
    exactly ``subscribed`` subscribed."""

    def setup(server, client) -> dict:
        client.only_inbox()
        for name in folders:
            client.ok(b"c CREATE " + name.encode())
        for name in missing:
            client.ok(b"d DELETE " + name.encode())
        for name in subscribed:
            client.ok(b"s SUBSCRIBE " + name.encode())
        return {}

    return setup


#: Example 7's hierarchy (6.3.9.8), and how its names are written there -> here.
_FOO = ("Foo", "Foo.Bar", "Foo.Baz", "Moo")
_FOO_NAMES = {
    '(\\Marked \\NoInferiors) "/" "inbox"': '() "." "INBOX"',
    '"/" "Foo/Bar"': '"." "Foo.Bar"',
    '"/" "Foo/Baz"': '"." "Foo.Baz"',
    '"/"': '"."',
}
_INBOX_REASON = (
    "mailgw's INBOX is an ordinary mailbox: no \\Marked, and children may be made under it "
    "(no \\NoInferiors)"
)


#: Why mailgw's EXPUNGE responses come in another order than the RFC's.
_DOWNWARDS = (
    "mailgw tells expunged messages from the highest number down, so each number stays that of "
    "the same message until its EXPUNGE (7.5.1 shows both orders: 3 3 5 8 or 9 8 7 6 5)"
)
# The 432432 and 1202:1229 of the MOVE example are mailgw's choices, as in ``move_box``.

#: The permanent flags of the RFC's server -> mailgw's (every system flag and keywords).
_PERMANENT = {
    "(\\Deleted \\Seen \\*)": "(\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)",
    "(\\Deleted \\Seen \\Answered \\Flagged \\Draft \\*)": (
        "(\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)"
    ),
}

EXAMPLES = {
    "6.3.1-enable-capability-unchanged": Example(
        """
        C: t1 CAPABILITY
        S: * CAPABILITY IMAP4rev2 ID LITERAL+ X-GOOD-IDEA
        S: t1 OK foo
        C: t2 ENABLE CONDSTORE X-GOOD-IDEA
        S: * ENABLED X-GOOD-IDEA
        S: t2 OK foo
        C: t3 CAPABILITY
        S: * CAPABILITY IMAP4rev2 ID LITERAL+ X-GOOD-IDEA
        S: t3 OK foo again
        """,
        caps_after_login,
        differs={"* ENABLED X-GOOD-IDEA": "* ENABLED CONDSTORE"},
        reason="the RFC's server knows the fictitious X-GOOD-IDEA and not CONDSTORE; mailgw "
        "the other way round, so it enables CONDSTORE and ignores X-GOOD-IDEA",
    ),
    "6.3.1-enable-condstore": Example(
        """
        C: a1 ENABLE CONDSTORE
        S: * ENABLED CONDSTORE
        S: a1 OK Conditional Store enabled
        """
    ),
    "8-enable-imap4rev2": Example(
        """
        C: babc ENABLE IMAP4rev2
        S: * ENABLED IMAP4rev2
        S: babc OK Some capabilities enabled
        C: babd ENABLE IMAP4rev2
        S: * ENABLED
        S: babd OK
        """,
        rev2=False,
    ),
    "7.2.1-enabled": Example(
        """
        C: x ENABLE CONDSTORE QRESYNC
        S: * ENABLED CONDSTORE QRESYNC
        S: x OK
        """
    ),
    "7.3.2-namespace": Example(
        """
        C: n NAMESPACE
        S: * NAMESPACE (("" "/")) (("~" "/")) NIL
        S: n OK
        """,
        choices={'(("" "/"))': '(("" "."))'},
        differs={'* NAMESPACE (("" ".")) (("~" "/")) NIL': '* NAMESPACE (("" ".")) NIL NIL'},
        reason="mailgw shows no other users' mailboxes, so that namespace is NIL",
    ),
    "6.3.2-select": Example(
        """
        C: A142 SELECT INBOX
        S: * 172 EXISTS
        S: * OK [UIDVALIDITY 3857529045] UIDs valid
        S: * OK [UIDNEXT 4392] Predicted next UID
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited
        S: * LIST () "/" INBOX
        S: A142 OK [READ-WRITE] SELECT completed
        """,
        inbox_of(172),
        choices={**_PERMANENT, '"/" INBOX': '"." "INBOX"'},
        differs={'* LIST () "." "INBOX"': '* LIST () "." "INBOX"\n* OK [HIGHESTMODSEQ]'},
        reason="mailgw announces CONDSTORE, so SELECT also gives HIGHESTMODSEQ (RFC 7162 3.1.2.1)",
        unordered=True,
    ),
    "6.3.2-select-closed": Example(
        """
        C: A142 SELECT INBOX
        S: * 172 EXISTS
        S: * OK [UIDVALIDITY 3857529045] UIDs valid
        S: * OK [UIDNEXT 4392] Predicted next UID
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited
        S: A142 OK [READ-WRITE] SELECT completed
        C: A143 SELECT Drafts
        S: * OK [CLOSED] Previous mailbox is now closed
        S: * 5 EXISTS
        S: * OK [UIDVALIDITY 9877410381] UIDs valid
        S: * OK [UIDNEXT 102] Predicted next UID
        S: * LIST () "/" Drafts
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS (\\Deleted \\Seen \\Answered
            \\Flagged \\Draft \\*)] System flags and keywords allowed
        S: A143 OK [READ-WRITE] SELECT completed
        """,
        select_closed,
        choices={**_PERMANENT, '* LIST () "/" Drafts': '* LIST (\\Drafts) "." "Drafts"'},
        differs={
            "* 172 EXISTS": '* 172 EXISTS\n* LIST () "." "INBOX"\n* OK [HIGHESTMODSEQ]',
            "* 5 EXISTS": "* 5 EXISTS\n* OK [HIGHESTMODSEQ D]",
        },
        reason="the RFC leaves A142's LIST response out of this example (6.3.2 requires it, as "
        "the example before shows); mailgw gives HIGHESTMODSEQ (it announces CONDSTORE)",
        unordered=True,
    ),
    "6.3.3-examine": Example(
        """
        C: A932 EXAMINE blurdybloop
        S: * 17 EXISTS
        S: * OK [UIDVALIDITY 3857529045] UIDs valid
        S: * OK [UIDNEXT 4392] Predicted next UID
        S: * LIST () "/" blurdybloop
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS ()] No permanent flags permitted
        S: A932 OK [READ-ONLY] EXAMINE completed
        """,
        inbox_of(17, "blurdybloop"),
        choices={'"/" blurdybloop': '"." "blurdybloop"'},
        differs={"* 17 EXISTS": "* 17 EXISTS\n* OK [HIGHESTMODSEQ]"},
        reason="mailgw gives HIGHESTMODSEQ (it announces CONDSTORE)",
        unordered=True,
    ),
    "6.4.4-search-min-count": Example(
        """
        C: A282 SEARCH RETURN (MIN COUNT) FLAGGED
            SINCE 1-Feb-1994 NOT FROM "Smith"
        S: * ESEARCH (TAG "A282") MIN 2 COUNT 3
        S: A282 OK SEARCH completed
        """,
        search_box,
    ),
    "6.4.4-search-return-empty-list": Example(
        """
        C: A283 SEARCH RETURN () FLAGGED
            SINCE 1-Feb-1994 NOT FROM "Smith"
        S: * ESEARCH (TAG "A283") ALL 2,10:11
        S: A283 OK SEARCH completed
        """,
        search_box,
    ),
    "6.4.4-search-plain-and-literal": Example(
        """
        C: A284 SEARCH TEXT "string not in mailbox"
        S: * ESEARCH (TAG "A284")
        S: A284 OK SEARCH completed
        C: A285 SEARCH CHARSET UTF-8 TEXT {12}
        S: + Ready for literal text
        C: отпуск
        S: * ESEARCH (TAG "A285") ALL 43
        S: A285 OK SEARCH completed
        """,
        search_box,
    ),
    "6.4.4-search-first-unseen": Example(
        """
        C: A284 SEARCH RETURN (MIN) UNSEEN
        S: * ESEARCH (TAG "A284") MIN 4
        S: A284 OK SEARCH completed
        """,
        search_box,
    ),
    "6.4.4-uid-search-min-max": Example(
        """
        C: A285 UID SEARCH RETURN (MIN MAX) 1:5000
        S: * ESEARCH (TAG "A285") UID MIN 7 MAX 3800
        S: A285 OK SEARCH completed
        """,
        search_box,
    ),
    "6.4.4-search-count-deleted": Example(
        """
        C: A286 SEARCH RETURN (COUNT) DELETED
        S: * ESEARCH (TAG "A286") COUNT 15
        S: A286 OK SEARCH completed
        """,
        search_box,
    ),
    "6.4.4.4-example-3-saved-result-in-uid-search": Example(
        """
        C: A300 SEARCH RETURN (SAVE) SINCE 1-Jan-2004
            NOT FROM "Smith"
        S: A300 OK SEARCH completed
        C: A301 UID SEARCH UID $ SMALLER 4096
        S: * ESEARCH (TAG "A301") UID ALL 17,900,901
        S: A301 OK completed
        C: A302 UID SEARCH $ SMALLER 4096
        S: * ESEARCH (TAG "A302") UID ALL 17,900,901
        S: A302 OK completed
        """,
        saved_smaller,
    ),
    "6.4.4.4-example-4-saved-result-or": Example(
        """
        C: P282 SEARCH RETURN (SAVE) SINCE 1-Feb-1994
            NOT FROM "Smith"
        S: P282 OK SEARCH completed
        C: P283 SEARCH CHARSET UTF-8 (OR $ 1,3000:3021) TEXT {8+}
        C: мать
        S: * ESEARCH (TAG "P283") ALL 882,1102,3003,3005:3006
        S: P283 OK completed
        """,
        saved_or,
    ),
    "6.3.9.8-example-10-missing-hierarchy": Example(
        """
        C: a1 LIST (REMOTE) "" *
        S: * LIST () "/" music/rock
        S: * LIST (\\Remote) "/" also/jazz
        S: a1 OK done
        C: a2 LIST () "" %
        S: * LIST (\\NonExistent \\HasChildren) "/" music
        S: a2 OK done
        C: a3 LIST (REMOTE) "" %
        S: * LIST (\\NonExistent \\HasChildren) "/" music
        S: * LIST (\\NonExistent \\HasChildren) "/" also
        S: a3 OK done
        C: a3.1 LIST "" (% music/rock)
        S: * LIST () "/" music/rock
        S: a3.1 OK done
        """,
        music,
        choices={'"/" music/rock': '"." "music.rock"', "music/rock": "music.rock"}
        | {'"/" music': '"." "music"'},
        differs={
            '* LIST () "." "music.rock"': '* LIST () "." "INBOX"\n'
            '* LIST (\\NonExistent \\HasChildren) "." "music"\n* LIST () "." "music.rock"',
            '* LIST (\\NonExistent \\HasChildren) "." "music"': '* LIST () "." "INBOX"\n'
            '* LIST (\\NonExistent \\HasChildren) "." "music"',
            '* LIST (\\Remote) "/" also/jazz': "",
            '* LIST (\\NonExistent \\HasChildren) "/" also': "",
        },
        reason="mailgw has INBOX in every hierarchy and no remote mailboxes (also/jazz); it "
        "lists every level above a mailbox, so * and (% music.rock) give music too (the RFC: "
        '"clients must handle both cases")',
    ),
    "6.3.9.8-example-11-list-status": Example(
        """
        C: A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))
        S: * LIST () "."  "INBOX"
        S: * STATUS "INBOX" (MESSAGES 17 UNSEEN 16)
        S: * LIST () "." "foo"
        S: * STATUS "foo" (MESSAGES 30 UNSEEN 29)
        S: * LIST (\\NoSelect) "." "bar"
        S: A01 OK List completed.
        C: A02 LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (STATUS
             (MESSAGES))
        S: * LIST (\\Subscribed) "."  "INBOX"
        S: * STATUS "INBOX" (MESSAGES 17)
        S: * LIST () "." "foo" (CHILDINFO ("SUBSCRIBED"))
        S: A02 OK List completed.
        """,
        foo_and_bar,
        choices={"(CHILDINFO (": '("CHILDINFO" ('},
        differs={
            '* LIST () "."  "INBOX"': '* LIST () "." "INBOX"',
            '* LIST (\\Subscribed) "."  "INBOX"': '* LIST (\\Subscribed) "." "INBOX"',
            '* LIST () "." "foo"': '* LIST (\\NonExistent \\HasChildren) "." "bar"\n'
            '* LIST () "." "foo"',
            '* LIST (\\NoSelect) "." "bar"': "",
        },
        reason='the RFC\'s two spaces after "." are a typo (one SP in the grammar); mailgw lists '
        "names in order (bar before foo); bar is no mailbox at all here (only bar.baz is), "
        "which IMAP4rev2 tells as \\NonExistent \\HasChildren (example 10)",
    ),
    "6.3.9.8-example-7-hierarchy": Example(
        """
        C: C01 LIST "" "*"
        S: * LIST (\\Marked \\NoInferiors) "/" "inbox"
        S: * LIST () "/" "Foo"
        S: * LIST () "/" "Foo/Bar"
        S: * LIST () "/" "Foo/Baz"
        S: * LIST () "/" "Moo"
        S: C01 OK done
        """,
        hierarchy(_FOO),
        choices=_FOO_NAMES,
        reason=_INBOX_REASON,
    ),
    "6.3.9.8-example-7-children": Example(
        """
        C: CA3 LIST "" "%" RETURN (CHILDREN)
        S: * LIST (\\Marked \\NoInferiors) "/" "inbox"
        S: * LIST (\\HasChildren) "/" "Foo"
        S: * LIST (\\HasNoChildren) "/" "Moo"
        S: CA3 OK done
        """,
        hierarchy(_FOO),
        choices=_FOO_NAMES,
        differs={'* LIST () "." "INBOX"': '* LIST (\\HasNoChildren) "." "INBOX"'},
        reason=_INBOX_REASON + "; so with CHILDREN it is \\HasNoChildren",
    ),
    "6.3.9.8-example-7a-childinfo": Example(
        """
        C: C02 LIST (SUBSCRIBED) "" "*"
        S: * LIST (\\Subscribed) "/" "Foo/Baz"
        S: C02 OK done
        C: C04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"
        S: * LIST () "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))
        S: C04 OK done
        """,
        hierarchy(_FOO, ["Foo.Baz"]),
        choices=_FOO_NAMES,
    ),
    "6.3.9.8-example-7a1-subscribed-parent": Example(
        """
        C: C04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"
        S: * LIST (\\Subscribed) "/" "Foo" ("CHILDINFO"
            ("SUBSCRIBED"))
        S: C04 OK done
        """,
        hierarchy(_FOO, ["Foo", "Foo.Baz"]),
        choices=_FOO_NAMES,
    ),
    "6.3.9.8-example-7a2-nonexistent-parent": Example(
        """
        C: C04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"
        S: * LIST (\\NonExistent) "/" "Foo" ("CHILDINFO"
            ("SUBSCRIBED"))
        S: C04 OK done
        """,
        hierarchy(_FOO, ["Foo.Baz"], missing=["Foo"]),
        choices=_FOO_NAMES,
    ),
    "6.3.9.8-example-7b-nothing-subscribed": Example(
        """
        C: C04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"
        S: C04 OK done
        """,
        hierarchy(_FOO),
    ),
    "6.3.9.8-example-7c-children-subscribed": Example(
        """
        C: C04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN
            (CHILDREN)
        S: * LIST (\\HasChildren \\Subscribed) "/" "Foo"
        S: * LIST (\\HasNoChildren \\Subscribed) "/" "Moo"
        S: C04 OK done
        """,
        hierarchy(_FOO, ["Foo", "Moo"]),
        choices=_FOO_NAMES,
        differs={
            '* LIST (\\HasChildren \\Subscribed) "." "Foo"': (
                '* LIST (\\Subscribed \\HasChildren) "." "Foo"'
            ),
            '* LIST (\\HasNoChildren \\Subscribed) "." "Moo"': (
                '* LIST (\\Subscribed \\HasNoChildren) "." "Moo"'
            ),
        },
        reason="mailgw gives \\Subscribed first, as example 7 A1's second answer does "
        "(attributes are a set, 6.3.9.3)",
    ),
    "6.3.9.8-example-9-childinfo-without-children": Example(
        """
        C: a1 LIST "" ("foo")
        S: * LIST () "/" foo
        S: a1 OK done
        C: a2 LIST (SUBSCRIBED) "" "foo/*"
        S: * LIST (\\Subscribed \\NonExistent) "/" foo/bar
        S: a2 OK done
        C: a3 LIST (SUBSCRIBED RECURSIVEMATCH) "" foo RETURN (CHILDREN)
        S: * LIST (\\HasNoChildren) "/" foo ("CHILDINFO" ("SUBSCRIBED"))
        S: a3 OK done
        """,
        hierarchy(["foo"], ["foo.bar"]),
        choices={'"/" foo/bar': '"." "foo.bar"', '"/" foo': '"." "foo"', "foo/*": "foo.*"},
    ),
    "6.3.12-append-literal": Example(
        """
        C: A003 APPEND saved-messages (\\Seen) {326}
        S: + Ready for literal data
        C: Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)
        C: From: Fred Foobar <foobar@Blurdybloop.example>
        C: Subject: afternoon meeting
        C: To: mooch@owatagu.siam.edu.example
        C: Message-Id: <B27397-0100000@Blurdybloop.example>
        C: MIME-Version: 1.0
        C: Content-Type: TEXT/PLAIN; CHARSET=US-ASCII
        C:
        C: Hello Joe, do you think we can meet at 3:30 tomorrow?
        C:
        S: A003 OK APPEND completed
        """,
        saved_messages,
        differs={"A003 OK APPEND completed": "A003 OK [APPENDUID]"},
        reason="mailgw announces UIDPLUS, so APPEND answers APPENDUID (7.1)",
    ),
    "6.3.12-appenduid-copyuid": Example(
        """
        C: A003 APPEND saved-messages (\\Seen) {297+}
        C: Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)
        C: From: Fred Foobar <foobar@example.com>
        C: Subject: afternoon meeting
        C: To: mooch@example.com
        C: Message-Id: <B27397-0100000@example.com>
        C: MIME-Version: 1.0
        C: Content-Type: TEXT/PLAIN; CHARSET=US-ASCII
        C:
        C: Hello Joe, do you think we can meet at 3:30 tomorrow?
        C:
        S: A003 OK [APPENDUID 38505 3955] APPEND completed
        C: A004 COPY 2:4 meeting
        S: A004 OK [COPYUID 38505 304,319:320 3956:3958] Done
        C: A005 UID COPY 305:310 meeting
        S: A005 OK No matching messages, so nothing copied
        C: A006 COPY 2 funny
        S: A006 OK Done
        C: A007 SELECT funny
        S: * 1 EXISTS
        S: * OK [UIDVALIDITY 3857529045] Validity session-only
        S: * OK [UIDNEXT 2] Predicted next UID
        S: * NO [UIDNOTSTICKY] Non-persistent UIDs
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS (\\Deleted \\Seen)] Limited
        S: * LIST () "." funny
        S: A007 OK [READ-WRITE] SELECT completed
        """,
        append_copy,
        choices={
            "(\\Deleted \\Seen)]": "(\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]",
            '"." funny': '"." "funny"',
        },
        differs={
            "A006 OK Done": "A006 OK [COPYUID funny]",
            "* NO [UIDNOTSTICKY] Non-persistent UIDs": "* OK [CLOSED]\n* OK [HIGHESTMODSEQ]",
        },
        reason="the RFC's funny is a mailbox of non-persistent UIDs (UIDNOTSTICKY, hence no "
        "COPYUID); mailgw's UIDs always persist.  A007 replaces the selected INBOX, so mailgw "
        "says [CLOSED] first (6.3.2), and HIGHESTMODSEQ (it announces CONDSTORE)",
        unordered=True,
    ),
    "6.4.8-uid-move": Example(
        """
        C: a UID MOVE 42:69 foo
        S: * OK [COPYUID 432432 42:69 1202:1229]
        """
        + "S: * 22 EXPUNGE\n" * 28
        + """
        S: a OK Done
        """,
        move_box,
        differs={
            "* OK [COPYUID 432432 42:69 1202:1229]": "* OK [COPYUID 432432 42:69 1202:1229]\n"
            + "\n".join(f"* {n} EXPUNGE" for n in range(49, 21, -1)),
            "* 22 EXPUNGE": "",
        },
        reason=_DOWNWARDS,
    ),
    "6.4.9-uid-expunge": Example(
        """
        C: A003 UID EXPUNGE 3000:3002
        S: * 3 EXPUNGE
        S: * 3 EXPUNGE
        S: * 3 EXPUNGE
        S: A003 OK UID EXPUNGE completed
        """,
        uid_expunge_box,
        differs={
            "* 3 EXPUNGE": "",
            "A003 OK UID EXPUNGE completed": "* 5 EXPUNGE\n* 4 EXPUNGE\n* 3 EXPUNGE\nA003 OK",
        },
        reason=_DOWNWARDS,
    ),
    "7.3.4-esearch-tag-uid": Example(
        """
        C: a567 UID SEARCH RETURN (COUNT ALL) FLAGGED
        S: * ESEARCH (TAG "a567") UID COUNT 17 ALL 4:18,21,28
        S: a567 OK
        """,
        flagged_at(28, {*range(4, 19), 21, 28}),
    ),
    "7.3.4-esearch-uid-no-tag": Example(
        """
        C: x UID SEARCH RETURN (COUNT ALL) FLAGGED
        S: * ESEARCH UID COUNT 17 ALL 4:18,21,28
        S: x OK
        """,
        flagged_at(28, {*range(4, 19), 21, 28}),
        differs={
            "* ESEARCH UID COUNT 17 ALL 4:18,21,28": (
                '* ESEARCH (TAG "x") UID COUNT 17 ALL 4:18,21,28'
            )
        },
        reason="an ESEARCH without the correlator is one no command caused (7.3.4); mailgw's "
        "ESEARCH always answers a command, so it carries the command's tag",
    ),
    "7.3.4-esearch-no-tag": Example(
        """
        C: x SEARCH RETURN (COUNT ALL) FLAGGED
        S: * ESEARCH COUNT 18 ALL 1:17,21
        S: x OK
        """,
        flagged_at(21, {*range(1, 18), 21}),
        differs={"* ESEARCH COUNT 18 ALL 1:17,21": '* ESEARCH (TAG "x") COUNT 18 ALL 1:17,21'},
        reason="as for the example before: mailgw's ESEARCH always carries its command's tag",
    ),
    "7.5.2-fetch-with-uid": Example(
        """
        C: f FETCH 23 (FLAGS RFC822.SIZE UID)
        S: * 23 FETCH (FLAGS (\\Seen) RFC822.SIZE 44827 UID 447)
        S: f OK
        """,
        fetch_box,
    ),
    "7.1-alreadyexists": Example(
        """
        C: o356 RENAME this that
        S: o356 NO [ALREADYEXISTS] Mailbox "that" already exists
        """,
        folders("this", "that"),
    ),
    "7.1-nonexistent": Example(
        """
        C: p RENAME this that
        S: p NO [NONEXISTENT] No such mailbox
        """
    ),
    "7.1-authenticationfailed": Example(
        """
        C: b LOGIN "fred" "foo"
        S: b NO [AUTHENTICATIONFAILED] Authentication failed
        """,
        login=False,
    ),
    "7.1-authorizationfailed": Example(
        """
        C: c1 AUTHENTICATE PLAIN YWRtaW4AYWxpY2VAZXhhbXBsZS50ZXN0AHNlY3JldA==
        S: c1 NO [AUTHORIZATIONFAILED] No such authorization-ID
        """,
        login=False,
        reason='the RFC elides the client\'s response ("..."); here it is the initial response '
        "(SASL-IR) of authorization identity admin, Alice's name and password",
    ),
    "7.1-expungeissued": Example(
        """
        C: h search from maria@example.com
        S: * ESEARCH (TAG "h") ALL 1:3,5,8,13,21,42
        S: h OK [EXPUNGEISSUED] Search completed
        """,
        from_maria,
        differs={"h OK [EXPUNGEISSUED] Search completed": "h OK Search completed"},
        reason="EXPUNGEISSUED tells that another session expunged meanwhile; none did here",
    ),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_rfc9051_example(connect, server, name):
    """The example replayed after ENABLE IMAP4rev2 (module docstring: what is normalised)."""
    example = EXAMPLES[name]
    assert example.reason or not example.differs, "a difference needs its reason"
    client = connect(login=example.login, rev2=example.rev2 and example.login)
    choices = example.setup(server, client)
    replay(client, example, choices)


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


def test_rfc9051_example_6_3_13_idle(connect, server):
    """6.3.13's IDLE example: new mail and another client's expunges told while idling, none
    during FETCH.  The other client expunges by MOVE (so no flag change is told first) and
    delivers by APPEND.  mailgw answers IDLE's continuation first and then what is pending
    (the RFC shows A004's EXPUNGE and EXISTS before "+ idling"; RFC 2177 allows either)."""
    inbox = server.store.folder(ALICE)
    fill(inbox, 3)
    client, other = connect(), connect(rev2=False)
    other.ok(b"o SELECT INBOX")
    lines = Lines(client.sock)
    client.sock.sendall(b"A001 SELECT INBOX\r\n")
    answer = [lines.next() for _ in range(7)]
    rfc = [  # the RFC's, with mailgw's choices of flags, UIDVALIDITY and UIDNEXT put in
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]",
        b"* 3 EXISTS",
        b"* OK [UIDVALIDITY %d]" % inbox.uid_validity,
        b"* OK [UIDNEXT 4]",
        b'* LIST () "." "INBOX"',
        b"* OK [HIGHESTMODSEQ %d]" % inbox.highest_modseq,  # mailgw announces CONDSTORE
    ]
    assert sorted(map(normalised, answer)) == sorted(rfc)
    assert lines.take(1) == [b"A001 OK [READ-WRITE]"]
    client.sock.sendall(b"A002 IDLE\r\n")
    assert lines.take(1) == [b"+"]
    other.ok(b"o APPEND INBOX {%d+}\r\n" % len(message("new")) + message("new"))
    assert lines.take(1) == [b"* 4 EXISTS"]
    client.sock.sendall(b"DONE\r\n")
    assert lines.take(1) == [b"A002 OK"]
    other.ok(b"o MOVE 2 Trash")
    client.sock.sendall(b"A003 FETCH 4 ALL\r\n")
    fetched = lines.next()
    assert fetched.startswith(b"* 4 FETCH (FLAGS () INTERNALDATE "), fetched  # no \\Recent
    assert lines.take(1) == [b"A003 OK"]
    client.sock.sendall(b"A004 IDLE\r\n")
    assert lines.take(3) == [b"+", b"* 2 EXPUNGE", b"* 3 EXISTS"]
    other.ok(b"o MOVE 3 Trash")
    assert lines.take(2) == [b"* 3 EXPUNGE", b"* 2 EXISTS"]
    other.ok(b"o APPEND INBOX {%d+}\r\n" % len(message("newer")) + message("newer"))
    assert lines.take(1) == [b"* 3 EXISTS"]
    client.sock.sendall(b"DONE\r\n")
    assert lines.take(1) == [b"A004 OK"]
    client.sock.sendall(b"A005 FETCH 3 ALL\r\n")
    assert lines.next().startswith(b"* 3 FETCH (FLAGS () INTERNALDATE ")
    assert lines.take(1) == [b"A005 OK"]


def deliver(server, count: int) -> None:
    """``count`` new messages in INBOX, \\Recent for the first session to see them."""
    inbox = server.store.folder(ALICE)
    for n in range(count):
        inbox.append(message(f"new{n}"))


def test_rev1_session_keeps_recent_and_search_responses(connect, server):
    """A session that does not ENABLE IMAP4rev2 sees IMAP4rev1 as before, though CAPABILITY
    lists both: RECENT and [UNSEEN n] in SELECT, \\Recent in FLAGS, * SEARCH, no LIST line."""
    deliver(server, 2)
    client = connect(rev2=False)
    caps = client.send(b"c CAPABILITY")[0].split()
    assert caps[2:4] == [b"IMAP4rev1", b"IMAP4rev2"]
    selected = client.ok(b"s SELECT INBOX")
    assert b"* 2 RECENT" in selected and b"* OK [UNSEEN 1] First unseen" in selected
    assert not [line for line in selected if line.startswith(b"* LIST")]
    assert client.send(b"f FETCH 1 (FLAGS)")[0] == b"* 1 FETCH (FLAGS (\\Recent))"
    assert client.send(b"x SEARCH RECENT") == [b"* SEARCH 1 2", b"x OK SEARCH completed"]
    deliver(server, 1)
    assert client.send(b"n NOOP")[:2] == [b"* 3 EXISTS", b"* 3 RECENT"]


def test_rev2_session_shows_no_recent(connect, server):
    """After ENABLE IMAP4rev2: no RECENT response and no \\Recent flag, in SELECT, FETCH and
    for new mail; the messages it saw first are not \\Recent for a later session either."""
    deliver(server, 2)
    client = connect()
    selected = client.ok(b"s SELECT INBOX")
    assert not [line for line in selected if b"RECENT" in line or b"[UNSEEN " in line]
    assert client.send(b"f FETCH 1:* (FLAGS)")[:2] == [
        b"* 1 FETCH (FLAGS ())",
        b"* 2 FETCH (FLAGS ())",
    ]
    assert client.send(b"x SEARCH RECENT") == [b'* ESEARCH (TAG "x")', b"x OK SEARCH completed"]
    deliver(server, 1)
    assert client.send(b"n NOOP") == [b"* 3 EXISTS", b"n OK NOOP completed"]
    assert client.send(b"f FETCH 3 (FLAGS)")[0] == b"* 3 FETCH (FLAGS ())"
    later = connect(rev2=False)
    assert b"* 0 RECENT" in later.ok(b"s EXAMINE INBOX")


def test_rev2_search_answers_esearch_even_when_empty(connect, server):
    """RFC 9051 6.4.4: SEARCH and UID SEARCH answer ESEARCH (with the UID indicator), also
    when nothing matches; a rev1 session still gets * SEARCH."""
    fill(server.store.folder(ALICE), 3, lambda n: {"\\Seen"} if n == 2 else set())
    client, old = connect(), connect(rev2=False)
    client.ok(b"s SELECT INBOX")
    old.ok(b"s SELECT INBOX")
    assert client.send(b"a UID SEARCH UNSEEN")[0] == b'* ESEARCH (TAG "a") UID ALL 1,3'
    assert client.send(b"b SEARCH KEYWORD nothing")[0] == b'* ESEARCH (TAG "b")'
    assert old.send(b"a UID SEARCH UNSEEN")[0] == b"* SEARCH 1 3"
    assert old.send(b"b SEARCH KEYWORD nothing")[0] == b"* SEARCH"


def test_rev2_unsolicited_fetch_carries_uid(connect, server):
    """RFC 9051 7.5.2: a flag change made elsewhere reaches a rev2 session with UID; a rev1
    session gets FLAGS alone, as before."""
    fill(server.store.folder(ALICE), 3)
    rev2, rev1, other = connect(), connect(rev2=False), connect(rev2=False)
    for client in (rev2, rev1, other):
        client.ok(b"s SELECT INBOX")
    other.ok(b"t STORE 2 +FLAGS.SILENT (\\Seen)")
    assert rev2.send(b"n NOOP")[0] == b"* 2 FETCH (FLAGS (\\Seen) UID 2)"
    assert rev1.send(b"n NOOP")[0] == b"* 2 FETCH (FLAGS (\\Seen))"


def test_rev2_status_deleted_size_and_lsub(connect, server):
    """STATUS with DELETED and SIZE (RFC 9051 6.3.11), and the deprecated LSUB still answered."""
    uids = fill(server.store.folder(ALICE), 3, lambda n: {"\\Deleted"} if n != 1 else set())
    inbox = server.store.folder(ALICE)
    size = sum(inbox.get(uid).size for uid in uids)
    client = connect()
    assert client.send(b"s STATUS INBOX (MESSAGES DELETED SIZE)")[0] == (
        b'* STATUS "INBOX" (MESSAGES 3 DELETED 2 SIZE %d)' % size
    )
    assert client.send(b'l LSUB "" INBOX') == [b'* LSUB () "." "INBOX"', b"l OK LSUB completed"]


def test_enable_imap4rev2_in_the_selected_state_is_bad(connect, server):
    """ENABLE is valid only in the authenticated state: with a mailbox selected it is BAD and
    the session stays IMAP4rev1; before login too."""
    fill(server.store.folder(ALICE), 1)
    client = connect(rev2=False)
    client.ok(b"s SELECT INBOX")
    assert client.send(b"e ENABLE IMAP4rev2")[-1].startswith(b"e BAD ")
    assert client.send(b"x SEARCH ALL")[0] == b"* SEARCH 1"
    before = connect(login=False, rev2=False)
    assert before.send(b"e ENABLE IMAP4rev2")[-1].startswith(b"e BAD ")
    assert client.send(b"e ENABLE")[-1].startswith(b"e BAD ")


def test_enable_names_imap4rev2_in_any_case_once(connect):
    """Capability names are case-insensitive; * ENABLED spells IMAP4rev2 as CAPABILITY does,
    lists it once, and not again."""
    client = connect(rev2=False)
    assert client.send(b"e ENABLE imap4REV2 IMAP4rev2") == [
        b"* ENABLED IMAP4rev2",
        b"e OK ENABLE completed",
    ]
    assert client.send(b"f ENABLE IMAP4rev2")[0] == b"* ENABLED"


def test_imap4rev2_off_is_neither_announced_nor_enabled(connect, server, monkeypatch):
    """With ``IMAP4REV2`` off, CAPABILITY has no IMAP4rev2 and ENABLE IMAP4rev2 is ignored
    (RFC 5161: what the server does not offer is not enabled); the session stays rev1."""
    monkeypatch.setattr(imap_session, "IMAP4REV2", False)
    fill(server.store.folder(ALICE), 1)
    client = connect(rev2=False)
    assert b"IMAP4rev2" not in client.send(b"c CAPABILITY")[0]
    assert client.send(b"e ENABLE IMAP4rev2")[0] == b"* ENABLED"
    client.ok(b"s SELECT INBOX")
    assert client.send(b"x SEARCH ALL")[0] == b"* SEARCH 1"


def test_rev2_names_are_utf8(connect, server):
    """RFC 9051 5.1: a rev2 session is told mailbox names in UTF-8 (LIST, STATUS, SELECT's LIST
    line); a rev1 session in modified UTF-7, as before."""
    old = connect(rev2=False)
    old.ok(b"c CREATE Entw&APw-rfe")
    client = connect()
    name = "Entwürfe".encode()
    listed = b'* LIST () "." {%d}\r\n%s' % (len(name), name)
    assert b"\r\n".join(client.send(b'l LIST "" Entw*')) == listed + b"\r\nl OK LIST completed"
    assert b"\r\n".join(client.send(b's STATUS "' + name + b'" (MESSAGES)')) == (
        b"* STATUS {%d}\r\n%s (MESSAGES 0)\r\ns OK STATUS completed" % (len(name), name)
    )
    assert listed in b"\r\n".join(client.ok(b'x SELECT "' + name + b'"'))
    assert old.send(b'l LIST "" Entw*')[0] == b'* LIST () "." "Entw&APw-rfe"'
