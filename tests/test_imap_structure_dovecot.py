"""Our MIME structure against Debian's Dovecot, byte for byte, over the corpus in data/mime/.

Every ``.eml`` of ``tests/data/mime`` goes into a Maildir that a private Dovecot on loopback
serves (as in ``test_imap_dovecot``).  For each message and each FETCH item below, what
Dovecot answers is compared with what ``mailgw.imap.structure`` gives, serialised with
``responses.encode``: the whole ENVELOPE / BODYSTRUCTURE / BODY value, and the octets of
every BODY[section] and BINARY[part].  Where we answer differently on purpose, the pair is in
EXPECTED_DIFFERENCES with the reason, and the test checks that it still differs (so a stale
entry shows).  Then 120 broken messages (corpus messages with MIME-significant octets
inserted and cut, always the same ones) are compared the same way.  Skipped only when
``dovecot`` is not installed.
"""

from __future__ import annotations

import imaplib
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_imap_dovecot import DOVECOT_USER, PASSWORD, Dovecot, dovecot_binary

from mailgw.imap.structure import ParsedMessage, UnknownTransferEncoding, parse_message
from mailgw.imap.wire.commands import Section
from mailgw.imap.wire.responses import encode

CORPUS = sorted((Path(__file__).parent / "data" / "mime").glob("*.eml"))

ITEMS = (
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY",
    "BODY.PEEK[]",
    "BODY.PEEK[HEADER]",
    "BODY.PEEK[TEXT]",
    "BODY.PEEK[HEADER.FIELDS (From Subject)]",
    "BODY.PEEK[HEADER.FIELDS (Content-Type X-Not-Cached)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (from subject)]",
    "BODY.PEEK[1]",
    "BODY.PEEK[1.MIME]",
    "BODY.PEEK[1.1]",
    "BODY.PEEK[1.HEADER]",
    "BODY.PEEK[2]",
    "BODY.PEEK[2.MIME]",
    "BODY.PEEK[2.HEADER]",
    "BODY.PEEK[2.TEXT]",
    "BODY.PEEK[2.HEADER.FIELDS (Subject)]",
    "BODY.PEEK[2.1]",
    "BODY.PEEK[2.1.MIME]",
    "BODY.PEEK[2.2]",
    "BODY.PEEK[3]",
    "BINARY.PEEK[]",
    "BINARY.SIZE[]",
    "BINARY.PEEK[1]",
    "BINARY.SIZE[1]",
    "BINARY.PEEK[2]",
    "BINARY.SIZE[2]",
    "BINARY.PEEK[2.1]",
)

_MALFORMED_TYPE = (
    'Dovecot sends an unparseable Content-Type as type "" subtype "" without a line '
    "count; we send text/plain us-ascii as RFC 2045 5.2 says"
)
_BAD_BASE64 = (
    "Dovecot refuses base64 with octets outside the alphabet (NO [PARSE]), and BINARY.SIZE "
    "of any part of that message; we skip those octets, as RFC 2045 6.8 asks of decoders"
)
EXPECTED_DIFFERENCES = {
    ("malformed_ct.eml", "BODYSTRUCTURE"): _MALFORMED_TYPE,
    ("malformed_ct.eml", "BODY"): _MALFORMED_TYPE,
    ("content_type_comments.eml", "BODYSTRUCTURE"): _MALFORMED_TYPE,
    ("content_type_comments.eml", "BODY"): _MALFORMED_TYPE,
    ("params_odd.eml", "BINARY.PEEK[]"): _BAD_BASE64,
    ("params_odd.eml", "BINARY.SIZE[]"): _BAD_BASE64,
    ("params_odd.eml", "BINARY.PEEK[1]"): _BAD_BASE64,
    ("params_odd.eml", "BINARY.SIZE[1]"): _BAD_BASE64,
    ("params_odd.eml", "BINARY.SIZE[2]"): _BAD_BASE64,
}

