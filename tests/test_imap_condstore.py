"""CONDSTORE and QRESYNC (RFC 7162) and ENABLE (RFC 5161), over real sockets: the RFC's examples
replayed from its own text, with the mailbox set up so their sequence numbers and UIDs come out;
the numbers the server chooses (UIDVALIDITY, modseqs) are read from the store and put into the
expected lines, which are then compared byte for byte, but for FETCH item order and
human-readable texts (``normalise`` of tests/test_imap_rfc3501.py, or ``items``).

Replayed, by section of RFC 7162 (its examples are numbered through section 3.1): 3.1.2.1
Example 1 and 3.1.8 Example 18 (SELECT, with and without (CONDSTORE)), 3.1.2.2 (Example 2's
NOMODSEQ is never sent: every folder keeps modseqs), 3.1.3 Examples 3 to 11 (a103, a104, c101,
d105 both ways, a102, a106 with each case of another session's change, B001), 3.1.4.1 Example 12
(s100, CHANGEDSINCE), 3.1.4.2 Examples 13 (FETCH MODSEQ) and 14 (sessions 1 and 2), 3.1.5 and
3.1.6 Examples 15 and 16, 3.1.7 Example 17 (STATUS HIGHESTMODSEQ), 3.1.10 Example 19 (ESEARCH
with MODSEQ), 3.1.11's rule (it has no example), 3.2.3 (ENABLE), 3.2.5 (A02, UIDVALIDITY
mismatch), 3.2.5.1 (A03), 3.2.5.2 (A04 and B04 by their mechanism, on ten messages: the RFC
elides their answers), 3.2.6 (UID FETCH ... VANISHED), 3.2.7 to 3.2.9 (EXPUNGE, CLOSE, UID
EXPUNGE and the HIGHESTMODSEQ of their OK) and 3.2.10 (VANISHED in lieu of EXPUNGE; 3.2.10.2's
example). Not replayed: Example 20 (ESORT is not offered), Example 14's session 3 (no mailbox is
shared with another user, and no flag is private). Where mailgw answers otherwise than the
example (an order the RFC leaves free, B001's OK where the RFC's NO is a MAY, Example 10's
[MODIFIED] where 3.1.12's behaviour is a SHOULD), the test's docstring says why. 3.1.2.1, 3.1.3,
3.1.8, 3.1.11, Example 14, 3.2.5, 3.2.7 to 3.2.9 and 3.2.10.2 are in
tests/test_imap_condstore_examples.py."""

from __future__ import annotations

import re
import socket

import pytest
from test_imap import ALICE, PASSWORD, message, read_until
from test_imap_rfc3501 import lines, next_uid

from mailgw.imap import make_factory


@pytest.fixture
def port(server):
    """Alice and an IMAP listener."""
    server.add_user(ALICE, PASSWORD)
    return server.listen(make_factory)


@pytest.fixture
def inbox(server, port):
    """Alice's INBOX (IFolder) in the store."""
    return server.store.folder(ALICE)


