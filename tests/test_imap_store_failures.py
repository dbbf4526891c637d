"""A store that fails for real under IMAP: NO [SERVERBUG] / [UNAVAILABLE] (RFC 5530), logged,
and the session goes on; only a folder that does not exist is NO [NONEXISTENT].

The failures are real ones of the Maildir store, which work as root too (where chmod stops no
read): a ``dovecot-uidlist`` that is a directory, a uidlist lock held by a live writer, a file
name in new/ too long to get its ``:2,`` in cur/.
"""

from __future__ import annotations

import imaplib
import os
import socket
import time

import pytest
from conftest import in_reactor
from test_imap import ALICE, PASSWORD, connect, message
from twisted.logger import formatEvent, globalLogPublisher

from mailgw.imap import make_factory
from mailgw.store import StoreError, uidlist


@pytest.fixture
def port(server):
    """Alice and an IMAP listener."""
    server.add_user(ALICE, PASSWORD)
    return server.listen(make_factory)


@pytest.fixture
def logged():
    """The events the server logs with a failure while the test runs: (text, Failure)."""
    events: list = []

    def observe(event: dict) -> None:
        if "log_failure" in event:
            events.append((formatEvent(event), event["log_failure"]))

    in_reactor(globalLogPublisher.addObserver, observe)
    yield events
    in_reactor(globalLogPublisher.removeObserver, observe)


def on_disk_folder(server, name: str):
    """Make Alice's Maildir++ folder ``name`` directly on disk (the server has not opened it)."""
    path = server.store.user_dir(ALICE) / f".{name}"
    for subdir in ("cur", "new", "tmp"):
        (path / subdir).mkdir(parents=True)
    return path


def still_works(client: imaplib.IMAP4) -> None:
    """The session answers further commands, and a good folder can be selected."""
    assert client.noop()[0] == "OK"
    typ, data = client.select("INBOX")
    assert typ == "OK" and data == [b"1"]


def test_select_examine_status_of_a_broken_folder_are_serverbug(server, port, logged):
    server.store.folder(ALICE).append(message("one"))
    (on_disk_folder(server, "Broken") / uidlist.UIDLIST).mkdir()  # reading it fails: EISDIR
    client = connect(port)
    for readonly, command in ((False, b"SELECT"), (True, b"EXAMINE")):
        typ, data = client.select("Broken", readonly=readonly)
        assert typ == "NO" and data[0].startswith(b"[SERVERBUG] " + command + b" failed"), data
        assert client.state == "AUTH"
    typ, data = client.status("Broken", "(MESSAGES)")
    assert typ == "NO" and data[0].startswith(b"[SERVERBUG] STATUS failed"), data
    typ, data = client.select("Missing")  # a real "no such folder" stays NONEXISTENT
    assert typ == "NO" and data[0].startswith(b"[NONEXISTENT]")
    still_works(client)
    client.logout()
    texts = [text for text, failure in logged if failure.check(StoreError)]
    assert len(texts) == 3, logged
    for command, text in zip(("SELECT", "EXAMINE", "STATUS"), texts, strict=True):
        assert text.startswith(f"IMAP {command} for {ALICE}, folder 'Broken': the store failed")
    assert "dovecot-uidlist" in str(logged[0][1].value)


def test_a_lock_timeout_is_unavailable(server, port, logged, monkeypatch):
    monkeypatch.setattr(uidlist, "LOCK_TIMEOUT", 0.3)
    server.store.folder(ALICE).append(message("one"))
    path = on_disk_folder(server, "Busy")
    (path / "new" / "1700000000.M1P1.elsewhere").write_bytes(message("foreign"))  # needs a UID
    # Held by a live writer: this process (the server runs in it), so never stale.
    (path / "dovecot-uidlist.lock").write_text(f"{os.getpid()}:{socket.gethostname()}\n")
    client = connect(port)
    typ, data = client.select("Busy")
    assert typ == "NO" and data[0].startswith(b"[UNAVAILABLE] SELECT failed"), data
    still_works(client)
    (path / "dovecot-uidlist.lock").unlink()
    typ, data = client.select("Busy")  # once the lock is gone
    assert typ == "OK" and data == [b"1"]
    client.logout()
    [(text, failure)] = logged
    assert failure.check(uidlist.StoreBusy) and f"for {ALICE}, folder 'Busy'" in text


def test_a_failed_move_out_of_new_is_logged_and_select_still_answers(server, port, logged):
    new = server.store.user_dir(ALICE) / "new"
    new.mkdir(parents=True, exist_ok=True)
    # 255 bytes is the longest name there is: in cur/ with ":2," it cannot exist (ENAMETOOLONG).
    (new / ("1700000000.M1P1." + "x" * 239)).write_bytes(message("long name"))
    client = connect(port)
    typ, data = client.select("INBOX")
    assert typ == "OK" and data == [b"1"]
    assert client.response("RECENT")[1] == [b"1"]
    assert client.search(None, "ALL") == ("OK", [b"1"])
    client.logout()
    deadline = time.monotonic() + 5  # the move runs in a thread: SELECT does not wait for it
    while not logged and time.monotonic() < deadline:
        time.sleep(0.01)
    [(text, failure)] = logged
    assert text == f"could not move 1 new message(s) of {ALICE}, folder 'INBOX', to cur/"
    assert failure.check(StoreError) and "ENAMETOOLONG" in str(failure.value)
