"""mailgw.imap.structure: the RFC 3501 examples byte for byte, sections, BINARY, and a fuzz test.

The comparison with a real Dovecot is in ``test_imap_structure_dovecot``; here are the cases
that need no server: the ENVELOPE and BODY examples of RFC 3501 section 7.4.2 (repeated in
RFC 9051 section 7.5.2), what each BODY[section] returns, transfer decoding for BINARY, and
broken messages (random and mutated) that must never raise anything but the documented
UnknownTransferEncoding, in bounded time.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgw.imap.structure import (
    UnknownTransferEncoding,
    envelope_of_header,
    header_block,
    parse_message,
)
from mailgw.imap.wire.commands import Section
from mailgw.imap.wire.responses import encode

CORPUS = sorted((Path(__file__).parent / "data" / "mime").glob("*.eml"))


def crlf(text: str) -> bytes:
    """``text`` with CRLF line endings, as a stored message has them."""
    return text.replace("\n", "\r\n").encode("utf-8")


# -- RFC 3501 7.4.2 / RFC 9051 7.5.2 ----------------------------------------------------------

RFC_ENVELOPE_MESSAGE = crlf(
    "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
    "From: Terry Gray <gray@cac.washington.edu>\n"
    "Subject: IMAP4rev1 WG mtg summary and minutes\n"
    "To: imap@cac.washington.edu\n"
    "cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\n"
    "Message-Id: <B27397-0100000@cac.washington.edu>\n"
    "\n"
    "Minutes.\n"
)
RFC_ENVELOPE = (
    b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
    b'((NIL NIL "imap" "cac.washington.edu")) '
    b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
    b'NIL NIL "<B27397-0100000@cac.washington.edu>")'
)
RFC_BODY = (
    b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
    b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
    b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")'
)


def content(line_count: int, octets: int) -> bytes:
    """Part content of ``octets`` octets holding ``line_count`` line endings (the CRLF before
    the next boundary is the boundary's, so the content ends without one)."""
    width = (octets - 2 * line_count) // line_count
    body = (b"t" * width + b"\r\n") * line_count
    return body + b"t" * (octets - len(body))


def rfc_body_message() -> bytes:
    """A message whose BODY is the RFC 3501 example (1152 octets in 23 lines, then a base64
    part of 4554 octets in 73 lines)."""
    return (
        crlf(
            "From: gray@cac.washington.edu\n"
            "MIME-Version: 1.0\n"
            'Content-Type: MULTIPART/MIXED; BOUNDARY="x"\n'
            "\n"
            "--x\n"
            "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
            "Content-Transfer-Encoding: 7BIT\n"
            "\n"
        )
        + content(23, 1152)
        + crlf(
            "\n--x\n"
            'Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME="cc.diff"\n'
            "Content-ID: <960723163407.20117h@cac.washington.edu>\n"
            "Content-Description: Compiler diff\n"
            "Content-Transfer-Encoding: BASE64\n"
            "\n"
        )
        + content(73, 4554)
        + b"\r\n--x--\r\n"
    )


def test_rfc3501_envelope_example_byte_for_byte():
    assert encode(parse_message(RFC_ENVELOPE_MESSAGE).envelope()) == RFC_ENVELOPE
    assert encode(envelope_of_header(header_block(RFC_ENVELOPE_MESSAGE))) == RFC_ENVELOPE


def test_rfc3501_body_example_byte_for_byte():
    message = parse_message(rfc_body_message())
    assert encode(message.body_structure(extended=False)) == RFC_BODY


def test_bodystructure_adds_extension_data():
    message = parse_message(rfc_body_message())
    assert encode(message.body_structure(extended=True)) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23 NIL NIL NIL NIL)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73 '
        b'NIL NIL NIL NIL) "MIXED" ("BOUNDARY" "x") NIL NIL NIL)'
    )


# -- ENVELOPE -------------------------------------------------------------------------------