_SECTION = re.compile(
    r"(?P<kind>BODY|BINARY)(?P<size>\.SIZE)?(?:\.PEEK)?\[(?P<part>[0-9.]*?)\.?"
    r"(?P<text>HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME)?(?: \((?P<fields>.*)\))?\]"
)


class Answer:
    """One FETCH answer of Dovecot: the value after the item's name, as sent."""

    def __init__(self, ok: bool, value: bytes, text: bytes = b"") -> None:
        self.ok = ok
        self.value = value
        self.text = text


#: Octets the mutations insert: the ones MIME parsing turns on.
_PIECES = (
    b"\r\n", b"--", b'"', b"(", b")", b";", b"=", b"*0*=", b"\\", b":", b"<", b">", b" ",
    b"\r\n\r\n", b",", b"@", b"\t", b".", b"boundary=", b"\r\n--x\r\n", b"\r\n ",
    b"Content-Type: multipart/mixed; boundary=x\r\n",
)  # fmt: skip


def mutations(count: int) -> list[bytes]:
    """``count`` broken messages: corpus messages with a few pieces inserted or cut out,
    always the same ones (a fixed seed), CRLF line endings kept."""
    rnd = random.Random(20261203)
    sources = [path.read_bytes() for path in CORPUS if "deep" not in path.name]
    out = []
    for _ in range(count):
        data = rnd.choice(sources)
        for _ in range(rnd.randint(1, 4)):
            at = rnd.randint(0, len(data))
            data = data[:at] + rnd.choice(_PIECES) + data[at + rnd.randint(0, 6) :]
        out.append(data.replace(b"\r\n", b"\n").replace(b"\r", b"").replace(b"\n", b"\r\n"))
    return out


MUTATED = mutations(120)


@pytest.fixture(scope="module")
def dovecot() -> Iterator[tuple[imaplib.IMAP4, dict[str, int]]]:
    """A logged-in client of a Dovecot serving the corpus, then the MUTATED messages, and
    each corpus file's sequence number."""
    dovecot_binary()
    root = Path(tempfile.mkdtemp(prefix="mailgw-dovecot-mime-"))
    root.chmod(0o755)
    maildir = root / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    messages = [path.read_bytes() for path in CORPUS] + MUTATED
    for number, data in enumerate(messages, 1):
        name = f"{1700000000 + number}.M{number}P1.corpus:2,S"
        (maildir / "cur" / name).write_bytes(data)
    server = Dovecot(root, maildir).start()
    try:
        client = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
        client.login(DOVECOT_USER, PASSWORD)
        typ, _ = client.select("INBOX", readonly=True)
        assert typ == "OK"
        yield client, {path.name: number for number, path in enumerate(CORPUS, 1)}
        client.logout()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def ask(client: imaplib.IMAP4, number: int, item: str) -> Answer:
    """Dovecot's answer to ``FETCH number (item)``, the value cut from the FETCH line."""
    client.untagged_responses.pop("FETCH", None)
    typ, data = client.fetch(str(number), f"({item})")
    if typ != "OK":
        return Answer(False, b"", data[0] or b"")
    wire = b""
    for element in data:
        if isinstance(element, tuple):
            wire += element[0] + b"\r\n" + element[1]
        elif not re.fullmatch(rb"\d+ \(UID \d+\)", element or b""):
            wire += element
    label = item.replace(".PEEK", "")
    found = re.match(rb"\d+ \((.+)\)\Z", wire, re.S)
    assert found is not None, wire
    inner = found.group(1)
    head = re.match(rb"[A-Z0-9.]+(?:\[[^\]]*\])? ", inner)
    assert head is not None and head.group().rstrip().upper() == label.upper().encode(), inner
    value = inner[head.end() :]
    if label.startswith(("BODY[", "BINARY[")):
        return Answer(True, _string_value(value))
    return Answer(True, value)


