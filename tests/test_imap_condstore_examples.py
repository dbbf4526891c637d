"""RFC 7162's examples of STORE (3.1.3, 3.1.11), of SELECT's answer whole (Examples 1 and 18), of
two sessions' flag changes (Example 14) and of 3.2.5's UIDVALIDITY mismatch and EXPUNGE, UID
EXPUNGE and CLOSE (3.2.7 to 3.2.9) and 3.2.10.2's VANISHED, replayed from the RFC's own text
over real sockets, as tests/test_imap_condstore.py replays the others (whose fixtures and
helpers these are, and whose docstring lists every example covered): the server's numbers
(UIDVALIDITY, modseqs) are the store's, FETCH items compared in any order, texts after
``normalise``."""

from __future__ import annotations

import re

import pytest
import test_imap_condstore as condstore
from test_imap import ALICE
from test_imap_condstore import fill, items, modseq, uids_at
from test_imap_rfc3501 import fill as fill_3501
from test_imap_rfc3501 import lines, next_uid

#: The fixtures of tests/test_imap_condstore.py, this module's too.
port, inbox, connect = condstore.port, condstore.inbox, condstore.connect

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
    highest number down (RFC 3501 7.4.1 allows either) and without the HIGHESTMODSEQ
    "optional in this case"; with QRESYNC (B202) one VANISHED, and the tagged OK MUST carry
    the new HIGHESTMODSEQ.  3.2.9: UID EXPUNGE 3000:3002 alike (tag ``.``; here they are
    messages 10 to 12, the RFC's 3 to 5).  3.2.8: CLOSE's OK MUST NOT carry it."""
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


def test_rfc7162_3_2_10_2_vanished_tells_only_what_is_new(connect, inbox):
    """RFC 7162 3.2.10.2's example: messages 1 to 11 with UIDs x, 504, 505, 507, 508, x, 510,
    x, x, x, 625; 3, 4, 7 and 11 \\Deleted, then 504 and 508: each VANISHED names only the
    UIDs expunged since the last.  The RFC's OKs here carry no HIGHESTMODSEQ; mailgw's do, as
    3.2.7's MUST has it ("the server MUST send the updated per-mailbox modification sequence
    using the HIGHESTMODSEQ response code ... in the tagged OK response")."""
    uids_at(inbox, (1, 504, 505, 507, 508, 509, 510, 520, 521, 522, 625))
    client = connect()
    client.run(b"e ENABLE QRESYNC")
    client.run(b"s SELECT INBOX")
    client.run(b"d STORE 3,4,7,11 +FLAGS.SILENT (\\Deleted)")
    assert client.run(b"A202 EXPUNGE") == [
        b"* VANISHED 505,507,510,625",
        b"A202 OK [HIGHESTMODSEQ %d] EXPUNGE completed" % inbox.highest_modseq,
    ]
    client.run(b"d UID STORE 504,508 +FLAGS.SILENT (\\Deleted)")
    assert client.run(b"A210 EXPUNGE") == [
        b"* VANISHED 504,508",
        b"A210 OK [HIGHESTMODSEQ %d] EXPUNGE completed" % inbox.highest_modseq,
    ]
