"""Submission to other domains: smtplib with AUTH against a live server; the message lands in
the outbound queue (and the local mailboxes) before the 250, or nowhere."""

from __future__ import annotations

import email
import email.policy
import shutil
import smtplib

import pytest

from mailgw.smtp import make_factory

ALICE = "alice@example.test"
BOB = "bob@example.test"
REMOTE = "carol@remote.test"
BODY = b"From: Alice <alice@example.test>\r\nTo: carol@remote.test\r\nSubject: hi\r\n\r\nHello\r\n"


@pytest.fixture
def sub(server):
    """The live server with users alice and bob, and a submission listener in ``sub.port``."""
    server.add_user(ALICE)
    server.add_user(BOB)
    server.port = server.listen(make_factory, submission=True)
    return server


def login(port: int) -> smtplib.SMTP:
    """A submission session logged in as alice."""
    smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="laptop.example.test", timeout=10)
    smtp.login(ALICE, "secret")
    return smtp


def queued(server) -> list[tuple[object, bytes]]:
    """Every queue entry with its message."""
    out = []
    for entry in server.context.queue.entries():
        with server.context.queue.open_message(entry.id) as message:
            out.append((entry, message.read()))
    return out


def inbox(server, address: str) -> list[bytes]:
    """Every message in the user's INBOX."""
    folder = server.store.folder(address)
    out = []
    for info in folder.messages():
        with folder.open_message(info.uid) as handle:
            out.append(handle.read())
    return out


def test_remote_recipient_is_queued_before_250(sub) -> None:
    with login(sub.port) as smtp:
        code, text = smtp.docmd("MAIL", f"FROM:<{ALICE}>")
        assert code == 250
        assert smtp.docmd("RCPT", f"TO:<{REMOTE}>")[0] == 250
        assert smtp.docmd("RCPT", "TO:<dave@Other.Test>")[0] == 250
        code, text = smtp.data(BODY)
        assert code == 250, text
    [(entry, message)] = queued(sub)
    assert (entry.sender, entry.recipients) == (ALICE, [REMOTE, "dave@other.test"])
    assert entry.attempts == 0 and entry.next_attempt <= entry.created + 1
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert "(Authenticated sender: alice@example.test)" in parsed["Received"]
    assert parsed["Return-Path"] is None, "Return-Path is added at final delivery only"
    assert parsed["Message-ID"].endswith("@mx.example.test>")
    assert parsed["Date"].datetime is not None
    assert message.endswith(BODY)
    assert inbox(sub, ALICE) == [] and inbox(sub, BOB) == []


def test_local_and_remote_recipients_in_one_message(sub) -> None:
    with login(sub.port) as smtp:
        assert smtp.sendmail(ALICE, [BOB, REMOTE], BODY) == {}
    [(entry, message)] = queued(sub)
    assert entry.recipients == [REMOTE], "the local recipient is not queued"
    [local] = inbox(sub, BOB)
    assert local.startswith(b"Return-Path: <alice@example.test>\r\n")
    assert local.endswith(message), "the same message, with the same Message-ID and Date"


def test_message_id_and_date_given_are_kept(sub) -> None:
    own = b"Date: Thu, 1 Jan 2026 10:00:00 +0000\r\nmessage-id: <mine@laptop.example.test>\r\n"
    with login(sub.port) as smtp:
        assert smtp.sendmail(ALICE, [REMOTE], own + BODY) == {}
    [(_, message)] = queued(sub)
    assert message.count(b"Date:") == 1
    assert message.lower().count(b"message-id:") == 1
    assert message.endswith(own + BODY)


def test_header_without_body_gets_message_id_and_date(sub) -> None:
    with login(sub.port) as smtp:
        assert smtp.sendmail(ALICE, [REMOTE], b"Subject: only a header\r\n") == {}
    [(_, message)] = queued(sub)
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert parsed["Message-ID"] and parsed["Date"] and parsed["Subject"] == "only a header"


def test_mx_port_never_relays(sub) -> None:
    port = sub.listen(make_factory)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.docmd("MAIL", "FROM:<someone@remote.test>")
        assert smtp.docmd("RCPT", f"TO:<{REMOTE}>") == (554, b"5.7.1 Relay access denied")
        smtp.rset()
        smtp.login(ALICE, "secret")
        smtp.docmd("MAIL", f"FROM:<{ALICE}>")
        code, text = smtp.docmd("RCPT", f"TO:<{REMOTE}>")
        assert (code, text) == (554, b"5.7.1 Relay access denied"), "not even after AUTH"
        assert smtp.docmd("RCPT", f"TO:<{BOB}>")[0] == 250
        assert smtp.data(BODY)[0] == 250
    assert queued(sub) == []
    [local] = inbox(sub, BOB)
    assert b"Message-ID" not in local, "mail from the world is not changed"


def test_queue_failure_leaves_nothing_anywhere(sub) -> None:
    msg = sub.config.queue_dir / "msg"
    shutil.rmtree(msg)
    msg.write_bytes(b"")  # renames into msg/ now fail, even for root
    try:
        with login(sub.port) as smtp:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                smtp.sendmail(ALICE, [BOB, REMOTE], BODY)
            assert refused.value.smtp_code == 451
    finally:
        msg.unlink()
        msg.mkdir()
    assert inbox(sub, BOB) == [], "the local copy is not kept either"
    assert queued(sub) == []
    assert list((sub.config.queue_dir / "tmp").iterdir()) == []


def test_store_failure_takes_the_message_out_of_the_queue(sub) -> None:
    bob_dir = sub.store.user_dir(BOB)
    bob_dir.parent.mkdir(parents=True, exist_ok=True)
    bob_dir.write_bytes(b"")  # bob's Maildir cannot be made
    with login(sub.port) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail(ALICE, [BOB, REMOTE], BODY)
        assert refused.value.smtp_code == 451
    assert queued(sub) == [], "queued for carol, then removed when bob's copy failed"


def test_message_id_in_the_body_does_not_count(sub) -> None:
    """Only the header is looked at, wherever the client's writes split it."""
    body = b"Subject: quoting\r\n\r\nMessage-ID: <quoted@elsewhere>\r\nDate: yesterday\r\n"
    port = sub.port
    with login(port) as smtp:
        smtp.docmd("MAIL", f"FROM:<{ALICE}>")
        smtp.docmd("RCPT", f"TO:<{REMOTE}>")
        assert smtp.docmd("DATA")[0] == 354
        for line in body.split(b"\r\n")[:-1]:  # one line per write
            smtp.send(line + b"\r\n")
        smtp.send(b".\r\n")
        assert smtp.getreply()[0] == 250
    [(_, message)] = queued(sub)
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert parsed["Message-ID"].endswith("@mx.example.test>")
    assert parsed["Date"].datetime is not None
    assert message.endswith(body)