class Client:
    """A raw logged-in connection; ``run`` returns a command's response lines."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.recv(4096)
        self.run(b"l LOGIN " + ALICE.encode() + b" " + PASSWORD.encode())

    def run(self, line: bytes) -> list[bytes]:
        tag = line.split(b" ", 1)[0] + b" "
        self.sock.sendall(line + b"\r\n")
        return read_until(self.sock, tag).split(b"\r\n")[:-1]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def connect(port):
    clients = []

    def make() -> Client:
        clients.append(Client(port))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def fill(inbox, count: int) -> None:
    """``count`` messages, none \\Recent (as if an earlier session had seen them)."""
    uids = [inbox.append(message(f"m{n}")) for n in range(1, count + 1)]
    inbox.mark_seen_by_client(uids)


#: The messages of RFC 7162 Example 15's answer, in the order ``drafts`` changes them.
DRAFTS = (23, 5, 6, 2, 11, 12, 18, 19, 20, 7)


def drafts(inbox) -> int:
    """23 messages, then \\Draft set on the ten of RFC 7162 Example 15 (2 5 6 7 11 12 18 19
    20 23), one by one in the order of ``DRAFTS``: 23's modseq is below 2's, 7's the highest.
    The highest modseq before the changes."""
    fill(inbox, 23)
    since = inbox.highest_modseq
    for n in DRAFTS:
        inbox.set_flags(n, {"\\Draft"})
    return since


def holes(inbox) -> None:
    """Eight messages, UIDs 1, 2, 3 and 5 expunged: UIDs 4, 6, 7, 8 are messages 1 to 4, as in
    the examples of RFC 7162 3.1.3 and 3.1.4.2."""
    fill(inbox, 8)
    inbox.expunge([1, 2, 3, 5])


def items(line: bytes) -> tuple[int, dict]:
    """A ``* n FETCH (...)`` line as (n, {item: value}), FLAGS as a set."""
    found = re.fullmatch(rb"\* (\d+) FETCH \((.*)\)", line)
    assert found, line
    body, out = found.group(2), {}
    for name, value in re.findall(rb"(UID|MODSEQ|FLAGS) (\d+|\(\d+\)|\([^)]*\))", body):
        out[name] = set(value.strip(b"()").split()) if name == b"FLAGS" else value.strip(b"()")
    return int(found.group(1)), out


def modseq(inbox, uid: int) -> bytes:
    return b"%d" % inbox.get(uid).modseq


def test_capability_announces_enable_condstore_and_qresync(connect):
    caps = connect().run(b"c CAPABILITY")[0].split()
    assert {b"ENABLE", b"CONDSTORE", b"QRESYNC"} <= set(caps)


def test_enable_lists_what_it_enabled_in_the_authenticated_state_only(connect):
    """RFC 5161 3 and RFC 7162 3.2.3: ENABLE QRESYNC answers * ENABLED QRESYNC; an extension
    not supported is ignored; enabling twice lists nothing the second time; ENABLE before
    login and with a mailbox selected is BAD."""
    client = connect()
    assert client.run(b"t2 ENABLE X-GOOD-IDEA QRESYNC") == [
        b"* ENABLED QRESYNC",
        b"t2 OK ENABLE completed",
    ]
    assert client.run(b"t3 ENABLE CONDSTORE QRESYNC")[0] == b"* ENABLED"
    client.run(b"s SELECT INBOX")
    assert client.run(b"t4 ENABLE CONDSTORE")[-1].startswith(b"t4 BAD ")
    raw = socket.create_connection(client.sock.getpeername(), timeout=10)
    raw.recv(4096)
    raw.sendall(b"u ENABLE CONDSTORE\r\n")
    assert read_until(raw, b"u ").startswith(b"u BAD ")
    raw.close()


def test_select_condstore_then_changes_elsewhere_carry_modseq(connect, inbox):
    """RFC 7162 3.1.8 / 3.1.2: SELECT (CONDSTORE) enables CONDSTORE: a flag change made by
    another session is reported with MODSEQ."""
    fill(inbox, 2)
    a, b = connect(), connect()
    a.run(b"a SELECT INBOX (CONDSTORE)")
    b.run(b"b SELECT INBOX")
    b.run(b"b2 STORE 2 +FLAGS (\\Flagged)")
    assert a.run(b"a2 NOOP") == [
        b"* 2 FETCH (FLAGS (\\Flagged) MODSEQ (" + modseq(inbox, 2) + b"))",
        b"a2 OK NOOP completed",
    ]
    # b did not enable CONDSTORE: a's change reaches it without MODSEQ.
    a.run(b"a3 STORE 1 +FLAGS.SILENT (\\Seen)")
    assert b.run(b"b3 NOOP")[0] == b"* 1 FETCH (FLAGS (\\Seen))"


def test_fetch_modseq(connect, inbox):
    """RFC 7162 3.1.4.2 Example 13: FETCH 1:3 (MODSEQ) gives each message's modseq (changed
    in the order 1, 3, 2, so 2's is the highest, as in the RFC)."""
    fill(inbox, 3)
    for uid in (1, 3, 2):
        inbox.set_flags(uid, {"\\Answered"})
    client = connect()
    client.run(b"s SELECT INBOX (CONDSTORE)")
    assert client.run(b"a FETCH 1:3 (MODSEQ)") == [
        b"* 1 FETCH (MODSEQ (" + modseq(inbox, 1) + b"))",
        b"* 2 FETCH (MODSEQ (" + modseq(inbox, 2) + b"))",
        b"* 3 FETCH (MODSEQ (" + modseq(inbox, 3) + b"))",
        b"a OK FETCH completed",
    ]


