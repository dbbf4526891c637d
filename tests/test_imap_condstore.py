"""CONDSTORE and QRESYNC (RFC 7162) and ENABLE (RFC 5161), over real sockets: the RFC's examples
replayed from its own text, with the mailbox set up so their sequence numbers and UIDs come
out; the numbers the server chooses (UIDVALIDITY, modseqs) are read from the store and put
into the expected lines, which are then compared byte for byte, but for FETCH item order and
human-readable texts (``normalise`` of tests/test_imap_rfc3501.py, or ``items``).

Replayed, by section of RFC 7162 (its examples are numbered through section 3.1): 3.1.2.1
Example 1 and 3.1.8 Example 18 (SELECT, with and without (CONDSTORE)), 3.1.2.2 (Example 2's
NOMODSEQ is never sent: every folder keeps modseqs), 3.1.3 Examples 3 to 11 (a103, a104,
c101, d105 both ways, a102, a106 with each case of another session's change, B001), 3.1.4.1
Example 12 (s100, CHANGEDSINCE), 3.1.4.2 Examples 13 (FETCH MODSEQ) and 14 (sessions 1 and
2), 3.1.5 and 3.1.6 Examples 15 and 16, 3.1.7 Example 17 (STATUS HIGHESTMODSEQ), 3.1.10
Example 19 (ESEARCH with MODSEQ), 3.1.11's rule (it has no example), 3.2.3 (ENABLE), 3.2.5
(A02, UIDVALIDITY mismatch), 3.2.5.1 (A03), 3.2.5.2 (A04 and B04 by their mechanism, on ten
messages: the RFC elides their answers), 3.2.6 (UID FETCH ... VANISHED), 3.2.7 to 3.2.9
(EXPUNGE, CLOSE, UID EXPUNGE and the HIGHESTMODSEQ of their OK) and 3.2.10 (VANISHED in lieu
of EXPUNGE).  Not replayed: Example 20 (ESORT is not offered), Example 14's session 3 (no
mailbox is shared with another user, and no flag is private).  Where mailgw answers
otherwise than the example (an order the RFC leaves free, B001's OK where the RFC's NO is a
MAY, Example 10's [MODIFIED] where 3.1.12's behaviour is a SHOULD), the test's docstring says
why."""

from __future__ import annotations

import re
import socket

import pytest
from test_imap import ALICE, PASSWORD, message, read_until
from test_imap_rfc3501 import fill as fill_3501
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


# -- RFC 7162 3.1.2.1 and 3.1.8: SELECT's answer whole ---------------------------------------


@pytest.fixture
def example_1(server, inbox):
    """The INBOX of RFC 7162 Examples 1 and 18: 172 messages, 1 to 11 \\Seen (12 the first
    unseen), 172 \\Recent, UIDNEXT 4392."""
    next_uid(inbox, 4392 - 172)
    fill_3501(inbox, 172, seen=range(1, 12), unclaimed={172})
    return inbox


@pytest.mark.parametrize(
    ("command", "done"),
    [
        (b"A142 SELECT INBOX", b""),
        (b"A142 SELECT INBOX (CONDSTORE)", b", CONDSTORE is now enabled"),
    ],
    ids=["example-1", "example-18-condstore"],
)
def test_rfc7162_examples_1_and_18_select(connect, example_1, command, done):
    """RFC 7162 Example 1 (3.1.2.1) and 18 (3.1.8): SELECT answers [HIGHESTMODSEQ n], with or
    without (CONDSTORE), after RFC 3501's lines, compared after ``normalise``; the modseq is
    the store's.  mailgw's HIGHESTMODSEQ line has a text (the RFC's none: resp-text allows
    either)."""
    assert lines(*connect().run(command)) == lines(
        b"* 172 EXISTS",
        b"* 1 RECENT",
        b"* OK [UNSEEN 12] Message 12 is first unseen",
        b"* OK [UIDVALIDITY 3857529045] UIDs valid",
        b"* OK [UIDNEXT 4392] Predicted next UID",
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited",
        b"* OK [HIGHESTMODSEQ %d]" % example_1.highest_modseq,
        b"A142 OK [READ-WRITE] SELECT completed" + done,
    )


