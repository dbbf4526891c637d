"""Two devices on one mailbox (issue 11): device B syncs and goes offline, device A changes
flags, expunges and a message arrives; B comes back with ``SELECT INBOX (QRESYNC (uidvalidity
modseq))`` and receives exactly the VANISHED (EARLIER) set and the FETCH lines of what changed,
nothing more, after which its cache equals the mailbox.  Both devices are Python's
``imapclient``, over STARTTLS and over imaps (implicit TLS), against the real listener.

imapclient has no QRESYNC form of SELECT, so B's resynchronising SELECT goes through the
imaplib connection under it (``xatom``, a raw command), whose untagged responses are then read;
everything else is imapclient's own API."""

from __future__ import annotations

import re
import ssl

import pytest
from imapclient import IMAPClient
from test_imap import ALICE, PASSWORD, message
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailgw.imap import make_factory


def _tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _imaps_factory(context):
    return TLSMemoryBIOFactory(context.tls, False, make_factory(context))


@pytest.fixture(params=["starttls", "imaps"])
def device(request, server):
    """A function making a logged-in imapclient device over STARTTLS or imaps."""
    server.add_user(ALICE, PASSWORD)
    implicit = request.param == "imaps"
    port = server.listen(_imaps_factory if implicit else make_factory)
    made = []

    def make() -> IMAPClient:
        client = IMAPClient("127.0.0.1", port, ssl=implicit, ssl_context=_tls(), timeout=10)
        if not implicit:
            client.starttls(_tls())
        client.login(ALICE, PASSWORD)
        made.append(client)
        return client

    yield make
    for client in made:
        try:
            client.logout()
        except Exception:
            pass


def _flags(client: IMAPClient) -> dict[int, frozenset]:
    """UID -> flags as a device sees them now."""
    found = client.fetch(client.search("ALL"), ["FLAGS"])
    return {uid: frozenset(f.decode() for f in data[b"FLAGS"]) for uid, data in found.items()}


def test_device_b_resyncs_exactly_what_device_a_changed(device, server):
    inbox = server.store.folder(ALICE)
    uids = [inbox.append(message(f"m{n}")) for n in range(1, 13)]
    inbox.mark_seen_by_client(uids)

    b = device()
    assert b.enable("QRESYNC") == [b"QRESYNC"]
    selected = b.select_folder("INBOX")
    validity, modseq = selected[b"UIDVALIDITY"], selected[b"HIGHESTMODSEQ"]
    cache = _flags(b)
    b.logout()

    a = device()
    a.select_folder("INBOX")
    a.add_flags([3, 5], [b"\\Seen"])
    a.add_flags([7], [b"\\Flagged", b"$Work"])
    a.add_flags([8], [b"\\Answered"])  # changed, then expunged: only VANISHED tells of it
    a.add_flags([2, 4, 8, 10], [b"\\Deleted"])
    a.expunge()
    a.append("INBOX", message("while B was away"))
    a.logout()

    b = device()
    b.enable("QRESYNC")
    raw = b._imap
    raw.untagged_responses.clear()
    typ, _ = raw.xatom("SELECT", f"INBOX (QRESYNC ({validity} {modseq}))")
    assert typ == "OK"
    responses = raw.untagged_responses
    assert responses.get("VANISHED") == [b"(EARLIER) 2,4,8,10"]
    assert "EXPUNGE" not in responses
    fetched = {}
    for line in responses["FETCH"]:
        found = re.fullmatch(rb"(\d+) \(UID (\d+) FLAGS \(([^)]*)\) MODSEQ \((\d+)\)\)", line)
        assert found, line
        fetched[int(found.group(2))] = frozenset(found.group(3).decode().split())
    assert fetched == {
        3: {"\\Seen"},
        5: {"\\Seen"},
        7: {"\\Flagged", "$Work"},
        13: frozenset(),  # \Recent went to A, whose APPEND it saw first
    }
    assert responses["EXISTS"] == [b"9"]

    # B's cache brought up to date this way is the mailbox, as a fresh device sees it.
    for uid in (2, 4, 8, 10):
        del cache[uid]
    cache.update(fetched)
    fresh = device()
    fresh.select_folder("INBOX", readonly=True)
    assert cache == _flags(fresh)
    highest = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"".join(responses["OK"])).group(1))
    assert highest == inbox.highest_modseq


def test_a_stale_or_wrong_uidvalidity_resyncs_nothing(device, server):
    """A UIDVALIDITY that is not the mailbox's: a plain SELECT (the client must start over)."""
    inbox = server.store.folder(ALICE)
    inbox.append(message("one"))
    b = device()
    b.enable("QRESYNC")
    raw = b._imap
    raw.untagged_responses.clear()
    raw.xatom("SELECT", f"INBOX (QRESYNC ({inbox.uid_validity + 1} 1))")
    assert "VANISHED" not in raw.untagged_responses and "FETCH" not in raw.untagged_responses
