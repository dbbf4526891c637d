"""mailgw.imap.wire.mutf7: modified UTF-7 mailbox names, as Twisted's codec spelled them."""

from __future__ import annotations

import pytest
import twisted.mail.imap4  # noqa: F401  (registers the imap4-utf-7 codec compared against)
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.imap.wire import mutf7

NAMES = [
    "INBOX",
    "",
    "~peter/mail/台北/日本語",
    "Entwürfe",
    "Tom & Jerry",
    "&",
    "&&",
    "é&é",
    "😀 smileys",
    "\x01control",
    "a-b&-c",
]


@pytest.mark.parametrize("name", NAMES)
def test_matches_twisted_codec(name):
    assert mutf7.encode(name) == name.encode("imap4-utf-7")
    assert mutf7.decode(name.encode("imap4-utf-7")) == name


def test_rfc_3501_example():
    assert mutf7.encode("~peter/mail/台北/日本語") == b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"&", "unterminated"),
        (b"abc&AOk", "unterminated"),
        (b"&AO!-", "bad base64"),
        (b"&AO-", "truncated"),
        (b"&AOl-", "non-canonical"),  # padding bits not zero
        (b"&AGE-", "non-canonical"),  # "a" must be written as itself
        (b"&AOk-&AOk-", "non-canonical"),  # one section, not two
        (b"&2D0-", "UTF-16"),  # a lone high surrogate
        (b"&3gA-", "UTF-16"),  # a lone low surrogate
        (b"tab\there", "control"),
        (b"\xff\xfe", "neither"),
    ],
)
def test_malformed_raises_value_error(raw, reason):
    with pytest.raises(ValueError, match=reason):
        mutf7.decode(raw)


def test_control_characters_are_encoded_unlike_twisted():
    assert mutf7.encode("a\nb") == b"a&AAo-b"
    assert mutf7.decode(b"a&AAo-b") == "a\nb"


def test_utf8_names_are_taken_as_utf8():
    assert mutf7.decode("Entwürfe & Co".encode()) == "Entwürfe & Co"


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30))
def test_round_trip_and_twisted_agree(name):
    encoded = mutf7.encode(name)
    assert encoded.isascii()
    assert mutf7.decode(encoded) == name
    # Twisted's codec goes through Python's UTF-7, which leaves TAB, LF and CR unencoded
    # (so it writes "\n" as "&-", which is "&"); lone surrogates it cannot encode at all.
    if not any(0xD800 <= ord(c) <= 0xDFFF or c in "\t\n\r" for c in name):
        assert encoded == name.encode("imap4-utf-7")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_any_bytes_decode_or_raise_value_error(raw):
    try:
        name = mutf7.decode(raw)
    except ValueError:
        return
    assert mutf7.encode(name) == raw or not raw.isascii()