# -- RFC 7162 3.1.3: the STORE examples not replayed above ------------------------------------


def test_rfc7162_3_1_3_examples_4_and_5(connect, inbox):
    """RFC 7162 3.1.3 Example 4 (a104: STORE * of \\Deleted and $Processed on 50 messages in a
    CONDSTORE session) and Example 5 (c101, another session's first CONDSTORE enabling
    command: [HIGHESTMODSEQ] first, the value before the STORE, then 50's new MODSEQ).
    $Processed is already known in the mailbox (message 1 has it), so no FLAGS update comes
    before (RFC 3501 7.2.6)."""
    fill(inbox, 50)
    inbox.set_flags(1, {"$Processed"})
    a, c = connect(), connect()
    a.run(b"s SELECT INBOX (CONDSTORE)")
    c.run(b"s SELECT INBOX")
    since = inbox.highest_modseq
    assert a.run(
        b"a104 STORE * (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Deleted $Processed)" % since
    ) == [b"* 50 FETCH (MODSEQ (" + modseq(inbox, 50) + b"))", b"a104 OK STORE completed"]
    before = inbox.highest_modseq
    answer = c.run(b"c101 STORE 50 (UNCHANGEDSINCE %d) -FLAGS.SILENT (\\Deleted)" % before)
    assert answer == [
        b"* OK [HIGHESTMODSEQ %d] Highest" % before,
        b"* 50 FETCH (MODSEQ (" + modseq(inbox, 50) + b"))",
        b"c101 OK STORE completed",
    ]
    assert inbox.get(50).modseq > before and inbox.get(50).flags == {"$Processed"}


def test_rfc7162_3_1_3_example_7_changes_told(connect, inbox):
    """RFC 7162 3.1.3 Example 7 (d105, "the server follows the SHOULD recommendation in
    Section 6.4.6 of [RFC3501]"): 7 and 9 were changed by another session, so mailgw tells
    their flags with the STORE's answer; it sends them after 5's line (the order of untagged
    responses is free) and sorts the flags."""
    fill(inbox, 9)
    a, b = connect(), connect()
    a.run(b"s SELECT INBOX (CONDSTORE)")
    b.run(b"s SELECT INBOX")
    since = inbox.highest_modseq
    b.run(b"b1 STORE 7 +FLAGS (\\Seen \\Deleted)")
    b.run(b"b2 STORE 9 +FLAGS (\\Answered)")
    assert a.run(b"d105 STORE 7,5,9 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Deleted)" % since) == [
        b"* 5 FETCH (MODSEQ (" + modseq(inbox, 5) + b"))",
        b"* 7 FETCH (FLAGS (\\Deleted \\Seen) MODSEQ (" + modseq(inbox, 7) + b"))",
        b"* 9 FETCH (FLAGS (\\Answered) MODSEQ (" + modseq(inbox, 9) + b"))",
        b"d105 OK [MODIFIED 7,9] Conditional STORE failed",
    ]


def test_rfc7162_3_1_3_example_8_unchangedsince_0(connect, inbox):
    """RFC 7162 3.1.3 Example 8 (a102): UNCHANGEDSINCE 0 "always fails if the metadata item
    exists" (message 12 has $MDNSent)."""
    fill(inbox, 12)
    inbox.set_flags(12, {"$MDNSent"})
    client = connect()
    client.run(b"s SELECT INBOX (CONDSTORE)")
    assert client.run(b"a102 STORE 12 (UNCHANGEDSINCE 0) +FLAGS.SILENT ($MDNSent)") == [
        b"a102 OK [MODIFIED 12] Conditional STORE failed"
    ]


def processed_elsewhere(connect, inbox, flags: bytes):
    """150 messages ($Processed known: message 1 has it), a CONDSTORE session and another that
    sets ``flags`` on message 101; the first session and the modseq from before."""
    fill(inbox, 150)
    inbox.set_flags(1, {"$Processed"})
    a, b = connect(), connect()
    a.run(b"s SELECT INBOX (CONDSTORE)")
    b.run(b"s SELECT INBOX")
    since = inbox.highest_modseq
    b.run(b"b STORE 101 +FLAGS (" + flags + b")")
    return a, since