def test_uid_fetch_changedsince(connect, inbox):
    """RFC 7162 3.1.4.1 Example 12 (s100): only messages changed since, with UID, MODSEQ and
    FLAGS (UID 8 changed first, so its modseq is the lowest, as in the RFC)."""
    holes(inbox)
    since = inbox.highest_modseq
    inbox.set_flags(8, {"$NoJunk", "$AutoJunk", "$MDNSent"})
    inbox.set_flags(4, {"\\Seen"})
    inbox.set_flags(6, {"\\Deleted"})
    client = connect()
    client.run(b"s SELECT INBOX (CONDSTORE)")
    lines = client.run(b"s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % since)
    assert lines[-1] == b"s100 OK FETCH completed"
    assert [items(line) for line in lines[:-1]] == [
        (1, {b"UID": b"4", b"MODSEQ": modseq(inbox, 4), b"FLAGS": {b"\\Seen"}}),
        (2, {b"UID": b"6", b"MODSEQ": modseq(inbox, 6), b"FLAGS": {b"\\Deleted"}}),
        (
            4,
            {
                b"UID": b"8",
                b"MODSEQ": modseq(inbox, 8),
                b"FLAGS": {b"$NoJunk", b"$AutoJunk", b"$MDNSent"},
            },
        ),
    ]
    assert client.run(b"s101 FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % inbox.highest_modseq) == [
        b"s101 OK FETCH completed"
    ]


def test_uid_store_unchangedsince_silent_reports_modseq(connect, inbox):
    """RFC 7162 3.1.3 example 3 (a103): every message unchanged since, so all are changed and
    each reported with UID and MODSEQ even though .SILENT."""
    holes(inbox)
    client = connect()
    client.run(b"s SELECT INBOX (CONDSTORE)")
    lines = client.run(
        b"a103 UID STORE 6,4,8 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Deleted)" % inbox.highest_modseq
    )
    assert lines == [
        b"* 1 FETCH (UID 4 MODSEQ (" + modseq(inbox, 4) + b"))",
        b"* 2 FETCH (UID 6 MODSEQ (" + modseq(inbox, 6) + b"))",
        b"* 4 FETCH (UID 8 MODSEQ (" + modseq(inbox, 8) + b"))",
        b"a103 OK STORE completed",
    ]
    assert all("\\Deleted" in inbox.get(uid).flags for uid in (4, 6, 8))


def test_store_unchangedsince_modified(connect, inbox):
    """RFC 7162 3.1.3 example 6 (d105): messages 7 and 9 changed after the modseq given are
    left alone and named in [MODIFIED 7,9]; 5 is changed and reported."""
    fill(inbox, 9)
    since = inbox.highest_modseq
    inbox.set_flags(7, {"\\Seen"})
    inbox.set_flags(9, {"\\Answered"})
    client = connect()
    client.run(b"s SELECT INBOX (CONDSTORE)")
    assert client.run(
        b"d105 STORE 7,5,9 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Deleted)" % since
    ) == [
        b"* 5 FETCH (MODSEQ (" + modseq(inbox, 5) + b"))",
        b"d105 OK [MODIFIED 7,9] Conditional STORE failed",
    ]
    assert inbox.get(7).flags == {"\\Seen"} and inbox.get(9).flags == {"\\Answered"}
    assert "\\Deleted" in inbox.get(5).flags
    # UNCHANGEDSINCE 0 always fails (RFC 7162 3.1.3); UID STORE names UIDs.
    assert client.run(b"d106 UID STORE 2 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)") == [
        b"d106 OK [MODIFIED 2] Conditional STORE failed"
    ]
    assert inbox.get(2).flags == frozenset()
    # Not silent: FLAGS and MODSEQ of the changed message.
    assert client.run(b"d107 STORE 3 (UNCHANGEDSINCE %d) FLAGS (\\Flagged)" % since) == [
        b"* 3 FETCH (FLAGS (\\Flagged) MODSEQ (" + modseq(inbox, 3) + b"))",
        b"d107 OK STORE completed",
    ]


def test_search_modseq(connect, inbox):
    """RFC 7162 3.1.5 Examples 15 and 16 (with 3.1.6): SEARCH MODSEQ with an entry name, on
    ``drafts``'s mailbox, ends with the highest modseq of the messages found; nothing found,
    nothing appended.  The RFC's modseqs are the store's: 620162338 is the highest before the
    changes plus one, 720162338 the lowest modseq of all messages (so NOT MODSEQ finds none).
    UID SEARCH (not in the RFC) gives UIDs, here the same numbers."""
    since = drafts(inbox)
    lowest = min(info.modseq for info in inbox.messages())
    client = connect()
    client.run(b"s SELECT INBOX (CONDSTORE)")
    found = b"2 5 6 7 11 12 18 19 20 23 (MODSEQ " + modseq(inbox, 7) + b")"
    assert lines(*client.run(b'a SEARCH MODSEQ "/flags/\\\\draft" all %d' % (since + 1))) == lines(
        b"* SEARCH " + found, b"a OK Search complete"
    )
    assert lines(*client.run(b"t SEARCH OR NOT MODSEQ %d LARGER 50000" % lowest)) == lines(
        b"* SEARCH", b"t OK Search complete, nothing found"
    )
    assert client.run(b"u UID SEARCH MODSEQ %d" % (since + 1)) == [
        b"* SEARCH " + found,
        b"u OK SEARCH completed",
    ]


def test_select_qresync_needs_enable_and_resynchronises(connect, inbox):
    """RFC 7162 3.2.5: without ENABLE QRESYNC the parameter is BAD; with it, VANISHED (EARLIER)
    for the known UIDs expunged since, then the messages changed since with UID, FLAGS and
    MODSEQ; a UIDVALIDITY that does not match gets a plain SELECT."""
    fill(inbox, 10)
    validity, since = inbox.uid_validity, inbox.highest_modseq
    inbox.expunge([3, 4, 9])
    inbox.set_flags(7, {"\\Seen", "\\Answered"})
    inbox.set_flags(8, {"\\Draft", "$MDNSent"})
    client = connect()
    resync = b"(QRESYNC (%d %d 1:10))" % (validity, since)
    assert client.run(b"A00 SELECT INBOX " + resync)[-1].startswith(b"A00 BAD ")
    client.run(b"A01 ENABLE QRESYNC")
    lines = client.run(b"A02 SELECT INBOX " + resync)
    assert lines[0] == b"* 7 EXISTS"
    assert b"* OK [HIGHESTMODSEQ %d] Highest" % inbox.highest_modseq in lines
    assert lines[-4:] == [
        b"* VANISHED (EARLIER) 3:4,9",
        b"* 5 FETCH (UID 7 FLAGS (\\Answered \\Seen) MODSEQ (" + modseq(inbox, 7) + b"))",
        b"* 6 FETCH (UID 8 FLAGS ($MDNSent \\Draft) MODSEQ (" + modseq(inbox, 8) + b"))",
        b"A02 OK [READ-WRITE] SELECT completed",
    ]
    # Only the known UIDs are reported vanished; [CLOSED] as the new SELECT replaces the old.
    lines = client.run(b"A03 EXAMINE INBOX (QRESYNC (%d %d 4:6,9))" % (validity, since))
    assert lines[0] == b"* OK [CLOSED] Previous mailbox is now closed"
    assert b"* VANISHED (EARLIER) 4,9" in lines
    lines = client.run(b"A04 SELECT INBOX (QRESYNC (%d %d))" % (validity + 1, since))
    assert not [line for line in lines if b"VANISHED" in line or b"FETCH" in line], lines


def test_select_qresync_falls_back_to_the_known_uids_and_sequence_match(connect, inbox):
    """RFC 7162 3.2.5.2: when the server cannot tell what vanished since the modseq (here one
    it never gave), every known UID not present is reported, but for those below the last
    sequence-match pair that still holds."""
    fill(inbox, 10)
    validity = inbox.uid_validity
    inbox.expunge([2, 6, 8])
    future = inbox.highest_modseq + 1000
    client = connect()
    client.run(b"e ENABLE QRESYNC")
    lines = client.run(b"s SELECT INBOX (QRESYNC (%d %d 1:10))" % (validity, future))
    assert b"* VANISHED (EARLIER) 2,6,8" in lines
    # Client's message 4 was UID 5 and is still (after 2 went, 5 is message 4): UIDs up to 5
    # are not reported.
    lines = client.run(b"s2 SELECT INBOX (QRESYNC (%d %d 1:10 (4 5)))" % (validity, future))
    assert b"* VANISHED (EARLIER) 6,8" in lines
    # Numbers far beyond the mailbox cost nothing: only UIDs up to the last one count.
    huge = b"1:4294967295 (1:4294967295 1:4294967295)"
    lines = client.run(b"s3 SELECT INBOX (QRESYNC (%d %d %s))" % (validity, future, huge))
    assert b"* VANISHED (EARLIER) 2,6,8" in lines


def test_uid_fetch_vanished(connect, inbox):
    """RFC 7162 3.2.6 (A03): UID FETCH ... (CHANGEDSINCE m VANISHED) first tells the UIDs of
    the set expunged since m; without QRESYNC enabled, or without UID, it is BAD."""
    fill(inbox, 10)
    since = inbox.highest_modseq
    inbox.expunge([1, 2, 5])
    inbox.set_flags(4, {"\\Seen"})
    client = connect()
    client.run(b"s SELECT INBOX")
    assert client.run(b"A01 UID FETCH 3:8 (FLAGS) (CHANGEDSINCE %d VANISHED)" % since)[
        -1
    ].startswith(b"A01 BAD ")
    client.run(b"u UNSELECT")
    client.run(b"e ENABLE QRESYNC")
    client.run(b"s2 SELECT INBOX")
    lines = client.run(b"A03 UID FETCH 2:8 (FLAGS) (CHANGEDSINCE %d VANISHED)" % since)
    assert lines[0] == b"* VANISHED (EARLIER) 2,5"
    assert [items(line) for line in lines[1:-1]] == [
        (2, {b"UID": b"4", b"MODSEQ": modseq(inbox, 4), b"FLAGS": {b"\\Seen"}})
    ]
    assert client.run(b"A04 FETCH 1 (FLAGS) (CHANGEDSINCE %d VANISHED)" % since)[-1].startswith(
        b"A04 BAD "
    )


def test_vanished_instead_of_expunge_with_qresync(connect, inbox):
    """RFC 7162 3.2.10: once QRESYNC is enabled, EXPUNGE, UID EXPUNGE, MOVE and expunges by
    another session are told with VANISHED (UIDs), flag changes with UID and MODSEQ."""
    fill(inbox, 8)
    a, b = connect(), connect()
    a.run(b"e ENABLE QRESYNC")
    a.run(b"s SELECT INBOX")
    b.run(b"s SELECT INBOX")
    a.run(b"a1 STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    assert a.run(b"A202 EXPUNGE") == [
        b"* VANISHED 2,4",
        b"A202 OK [HIGHESTMODSEQ %d] EXPUNGE completed" % inbox.highest_modseq,
    ]
    a.run(b"a2 UID STORE 5:6 +FLAGS.SILENT (\\Deleted)")
    assert a.run(b"a3 UID EXPUNGE 6") == [
        b"* VANISHED 6",
        b"a3 OK [HIGHESTMODSEQ %d] EXPUNGE completed" % inbox.highest_modseq,
    ]
    a.run(b"c CREATE Archive")
    lines = a.run(b"a4 UID MOVE 7 Archive")
    assert lines[-2:] == [b"* VANISHED 7", b"a4 OK MOVE completed"]
    b.run(b"b1 STORE 1 +FLAGS (\\Deleted)")
    b.run(b"b2 EXPUNGE")
    b.run(b"b3 UID STORE 3 +FLAGS (\\Flagged)")
    assert a.run(b"a5 NOOP") == [
        b"* VANISHED 1,5",
        b"* 1 FETCH (FLAGS (\\Flagged) UID 3 MODSEQ (" + modseq(inbox, 3) + b"))",
        b"* 2 EXISTS",
        b"* 0 RECENT",
        b"a5 OK NOOP completed",
    ]


def test_fetch_setting_seen_reports_modseq_once_condstore_is_enabled(connect, inbox):
    """A FETCH that sets \\Seen, after a CONDSTORE enabling action, reports MODSEQ with FLAGS;
    every message of a STORE of many is changed by one store call (one modseq)."""
    fill(inbox, 5)
    client = connect()
    client.run(b"s SELECT INBOX")
    client.run(b"f FETCH 1 (MODSEQ)")
    lines = client.run(b"g FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])")
    assert b"MODSEQ (" + modseq(inbox, 1) + b")" in b"\r\n".join(lines)
    assert "\\Seen" in inbox.get(1).flags
    client.run(b"h UID STORE 1:* +FLAGS.SILENT (\\Flagged)")
    assert len({inbox.get(uid).modseq for uid in range(1, 6)}) == 1


def test_bad_condstore_input_is_bad(connect, inbox):
    fill(inbox, 1)
    client = connect()
    client.run(b"s SELECT INBOX")
    for line in (
        b"a STORE 1 (UNCHANGEDSINCE x) +FLAGS (\\Seen)",
        b"b FETCH 1 (FLAGS) (CHANGEDSINCE)",
        b"c SEARCH MODSEQ",
        b"d SELECT INBOX (QRESYNC (1))",
    ):
        assert client.run(line)[-1].startswith(line[:2] + b"BAD "), line


def test_first_condstore_action_while_selected_reports_highestmodseq(connect, inbox):
    """RFC 7162 3.1: the first CONDSTORE enabling action with a mailbox selected (here FETCH
    MODSEQ after a plain SELECT) sends OK [HIGHESTMODSEQ] before its tagged reply; later ones
    do not (imaptest's esearch-condstore)."""
    fill(inbox, 2)
    client = connect()
    client.run(b"s SELECT INBOX")
    highest = b"%d" % inbox.highest_modseq
    assert client.run(b"a FETCH 1 (MODSEQ)") == [
        b"* OK [HIGHESTMODSEQ " + highest + b"] Highest",
        b"* 1 FETCH (MODSEQ (" + modseq(inbox, 1) + b"))",
        b"a OK FETCH completed",
    ]
    assert client.run(b"b FETCH 2 (MODSEQ)") == [
        b"* 2 FETCH (MODSEQ (" + modseq(inbox, 2) + b"))",
        b"b OK FETCH completed",
    ]


# -- the examples of RFC 7162 3.1 and 3.2 not replayed above ---------------------------------


def uids_at(inbox, uids) -> None:
    """Messages with exactly ``uids`` (ascending; those between are skipped as used), none
    \\Recent."""
    for uid in uids:
        next_uid(inbox, uid)
        inbox.append(message(f"u{uid}"))
    inbox.mark_seen_by_client(list(uids))


def test_rfc7162_3_1_2_2_no_nomodseq(connect, server, inbox):
    """RFC 7162 3.1.2.2: NOMODSEQ is for a mailbox that keeps no modseqs; every mailgw folder
    keeps them, so SELECT of a new, empty one gives HIGHESTMODSEQ, never NOMODSEQ."""
    server.store.create_folder(ALICE, "Empty")
    lines = connect().run(b"A142 SELECT Empty")
    assert not [line for line in lines if b"NOMODSEQ" in line]
    highest = server.store.folder(ALICE, "Empty").highest_modseq
    assert b"* OK [HIGHESTMODSEQ %d] Highest" % highest in lines


def test_rfc7162_3_2_5_1_select_qresync_example(connect, server, inbox):
    """RFC 7162 3.2.5.1 (A03): VANISHED (EARLIER) for the known UIDs expunged since the
    modseq and the changed messages, only among the known UIDs (541 is the last known: the 54
    messages delivered after it since are not reported).  UIDs 1 to 40 and 212, 213 are
    unknown to the client and still there; 100 messages, 11 \\Recent, 7 the first unseen,
    UIDNEXT 600, as in the example; another folder is selected first (``s``, not in the RFC)
    so that the answer starts with [CLOSED] as the RFC's.  The example's message numbers for
    UIDs 117, 119 and 541 (49, 50, 51) cannot hold with its VANISHED set (at most 41 messages
    are left below UID 117), so here they are 42, 43 and 46: what the mailbox gives.  mailgw
    sends the untagged lines in RFC 3501's order (the order is free), lists the keywords in
    FLAGS and sorts the flag lists."""
    present = [*range(1, 41), 42, 117, 119, 212, 213, 541, *range(542, 596)]
    for uid in range(1, 600):
        inbox.append(message(f"u{uid}"), {"\\Seen"} if uid < 7 else ())
    inbox.mark_seen_by_client(list(range(1, 585)))
    validity, since = inbox.uid_validity, inbox.highest_modseq
    inbox.expunge([uid for uid in range(1, 600) if uid not in present])
    inbox.set_flags(117, {"\\Seen", "\\Answered"})
    inbox.set_flags(119, {"\\Draft", "$MDNSent"})
    inbox.set_flags(541, {"\\Seen", "$Forwarded"})
    server.store.create_folder(ALICE, "Other")
    other = server.store.folder(ALICE, "Other")
    uids_at(other, range(1, 6))
    other.expunge([2])
    client = connect()
    client.run(b"e ENABLE QRESYNC")
    known = b"41:211,214:541"
    client.run(b"s SELECT Other")
    lines = client.run(b"A03 SELECT INBOX (QRESYNC (%d %d %s))" % (validity, since, known))
    assert lines == [
        b"* OK [CLOSED] Previous mailbox is now closed",
        b"* 100 EXISTS",
        b"* 11 RECENT",
        b"* OK [UNSEEN 7] First unseen",
        b"* OK [UIDVALIDITY %d] UIDs valid" % validity,
        b"* OK [UIDNEXT 600] Predicted next UID",
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded $MDNSent)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded"
        b" $MDNSent \\*)] Limited",
        b"* OK [HIGHESTMODSEQ %d] Highest" % inbox.highest_modseq,
        b"* VANISHED (EARLIER) 41,43:116,118,120:211,214:540",
        b"* 42 FETCH (UID 117 FLAGS (\\Answered \\Seen) MODSEQ (" + modseq(inbox, 117) + b"))",
        b"* 43 FETCH (UID 119 FLAGS ($MDNSent \\Draft) MODSEQ (" + modseq(inbox, 119) + b"))",
        b"* 46 FETCH (UID 541 FLAGS ($Forwarded \\Seen) MODSEQ (" + modseq(inbox, 541) + b"))",
        b"A03 OK [READ-WRITE] SELECT completed",
    ]