def test_envelope_keeps_encoded_words_and_splits_groups():
    header = crlf(
        "From: =?UTF-8?Q?J=C3=B6rg?= <joerg@example.test>\n"
        'To: Team: a@example.test, "B, Bee" <b@example.test>;, solo@example.test\n'
        "Cc: undisclosed-recipients:;\n"
        "Subject: =?UTF-8?B?R3LDvMOfZQ==?=\n\n"
    )
    assert encode(envelope_of_header(header)) == (
        b'(NIL "=?UTF-8?B?R3LDvMOfZQ==?=" (("=?UTF-8?Q?J=C3=B6rg?=" NIL "joerg" "example.test")) '
        b'(("=?UTF-8?Q?J=C3=B6rg?=" NIL "joerg" "example.test")) '
        b'(("=?UTF-8?Q?J=C3=B6rg?=" NIL "joerg" "example.test")) '
        b'((NIL NIL "Team" NIL)(NIL NIL "a" "example.test")("B, Bee" NIL "b" "example.test")'
        b'(NIL NIL NIL NIL)(NIL NIL "solo" "example.test")) '
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL NIL)'
    )


def test_envelope_of_a_message_without_header_is_all_nil():
    assert (
        encode(parse_message(b"\r\nbody\r\n").envelope()) == b"(" + b" ".join([b"NIL"] * 10) + b")"
    )
    assert encode(parse_message(b"").envelope()) == b"(" + b" ".join([b"NIL"] * 10) + b")"


def test_envelope_unfolds_and_sends_cleaned_subjects_as_literals():
    header = crlf(
        'Subject: a folded\n  subject "quoted"\nDate: Mon, 7 Feb 1994\n 21:52:25 -0800\n\n'
    )
    envelope = encode(envelope_of_header(header))
    assert envelope.startswith(
        b'("Mon, 7 Feb 1994 21:52:25 -0800" {25}\r\na folded subject "quoted" NIL'
    )


def test_envelope_fills_in_what_an_address_lacks():
    header = crlf("From: Bob\nTo: a@example.test, , <>\nReply-To: <broken@x:y@z>, next@z\n\n")
    assert encode(envelope_of_header(header)) == (
        b'(NIL NIL ((NIL NIL "Bob" "MISSING_DOMAIN")) ((NIL NIL "Bob" "MISSING_DOMAIN")) '
        b'((NIL NIL "broken" "SYNTAX_ERROR")) ((NIL NIL "a" "example.test")'
        b'(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")'
        b'(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) '
        b"NIL NIL NIL NIL)"
    )


# -- BODY[section] -------------------------------------------------------------------------

NESTED = (Path(__file__).parent / "data" / "mime" / "nested_rfc822.eml").read_bytes()


def section(data: bytes, part=(), text=None, fields=()) -> bytes:
    return parse_message(data).section(Section(tuple(part), text, tuple(fields)))


def test_whole_message_header_and_text():
    head, _, body = NESTED.partition(b"\r\n\r\n")
    assert section(NESTED) == NESTED
    assert section(NESTED, text="HEADER") == head + b"\r\n\r\n"
    assert section(NESTED, text="TEXT") == body


def test_parts_of_a_nested_message():
    assert section(NESTED, [1]) == b"Forwarded below.\r\n"
    assert section(NESTED, [1], "MIME") == b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    assert section(NESTED, [2], "MIME") == (
        b"Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
    )
    assert section(NESTED, [2], "HEADER").startswith(b"From: Carol <carol@example.test>\r\n")
    assert section(NESTED, [2], "HEADER").endswith(b'boundary="b2"\r\n\r\n')
    assert section(NESTED, [2], "TEXT") == section(NESTED, [2]).partition(b"\r\n\r\n")[2]
    assert section(NESTED, [2, 1]) == b"inner text"
    assert section(NESTED, [2, 2], "MIME") == b"Content-Type: text/enriched\r\n\r\n"
    assert section(NESTED, [2], "HEADER.FIELDS", ["SUBJECT", "to"]) == (
        b"To: Bob <bob@remote.test>\r\nSubject: original\r\n\r\n"
    )


def test_header_fields_not_keeps_stored_order_and_folding():
    data = crlf("B: 1\nA: two\n  lines\nb: 3\nC: 4\n\nbody\n")
    assert section(data, text="HEADER.FIELDS", fields=["b"]) == crlf("B: 1\nb: 3\n\n")
    assert section(data, text="HEADER.FIELDS.NOT", fields=["B", "c"]) == crlf("A: two\n  lines\n\n")
    assert section(data, text="HEADER.FIELDS", fields=["missing"]) == b"\r\n"


def test_part_one_of_a_single_part_message_is_its_body():
    data = crlf("Subject: s\n\nthe body\n")
    assert section(data, [1]) == b"the body\r\n"
    assert section(data, [1], "MIME") == b"Subject: s\r\n\r\n"