def stored_100_to_150(inbox, told: bytes) -> list:
    """The answer to RFC 7162's a106 when 101 failed: 100 and 102 to 150 with their one new
    MODSEQ, then 101's flags (``told``) as another session left them."""
    new = modseq(inbox, 100)
    return [
        *(b"* %d FETCH (MODSEQ (%s))" % (n, new) for n in (100, *range(102, 151))),
        b"* 101 FETCH (FLAGS (" + told + b") MODSEQ (" + modseq(inbox, 101) + b"))",
        b"a106 OK [MODIFIED 101] Conditional STORE failed",
    ]


def test_rfc7162_3_1_3_examples_9_and_10_processed_elsewhere(connect, inbox):
    """RFC 7162 3.1.3 Examples 9 and 10: another client set $Processed on 101, so a106's
    UNCHANGEDSINCE fails for it.  mailgw does as Example 10 ("the server avoids the need for
    the client to poll"): 101's flags come with the answer (after the others: the order of
    untagged responses is free), so Example 9's a107 NOOP has nothing to tell.  Every message
    changed gets the one new modseq, as in the RFC."""
    a, since = processed_elsewhere(connect, inbox, b"$Processed")
    command = b"a106 STORE 100:150 (UNCHANGEDSINCE %d) +FLAGS.SILENT ($Processed)" % since
    assert a.run(command) == stored_100_to_150(inbox, b"$Processed")
    assert a.run(b"a107 NOOP") == [b"a107 OK NOOP completed"]


def test_rfc7162_3_1_3_example_10_another_flag_changed(connect, inbox):
    """RFC 7162 3.1.3 Example 10's second case: another client changed \\Deleted and
    \\Answered on 101, not $Processed.  mailgw answers as the case the RFC calls discouraged,
    [MODIFIED 101], not as its "nice server behavior" (3.1.12, a SHOULD): its store keeps one
    modseq per message and refuses what changed after UNCHANGEDSINCE.  The client's retry
    b108 with 101's new modseq succeeds."""
    a, since = processed_elsewhere(connect, inbox, b"\\Deleted \\Answered")
    command = b"a106 STORE 100:150 (UNCHANGEDSINCE %d) +FLAGS.SILENT ($Processed)" % since
    assert a.run(command) == stored_100_to_150(inbox, b"\\Answered \\Deleted")
    retry = b"b108 STORE 101 (UNCHANGEDSINCE %s) +FLAGS.SILENT ($Processed)" % modseq(inbox, 101)
    assert a.run(retry) == [
        b"* 101 FETCH (MODSEQ (" + modseq(inbox, 101) + b"))",
        b"b108 OK STORE completed",
    ]


def test_rfc7162_3_1_3_example_11_expunged_elsewhere(connect, inbox):
    """RFC 7162 3.1.3 Example 11 (B001): another session changed 2 and expunged 4 to 7.  The
    RFC "demonstrates that the MODIFIED response code MAY also be returned in the tagged NO
    response" (after RFC 2180 4.2.3): a MAY, so mailgw answers OK, with [MODIFIED 2] as 3.1.3
    requires ("the server MUST return in the tagged response a MODIFIED response code"); it
    tells 2's flags with the answer, and the EXPUNGEs at B002 (from the highest number down,
    then EXISTS).  Asked here are the lines of messages 1 to 3 and the tagged one: mailgw
    also repeats 4 to 7's last flags before their EXPUNGE.  b003 retries 2 with its new
    modseq; its FLAGS are 2's own (the RFC's \\Flagged there comes from nowhere)."""
    fill(inbox, 7)
    a, b = connect(), connect()
    a.run(b"s SELECT INBOX (CONDSTORE)")
    b.run(b"s SELECT INBOX")
    since = inbox.highest_modseq
    b.run(b"b1 STORE 2 +FLAGS (\\Deleted \\Answered)")
    inbox.expunge([4, 5, 6, 7])
    answer = a.run(b"B001 STORE 1:7 (UNCHANGEDSINCE %d) +FLAGS (\\SEEN)" % since)
    assert [line for line in answer if re.match(rb"\* [123] |B001 ", line)] == [
        b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (" + modseq(inbox, 1) + b"))",
        b"* 3 FETCH (FLAGS (\\Seen) MODSEQ (" + modseq(inbox, 3) + b"))",
        b"* 2 FETCH (FLAGS (\\Answered \\Deleted) MODSEQ (" + modseq(inbox, 2) + b"))",
        b"B001 OK [MODIFIED 2] Conditional STORE failed",
    ]
    assert a.run(b"B002 NOOP") == [
        *(b"* %d EXPUNGE" % n for n in (7, 6, 5, 4)),
        b"* 3 EXISTS",
        b"* 0 RECENT",
        b"B002 OK NOOP completed",
    ]
    assert a.run(b"b003 STORE 2 (UNCHANGEDSINCE %s) +FLAGS (\\Seen)" % modseq(inbox, 2)) == [
        b"* 2 FETCH (FLAGS (\\Answered \\Deleted \\Seen) MODSEQ (" + modseq(inbox, 2) + b"))",
        b"b003 OK STORE completed",
    ]