def test_rfc7162_3_2_6_uid_fetch_vanished_example(connect, inbox):
    """RFC 7162 3.2.6's two examples: ``UID FETCH 300:500 (FLAGS) (CHANGEDSINCE m)`` and
    ``UID SEARCH 300:500`` without VANISHED, then with it: UIDs 300 to 310, 405 and 411 were
    expunged since m, 404, 406 and 408 changed; 407, 410 and 412 did not.  The RFC's s101
    means UIDs, but a bare set in a SEARCH is message numbers (RFC 3501 6.4.4), of which there
    are 6 here: mailgw finds none, and with ``UID 300:500`` (s102) the RFC's answer.  mailgw
    puts UID last (the order of FETCH items is free, RFC 3501 7.4.2) and sorts the flags."""
    uids_at(inbox, [*range(300, 311), *range(404, 409), 410, 411, 412])
    since = inbox.highest_modseq
    inbox.expunge([*range(300, 311), 405, 411])
    inbox.set_flags(408, {"$NoJunk", "$AutoJunk", "$MDNSent"})
    inbox.set_flags(404, {"\\Seen"})
    inbox.set_flags(406, {"\\Deleted"})
    client = connect()
    client.run(b"A01 ENABLE QRESYNC")
    client.run(b"s SELECT INBOX")
    changed = [
        b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (" + modseq(inbox, 404) + b") UID 404)",
        b"* 2 FETCH (FLAGS (\\Deleted) MODSEQ (" + modseq(inbox, 406) + b") UID 406)",
        b"* 4 FETCH (FLAGS ($AutoJunk $MDNSent $NoJunk) MODSEQ ("
        + modseq(inbox, 408)
        + b") UID 408)",
        b"s100 OK FETCH completed",
    ]
    assert client.run(b"s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE %d)" % since) == changed
    assert client.run(b"s101 UID SEARCH 300:500") == [b"* SEARCH", b"s101 OK SEARCH completed"]
    assert client.run(b"s102 UID SEARCH UID 300:500") == [
        b"* SEARCH 404 406 407 408 410 412",
        b"s102 OK SEARCH completed",
    ]
    assert client.run(b"s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE %d VANISHED)" % since) == [
        b"* VANISHED (EARLIER) 300:310,405,411",
        *changed,
    ]


