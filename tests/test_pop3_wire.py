"""POP3 wire format without a network: command parsing, SASL PLAIN, byte-stuffing, TOP's cut."""

from __future__ import annotations

import io

import pytest

from mailgw.pop3.multiline import DotStuffer, TopReader
from mailgw.pop3.parser import Command, CommandError, parse_command
from mailgw.pop3.sasl import Cancelled, SaslError, decode_response, plain_credentials


def test_commands_parse_case_insensitively_with_typed_arguments():
    assert parse_command(b"stat") == Command("STAT")
    assert parse_command(b"List 3\r") == Command("LIST", number=3)
    assert parse_command(b"LIST") == Command("LIST")
    assert parse_command(b"TOP 2 0") == Command("TOP", number=2, count=0)
    assert parse_command(b"USER alice@example.test") == Command("USER", text=b"alice@example.test")


def test_pass_keeps_spaces_in_the_password():
    assert parse_command(b"PASS  a secret ") == Command("PASS", text=b" a secret ")


def test_auth_takes_a_mechanism_and_an_optional_initial_response():
    assert parse_command(b"AUTH") == Command("AUTH")
    assert parse_command(b"auth plain") == Command("AUTH", text=b"PLAIN")
    long_response = b"A" * 300
    assert parse_command(b"AUTH PLAIN " + long_response) == Command(
        "AUTH", text=b"PLAIN", response=long_response
    )


def test_arguments_are_limited_to_40_characters_except_passwords():
    assert parse_command(b"USER " + b"u" * 40).text == b"u" * 40
    assert parse_command(b"PASS " + b"p" * 200).text == b"p" * 200
    with pytest.raises(CommandError, match="40 characters"):
        parse_command(b"USER " + b"u" * 41)


@pytest.mark.parametrize(
    "line",
    [
        b"DELE 0",
        b"RETR 0",
        b"RETR -1",
        b"RETR +1",
        b"RETR x",
        b"RETR 1x",
        b"RETR",
        b"RETR 1 2",
        b"RETR 99999999999999999999",
        b"LIST 0",
        b"UIDL 1 2",
        b"TOP 1",
        b"TOP 1 -1",
        b"TOP 0 1",
        b"STAT 1",
        b"USER",
        b"USER a b",
        b"PASS",
        b"",
        b"XYZZY",
        b"APOP alice digest",
        b"\xff\xfe",
        b"RETR \xd9\xa1",
        b"AUTH PLAIN abc extra",
        b"AUTH " + b"M" * 41,
        b"NOOP " + b"x" * 41,
    ],
)
def test_bad_lines_raise_command_error(line):
    with pytest.raises(CommandError):
        parse_command(line)


def stuff(message: bytes, chunk: int) -> bytes:
    stuffer = DotStuffer()
    parts = [stuffer.transform(message[i : i + chunk]) for i in range(0, len(message), chunk)]
    return b"".join(parts) + stuffer.terminator()


def unstuff(wire: bytes) -> bytes:
    assert wire.endswith(b"\r\n.\r\n")
    lines = wire[: -len(b".\r\n")].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 16384])
def test_dot_stuffing_holds_across_chunk_boundaries(chunk):
    message = b".first\r\nSubject: x\r\n\r\n.\r\n..two\r\nmid.dle\r\n.end\r\n"
    wire = stuff(message, chunk)
    assert b"\r\n.\r\n" not in wire[:-5]
    assert wire.startswith(b"..first\r\n")
    assert b"\r\n...two\r\n" in wire
    assert unstuff(wire) == message


def test_terminator_adds_crlf_when_the_message_lacks_one():
    assert stuff(b"Subject: x\r\n\r\nno end", 4).endswith(b"no end\r\n.\r\n")
    assert stuff(b"", 4) == b".\r\n"


def read_all(reader: TopReader, size: int) -> bytes:
    out = []
    while chunk := reader.read(size):
        out.append(chunk)
    return b"".join(out)


MESSAGE = b"From: a@b\r\nSubject: s\r\n\r\nline 1\r\nline 2\r\nline 3\r\n"


@pytest.mark.parametrize("size", [1, 5, 16384])
def test_top_sends_header_blank_line_and_n_body_lines(size):
    assert read_all(TopReader(io.BytesIO(MESSAGE), 0), size) == b"From: a@b\r\nSubject: s\r\n\r\n"
    assert read_all(TopReader(io.BytesIO(MESSAGE), 2), size) == MESSAGE[: -len(b"line 3\r\n")]
    assert read_all(TopReader(io.BytesIO(MESSAGE), 10), size) == MESSAGE


def test_top_of_a_message_without_body_is_the_whole_message():
    assert read_all(TopReader(io.BytesIO(b"Subject: s\r\n"), 3), 16384) == b"Subject: s\r\n"


def test_sasl_responses_decode_base64_equals_and_star():
    assert decode_response(b"AGFsaWNlAHB3\r") == b"\0alice\0pw"
    assert decode_response(b"=") == b""
    with pytest.raises(Cancelled):
        decode_response(b"*")
    with pytest.raises(SaslError):
        decode_response(b"not base64!")


def test_plain_gives_the_user_and_password_and_refuses_a_foreign_identity():
    assert plain_credentials(b"\0alice@x.test\0pw with space") == ("alice@x.test", b"pw with space")
    assert plain_credentials(b"a@x\0a@x\0pw") == ("a@x", b"pw")
    for bad in (
        b"",
        b"a@x\0pw",
        b"\0a@x\0p\0w",
        b"\0\0pw",
        b"\0a@x\0",
        b"b@x\0a@x\0pw",
        b"\0a\x01\0pw",
    ):
        with pytest.raises(SaslError):
            plain_credentials(bad)