@pytest.mark.parametrize(
    "part, text",
    [
        ([3], None),
        ([1, 1, 1], None),
        ([2, 3], None),
        ([9, 9, 9], "MIME"),
        ([1], "HEADER"),
        ([1], "TEXT"),
    ],
)
def test_a_part_that_does_not_exist_is_empty(part, text):
    assert section(NESTED, part, text) == b""


def test_bare_lf_message_is_served_with_crlf():
    message = parse_message(b"Subject: lf\nContent-Type: text/plain\n\none\ntwo\n")
    assert (
        message.section(Section())
        == b"Subject: lf\r\nContent-Type: text/plain\r\n\r\none\r\ntwo\r\n"
    )
    assert message.body_structure(False) == [
        b"text",
        b"plain",
        [b"charset", b"us-ascii"],
        None,
        None,
        b"7bit",
        10,
        2,
    ]


def test_a_nul_is_sent_as_0x80_in_sections_but_kept_by_binary():
    message = parse_message(crlf("Subject: a\x00b\n\nc\x00d\n"))
    assert message.section(Section()) == b"Subject: a\x80b\r\n\r\nc\x80d\r\n"
    assert message.section(Section((1,))) == b"c\x80d\r\n"
    assert message.binary((1,)) == b"c\x00d\r\n"


def test_rfc2231_parameters_are_joined():
    data = crlf(
        "Content-Type: application/octet-stream;\n name*0*=utf-8''%E2%82%AC;\n name*1*=%20x.txt;"
        ' title*1="b"; title*0="a"\n\ndata'
    )
    assert parse_message(data).body_structure(False)[2] == [
        b"name*",
        b"utf-8''%E2%82%AC%20x.txt",
        b"title",
        b"ab",
    ]


@pytest.mark.parametrize(
    "params, expected",
    [
        (b"; a*0=x; a*2=z", [b"a*0", b"x", b"a*2", b"z"]),  # a gap: pieces stay apart
        (b"; a*0=50%; a*1*=%41", [b"a*", b"''50%25%41"]),  # plain first piece of an extended
        (b"; b*0=x; b*1=y; c*=z", [b"b", b"xy", b"c*1*", b"z"]),  # Dovecot's numbering
        (b'; broken="unclosed; next=1', []),
        (b"; x=1 junk; y=2", [b"x", b"1", b"y", b"2"]),
        (b"; x=1 (open comment; y=2", []),
    ],
)
def test_parameters_are_read_as_dovecot_reads_them(params, expected):
    data = b"Content-Type: application/x-test" + params + b"\r\n\r\nbody"
    assert parse_message(data).body_structure(False)[2] == (expected or None)


# -- BINARY --------------------------------------------------------------------------------


def part_with(encoding: str, body: bytes) -> bytes:
    return crlf(f"Content-Transfer-Encoding: {encoding}\n\n") + body


@pytest.mark.parametrize(
    "encoding, body, decoded",
    [
        ("base64", b"aGVsbG8g\r\nd29ybGQ=", b"hello world"),
        ("BASE64", b"aGVs bG8*", b"hello"),
        ("base64", b"aGVsbA", b"hell"),
        ("quoted-printable", b"caf=C3=A9 =\r\nsoft  \r\n=3D=zz", "café soft\r\n==zz".encode()),
        ("Quoted-Printable", b"a=\nb", b"ab"),
        ("7bit", b"as is=41", b"as is=41"),
        ("8bit", "h\u00e9".encode(), "h\u00e9".encode()),
        ("binary", b"\x00\xff", b"\x00\xff"),
    ],
)
def test_binary_undoes_the_transfer_encoding(encoding, body, decoded):
    message = parse_message(part_with(encoding, body))
    assert message.binary((1,)) == decoded
    assert message.binary_size((1,)) == len(decoded)


def test_binary_of_an_unknown_encoding_raises_the_documented_error():
    message = parse_message(part_with("x-uuencode", b"begin 644 f\r\nend\r\n"))
    with pytest.raises(UnknownTransferEncoding):
        message.binary((1,))
    with pytest.raises(UnknownTransferEncoding):
        message.binary_size((1,))


def test_binary_of_a_missing_part_is_empty_and_of_a_7bit_message_is_the_message():
    message = parse_message(NESTED)
    assert message.binary((7,)) == b""
    assert message.binary(()) == NESTED
    assert message.binary((2, 1)) == b"inner text"