def test_rfc7162_3_1_7_status_highestmodseq(connect, server):
    """RFC 7162 3.1.7 Example 17 (A042): STATUS HIGHESTMODSEQ beside MESSAGES and UIDNEXT (231
    messages, UIDNEXT 44292).  mailgw gives the items in the order asked, the RFC's server in
    its own (no order is set: RFC 3501 7.2.4), and quotes the name, as in
    tests/test_imap_rfc3501.py's 6.3.10."""
    server.store.create_folder(ALICE, "blurdybloop")
    blurdybloop = server.store.folder(ALICE, "blurdybloop")
    next_uid(blurdybloop, 44292 - 231)
    fill(blurdybloop, 231)
    assert connect().run(b"A042 STATUS blurdybloop (UIDNEXT MESSAGES HIGHESTMODSEQ)") == [
        b'* STATUS "blurdybloop" (UIDNEXT 44292 MESSAGES 231 HIGHESTMODSEQ %d)'
        % blurdybloop.highest_modseq,
        b"A042 OK STATUS completed",
    ]


def test_rfc7162_3_1_10_esearch_with_modseq(connect, inbox):
    """RFC 7162 3.1.10 (with RFC 4731 3.2): an ESEARCH answer to a search with MODSEQ ends
    with the highest modseq of the messages found, ``ALL 1:3,5 MODSEQ n``."""
    fill(inbox, 6)
    since = inbox.highest_modseq
    for uid in (5, 1, 3, 2):
        inbox.set_flags(uid, {"\\Seen"})
    client = connect()
    client.run(b"s SELECT INBOX (CONDSTORE)")
    assert client.run(b"a SEARCH RETURN (ALL) MODSEQ %d" % (since + 1)) == [
        b'* ESEARCH (TAG "a") ALL 1:3,5 MODSEQ ' + modseq(inbox, 2),
        b"a OK SEARCH completed",
    ]
