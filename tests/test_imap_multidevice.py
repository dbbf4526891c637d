"""Two devices on one mailbox (issue 11): device B syncs and goes offline, device A changes
flags, expunges and a message arrives; B comes back with ``SELECT INBOX (QRESYNC (uidvalidity
modseq))`` and receives exactly the VANISHED (EARLIER) set and the FETCH lines of what changed,
nothing more, after which its cache equals the mailbox.  Both devices are Python's
``imapclient``, over STARTTLS and over imaps (implicit TLS), against the real listener; then
NeoMutt (run headless on a pty) against it, checked from the server side.

imapclient has no QRESYNC form of SELECT, so B's resynchronising SELECT goes through the
imaplib connection under it (``xatom``, a raw command), whose untagged responses are then read;
everything else is imapclient's own API."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from imapclient import IMAPClient
from test_imap import ALICE, PASSWORD, message
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
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


# -- NeoMutt ---------------------------------------------------------------------------------

NEOMUTT = shutil.which("neomutt")
SCRIPT = shutil.which("script")


class _Recorder(ProtocolWrapper):
    """Keeps what the client sent and what the server answered, for the test to read."""

    def dataReceived(self, data: bytes) -> None:
        self.factory.sent.append(data)
        super().dataReceived(data)

    def write(self, data: bytes) -> None:
        self.factory.answered.append(data)
        super().write(data)


def _recording(context):
    factory = WrappingFactory(make_factory(context))
    factory.protocol = _Recorder
    factory.sent, factory.answered = [], []
    return factory


def _neomutt(home: Path) -> None:
    """NeoMutt opens the INBOX and quits at once, on a pty (``script``), non-interactively."""
    env = dict(os.environ, HOME=str(home), TERM="xterm")
    command = f"neomutt -n -F {home}/muttrc -e 'push <quit>'"
    done = subprocess.run(
        [SCRIPT, "-qec", command, "/dev/null"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stdout[-2000:]


@pytest.mark.skipif(NEOMUTT is None or SCRIPT is None, reason="needs neomutt and script")
def test_neomutt_resyncs_with_qresync_from_its_header_cache(server, tmp_path):
    """NeoMutt (imap_condstore, imap_qresync, a header cache) syncs, goes away while another
    device changes a flag and expunges, and comes back: it enables QRESYNC and asks
    ``UID FETCH ... (CHANGEDSINCE m VANISHED)`` with the modseq it was given, is told exactly the
    vanished UID, and downloads no headers again but those of the one message whose place
    moved; on leaving it marks Old what it saw changed (and only that)."""
    server.add_user(ALICE, PASSWORD)
    recording = {}

    def make(context):
        recording["factory"] = _recording(context)
        return recording["factory"]

    port = server.listen(make)
    inbox = server.store.folder(ALICE)
    for n in range(1, 6):
        inbox.append(message(f"m{n}"))
    home = tmp_path / "home"
    home.mkdir()
    (home / "muttrc").write_text(
        f'set folder="imap://alice%40example.test@127.0.0.1:{port}/"\n'
        'set spoolfile="+INBOX"\n'
        f'set imap_pass="{PASSWORD}"\n'
        "set imap_condstore=yes\nset imap_qresync=yes\n"
        f'set header_cache="{home}/hcache"\n'
        "set ssl_starttls=no\nset ssl_force_tls=no\nset imap_passive=yes\n"
        'set mail_check_stats=no\nset record=""\n'
    )
    _neomutt(home)
    factory = recording["factory"]
    assert all("Old" in info.flags for info in inbox.messages())  # NeoMutt saw them all
    # What NeoMutt keeps is the HIGHESTMODSEQ its SELECT was told (its own STORE came after).
    kept = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"".join(factory.answered)).group(1))
    factory.sent.clear()
    factory.answered.clear()

    inbox.set_flags(2, {"\\Flagged"})
    inbox.expunge([4])
    _neomutt(home)

    sent = b"".join(factory.sent).decode()
    answered = b"".join(factory.answered).decode()
    assert "ENABLE QRESYNC" in sent
    asked = re.search(r"UID FETCH (\S+) \(FLAGS\) \(CHANGEDSINCE (\d+) VANISHED\)", sent)
    assert asked and int(asked.group(2)) == kept, sent
    assert "* VANISHED (EARLIER) 4\r\n" in answered
    assert re.search(r"\* 2 FETCH \(FLAGS \(\\Flagged\) MODSEQ \(\d+\) UID 2\)", answered)
    assert "EXPUNGE\r\n" not in answered
    headers = re.findall(r"FETCH (\S+) \(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK", sent)
    assert headers in ([], ["4"]), headers  # message 4 is now UID 5
    assert [sorted(info.flags) for info in inbox.messages()] == [
        ["Old"],
        ["Old", "\\Flagged"],
        ["Old"],
        ["Old"],
    ]