def test_binary_of_a_multipart_decodes_each_part_and_relabels_it():
    data = crlf(
        "Subject: two parts\nContent-Type: multipart/mixed; boundary=b\n\npreamble\n"
        "--b\nContent-Transfer-Encoding: base64\nContent-Type: text/plain\n\naGk=\n"
        "--b\nContent-Type: text/plain\nContent-Transfer-Encoding: 8bit\n\nas is\n--b--\n"
    )
    decoded = crlf(
        "Subject: two parts\nContent-Type: multipart/mixed; boundary=b\n\npreamble\n"
        "--b\nContent-Type: text/plain\nContent-Transfer-Encoding: binary\n\nhi\n"
        "--b\nContent-Type: text/plain\nContent-Transfer-Encoding: 8bit\n\nas is\n--b--\n"
    )
    message = parse_message(data)
    assert message.binary(()) == decoded
    assert message.binary_size(()) == len(decoded)
    assert message.binary((1,)) == b"hi"


# -- robustness ----------------------------------------------------------------------------


def exercise(data: bytes) -> None:
    """Every public function on ``data``: only UnknownTransferEncoding may come out."""
    message = parse_message(data)
    encode(message.envelope())
    encode(envelope_of_header(header_block(data)))
    encode(message.body_structure(True))
    encode(message.body_structure(False))
    for part in [(), (1,), (2,), (1, 1), (2, 1), (2, 2, 1), (3,)]:
        for text in (None, "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            if text == "MIME" and not part:
                continue
            message.section(Section(part, text, ("From", "content-type")))
        try:
            message.binary(part)
            message.binary_size(part)
        except UnknownTransferEncoding:
            pass


def mutated(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """``data`` with each (position, deleted length, inserted octets) applied."""
    for position, length, insert in edits:
        position %= len(data) + 1
        data = data[:position] + insert + data[position + length :]
    return data


_PIECES = st.sampled_from(
    [
        b"\r\n",
        b"\n",
        b"--",
        b'"',
        b"(",
        b")",
        b";",
        b"=",
        b"*0*=",
        b"\\",
        b":",
        b"<",
        b">",
        b"\r\n\r\n",
        b"multipart/mixed; boundary=",
        b"message/rfc822",
        b"\xff",
        b"\x00",
        b" ",
    ]
)
_EDITS = st.lists(
    st.tuples(
        st.integers(0, 10_000), st.integers(0, 40), st.one_of(_PIECES, st.binary(max_size=8))
    ),
    max_size=12,
)
_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=2_000))
def test_random_bytes_never_raise(data):
    exercise(data)


@_FUZZ
@given(st.sampled_from(CORPUS), _EDITS)
def test_mutated_corpus_messages_never_raise(path, edits):
    exercise(mutated(path.read_bytes(), edits))


def test_pathological_messages_finish_quickly():
    deep = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (n, n)
        for n in range(2000)
    )
    rfc822 = b"Content-Type: message/rfc822\r\n\r\n" * 5000
    parts = b"Content-Type: multipart/mixed; boundary=p\r\n\r\n" + b"--p\r\n\r\nx\r\n" * 20_000
    huge_header = b"Subject: " + b"w " * 200_000 + b"\r\nTo: " + b"a@b, " * 20_000 + b"\r\n\r\n"
    unbalanced = (
        b'Content-Type: text/plain; name="' + b"(" * 50_000 + b"\r\nFrom: " + b'"(' * 50_000
    )
    deep_over_big = (
        b"".join(
            b"Content-Type: multipart/mixed; boundary=n%03d\r\n\r\n--n%03d\r\n" % (n, n)
            for n in range(99)
        )
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + (b"QUJD" * 19 + b"\r\n") * 30_000
    )
    for data in (deep, rfc822, parts, huge_header, unbalanced, deep_over_big):
        started = time.monotonic()
        exercise(data)
        assert time.monotonic() - started < 5, data[:60]


def test_nesting_is_cut_at_the_depth_limit():
    deep = b"".join(
        b"Content-Type: multipart/mixed; boundary=n%04d\r\n\r\n--n%04d\r\n" % (n, n)
        for n in range(150)
    )
    body = encode(parse_message(deep).body_structure(False))
    depth = len(body) - len(body.lstrip(b"("))
    # 99 multiparts, the message counted, then the 100th as a leaf (Dovecot's limit).
    assert depth == 100
    assert body[depth:].startswith(b'"application" "octet-stream" ("boundary" "n0099")')