def test_rfc7162_3_1_11_no_change_no_new_modseq(connect, inbox):
    """RFC 7162 3.1.11 (no example exchange): "Adding the flag when it is already present or
    removing it when it is not present SHOULD NOT change the mod-sequence", for STORE with and
    without UNCHANGEDSINCE and for a FETCH that would set \\Seen.  A conditional STORE that
    passes still answers a FETCH with MODSEQ, even .SILENT (3.1.3: "An untagged FETCH response
    MUST be sent")."""
    fill(inbox, 1)
    inbox.set_flags(1, {"\\Seen"})
    before = modseq(inbox, 1)
    client = connect()
    client.run(b"s SELECT INBOX (CONDSTORE)")
    line = b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (" + before + b"))"
    assert client.run(b"a STORE 1 +FLAGS (\\Seen)") == [line, b"a OK STORE completed"]
    assert client.run(b"b STORE 1 -FLAGS (\\Draft)") == [line, b"b OK STORE completed"]
    assert client.run(b"c FETCH 1 (FLAGS BODY[TEXT])")[-1] == b"c OK FETCH completed"
    assert client.run(b"d STORE 1 (UNCHANGEDSINCE %s) +FLAGS.SILENT (\\Seen)" % before) == [
        b"* 1 FETCH (MODSEQ (" + before + b"))",
        b"d OK STORE completed",
    ]
    assert modseq(inbox, 1) == before


# -- RFC 7162 3.1.4.2 Example 14 and 3.2.5, 3.2.7 to 3.2.9 ------------------------------------


def test_rfc7162_3_1_4_2_example_14_two_sessions(connect, inbox):
    """RFC 7162 Example 14, sessions 1 and 2 (one user): each flag change in session 1 is
    reported in session 2 with its MODSEQ.  mailgw has no private flags (\\Seen is shared
    like the others) and no mailbox shared with another user, so session 3 ("andrew") has no
    counterpart; the FLAGS are compared as sets (mailgw sorts them)."""
    fill(inbox, 7)
    inbox.set_flags(7, {"\\Answered"})
    one, two = connect(), connect()
    one.run(b"A142 SELECT INBOX (CONDSTORE)")
    two.run(b"C142 SELECT INBOX (CONDSTORE)")
    for store, noop, flags in (
        (b"A160 STORE 7 +FLAGS.SILENT (\\Deleted)", b"C180 NOOP", {b"\\Deleted", b"\\Answered"}),
        (
            b"A240 STORE 7 +FLAGS.SILENT (\\Seen)",
            b"C270 NOOP",
            {b"\\Deleted", b"\\Answered", b"\\Seen"},
        ),
        (b"A330 STORE 7 -FLAGS.SILENT (\\Answered \\Seen)", b"C360 NOOP", {b"\\Deleted"}),
    ):
        tag = store.split()[0]
        assert one.run(store) == [
            b"* 7 FETCH (MODSEQ (" + modseq(inbox, 7) + b"))",
            tag + b" OK STORE completed",
        ]
        told = two.run(noop)
        assert [items(line) for line in told[:-1]] == [
            (7, {b"FLAGS": flags, b"MODSEQ": modseq(inbox, 7)})
        ]
        assert told[-1] == noop.split()[0] + b" OK NOOP completed"


