"""The whole product as a user meets it: twistd, the mailgw command, and Python's mail clients."""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
from email.message import EmailMessage

import pytest
from mailgw_process import ServerProcess, mailgw, write_config

ALICE = "alice@example.test"
PASSWORD = "correct horse battery staple"


def _message(subject: str, body: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "bob@elsewhere.test"
    msg["To"] = ALICE
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@elsewhere.test>"
    msg.set_content(body)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def _pop3(ports) -> poplib.POP3:
    pop = poplib.POP3("127.0.0.1", ports["pop3"], timeout=10)
    pop.user(ALICE)
    pop.pass_(PASSWORD)
    return pop


def _imap(ports) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=10)
    imap.login(ALICE, PASSWORD)
    return imap


@pytest.fixture
def running(tmp_path):
    """A twistd server with one user added by the mailgw command."""
    config = write_config(tmp_path)
    (tmp_path / "data").mkdir()
    added = mailgw(config, "user", "add", ALICE, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    server = ServerProcess(config).start()
    yield server
    assert server.stop() == 0, server.log.read_text()


def test_smtp_in_pop3_and_imap_out(running):
    """Sent with smtplib, read back identically over POP3 and IMAP; a POP3 DELE shows in IMAP."""
    ports = running.ports
    sent = _message("hello there", "Line one.\n.leading dot\nLast line.\n")
    with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=10) as smtp:
        refused = smtp.sendmail("bob@elsewhere.test", [ALICE], sent)
    assert refused == {}

    pop = _pop3(ports)
    count, size = pop.stat()
    assert count == 1
    lines = pop.retr(1)[1]
    via_pop3 = b"\r\n".join(lines) + b"\r\n"
    assert size == len(via_pop3)
    pop.quit()
    # The server adds its trace headers on top; everything the client sent follows unchanged.
    assert via_pop3.endswith(sent)
    assert via_pop3.startswith(b"Return-Path: <bob@elsewhere.test>\r\n")
    assert b"\r\nReceived: from " in via_pop3[: len(via_pop3) - len(sent)]

    imap = _imap(ports)
    typ, data = imap.select("INBOX")
    assert (typ, data) == ("OK", [b"1"])
    typ, fetched = imap.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK"
    assert fetched[0][1] == via_pop3

    pop = _pop3(ports)
    pop.dele(1)
    assert pop.quit().startswith(b"+OK")

    imap.noop()
    typ, data = imap.uid("SEARCH", "ALL")
    assert data == [b""]
    imap.logout()
    imap = _imap(ports)
    assert imap.select("INBOX") == ("OK", [b"0"])
    imap.logout()


def test_uids_survive_a_restart(running):
    """UIDVALIDITY and every message's UID are the same after the server restarts."""
    ports = running.ports
    with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=10) as smtp:
        for n in range(3):
            smtp.sendmail("bob@elsewhere.test", [ALICE], _message(f"msg {n}", f"body {n}\n"))

    def uid_state(ports):
        imap = _imap(ports)
        imap.select("INBOX")
        validity = imap.response("UIDVALIDITY")[1][0]
        typ, data = imap.fetch("1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        uids = [
            (re.search(rb"UID (\d+)", item[0]).group(1), item[1].strip())
            for item in data
            if isinstance(item, tuple)
        ]
        imap.logout()
        return validity, uids

    before = uid_state(ports)
    assert len(before[1]) == 3
    assert running.stop() == 0
    running.start()
    assert uid_state(running.ports) == before


def test_wrong_password_refused_everywhere(running):
    """A wrong password gets each protocol's refusal, and the server goes on serving."""
    ports = running.ports
    pop = poplib.POP3("127.0.0.1", ports["pop3"], timeout=10)
    pop.user(ALICE)
    with pytest.raises(poplib.error_proto):
        pop.pass_("wrong")
    pop.close()
    imap = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        imap.login(ALICE, "wrong")
    imap.logout()
    _imap(ports).logout()