def _string_value(value: bytes) -> bytes:
    """The octets of an IMAP string or literal (NIL is empty)."""
    literal = re.match(rb"~?\{(\d+)\}\r\n", value)
    if literal:
        return value[literal.end() :]
    if value == b"NIL":
        return b""
    return re.sub(rb"\\(.)", rb"\1", value[1:-1])


def ours(message: ParsedMessage, item: str) -> bytes:
    """What mailgw answers for ``item``, in the same form as Answer.value."""
    if item == "ENVELOPE":
        return encode(message.envelope())
    if item in ("BODYSTRUCTURE", "BODY"):
        return encode(message.body_structure(item == "BODYSTRUCTURE"))
    found = _SECTION.fullmatch(item)
    part = tuple(int(n) for n in found["part"].split(".") if n)
    if found["kind"] == "BINARY":
        if found["size"]:
            return b"%d" % message.binary_size(part)
        return message.binary(part)
    fields = tuple(found["fields"].split()) if found["fields"] else ()
    return message.section(Section(part, found["text"], fields))


@pytest.mark.parametrize("path", CORPUS, ids=[path.name for path in CORPUS])
def test_structure_matches_dovecot(dovecot, path):
    client, numbers = dovecot
    message = parse_message(path.read_bytes())
    wrong = []
    for item in ITEMS:
        answer = ask(client, numbers[path.name], item)
        expected_difference = EXPECTED_DIFFERENCES.get((path.name, item))
        if not answer.ok:
            assert b"[UNKNOWN-CTE]" in answer.text or expected_difference, (item, answer.text)
            if b"[UNKNOWN-CTE]" in answer.text:
                with pytest.raises(UnknownTransferEncoding):
                    ours(message, item)
            continue
        mine = ours(message, item)
        if expected_difference:
            assert mine != answer.value, f"no longer differs, drop the entry: {item}"
        elif mine != answer.value:
            wrong.append(f"{item}:\n  dovecot {answer.value!r}\n  mailgw  {mine!r}")
    assert not wrong, "\n".join(wrong)


#: What is compared for broken messages, octet for octet (HEADER.FIELDS with fields Dovecot
#: does not cache, so that it reads the message: from its cache it answers differently).
MUTATED_ITEMS = (
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY.PEEK[HEADER]",
    "BODY.PEEK[TEXT]",
    "BODY.PEEK[HEADER.FIELDS (MIME-Version Content-Disposition X-Only)]",
    "BODY.PEEK[1]",
    "BODY.PEEK[1.MIME]",
    "BODY.PEEK[2]",
    "BODY.PEEK[2.HEADER]",
    "BODY.PEEK[2.1]",
)


#: Broken messages where we do not (yet) match Dovecot, with what is known of why.
MUTATED_DIFFERENCES = {
    (9, "ENVELOPE"): (
        "an address of words cut short by an unclosed quote: Dovecot sends the words as a "
        "literal name, where it quotes the same name cut short by an '@'"
    ),
}


def test_broken_messages_match_dovecot(dovecot):
    """Broken messages are read as Dovecot reads them: the same ENVELOPE, BODYSTRUCTURE
    (but for an unparseable Content-Type, see _MALFORMED_TYPE) and sections."""
    client, _ = dovecot
    wrong = []
    for offset, data in enumerate(MUTATED):
        message = parse_message(data)
        for item in MUTATED_ITEMS:
            answer = ask(client, len(CORPUS) + 1 + offset, item)
            assert answer.ok, (offset, item, answer.text)
            if item == "BODYSTRUCTURE" and b'("" ""' in answer.value:
                continue  # the one difference on purpose
            same = ours(message, item) == answer.value
            if (offset, item) in MUTATED_DIFFERENCES:
                assert not same, f"mutation {offset} {item} matches now: drop the entry"
            elif not same:
                wrong.append(f"mutation {offset} {item}: {answer.value[:200]!r}")
    assert not wrong, "\n".join(wrong[:20])