def test_rfc7162_3_2_5_uidvalidity_mismatch(connect, inbox):
    """RFC 7162 3.2.5's example (A02): with a UIDVALIDITY that does not match, SELECT answers
    as without QRESYNC (464 messages, 3 \\Recent, 12 the first unseen, UIDNEXT 550), compared
    after ``normalise`` and as sets: mailgw's order of the untagged lines is RFC 3501's (the
    order is free); its FLAGS list is in RFC 3501's order too."""
    next_uid(inbox, 550 - 464)
    fill_3501(inbox, 464, seen=range(1, 12), unclaimed={462, 463, 464})
    client = connect()
    client.run(b"e ENABLE QRESYNC")
    validity = inbox.uid_validity
    answer = client.run(
        b"A02 SELECT INBOX (QRESYNC (%d 20050715194045000 41,43:211,214:541))" % (validity + 1)
    )
    assert sorted(lines(*answer)) == sorted(
        lines(
            b"* 464 EXISTS",
            b"* 3 RECENT",
            b"* OK [UIDVALIDITY 3857529045] UIDVALIDITY",
            b"* OK [UIDNEXT 550] Predicted next UID",
            b"* OK [HIGHESTMODSEQ %d] Highest mailbox mod-sequence" % inbox.highest_modseq,
            b"* OK [UNSEEN 12] Message 12 is first unseen",
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen \\*)] Permanent",
            b"A02 OK [READ-WRITE] Sorry, UIDVALIDITY mismatch",
        )
    )


def test_rfc7162_3_2_7_to_3_2_9_expunge_uid_expunge_close(connect, server, inbox):
    """RFC 7162 3.2.7: messages 3, 4, 7 and 11 (UIDs 405, 407, 410, 425) flagged \\Deleted.
        Without QRESYNC (A202, in Other) EXPUNGE answers ``* n EXPUNGE``, mailgw's from the
        highest number down (RFC 3501 7.4.1 allows either) and without the HIGHESTMODSEQ "optional
        in this case"; with QRESYNC (B202) one VANISHED, and the tagged OK MUST carry the new
        HIGHESTMODSEQ.  3.2.9: UID EXPUNGE 3000:3002 alike (tag ``.``; here they are messages 10
    to 12, the RFC's 3 to 5).  3.2.8: CLOSE's OK MUST
        NOT carry it."""
    uids = (401, 402, 405, 407, 408, 409, 410, 411, 412, 413, 425)
    uids_at(inbox, uids)
    server.store.create_folder(ALICE, "Other")
    other = server.store.folder(ALICE, "Other")
    uids_at(other, (*range(1, 12), *range(2998, 3004)))
    plain, qresync = connect(), connect()
    plain.run(b"s SELECT Other")
    plain.run(b"d STORE 3,4,7,11 +FLAGS.SILENT (\\Deleted)")
    assert plain.run(b"A202 EXPUNGE") == [
        *(b"* %d EXPUNGE" % n for n in (11, 7, 4, 3)),
        b"A202 OK EXPUNGE completed",
    ]
    plain.run(b"d UID STORE 3000:3002 +FLAGS.SILENT (\\Deleted)")
    assert plain.run(b". UID EXPUNGE 3000:3002") == [
        *(b"* %d EXPUNGE" % n for n in (12, 11, 10)),
        b". OK EXPUNGE completed",
    ]
    qresync.run(b"e ENABLE QRESYNC")
    qresync.run(b"s SELECT INBOX")
    qresync.run(b"d STORE 3,4,7,11 +FLAGS.SILENT (\\Deleted)")
    assert qresync.run(b"B202 EXPUNGE") == [
        b"* VANISHED 405,407,410,425",
        b"B202 OK [HIGHESTMODSEQ %d] EXPUNGE completed" % inbox.highest_modseq,
    ]
    qresync.run(b"d STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert qresync.run(b"A202 CLOSE") == [b"A202 OK CLOSE completed"]
    assert [info.uid for info in inbox.messages()][0] == 402
