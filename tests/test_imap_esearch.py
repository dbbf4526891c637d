"""ESEARCH (RFC 4731) and SEARCHRES (RFC 5182) over real sockets: each example of RFC 4731
section 3.1 and of RFC 5182 section 2.2 (examples 1 to 10; RFC 9051 6.4.4.4 repeats them)
replayed on a mailbox built so that the example's numbers come out, compared byte for byte
after ``normalise`` (tests/test_imap_rfc3501.py, whose session and helpers these are: only the
human-readable text of status responses and the values that are the server's own choice).
Also RFC 4731 3.2 (ESEARCH with a MODSEQ criterion), ``$`` where RFC 5182 3 allows a sequence
set (SORT and THREAD too) and the BAD its grammar calls for."""

from __future__ import annotations

import pytest
from test_imap import ALICE, message
from test_imap_rfc3501 import Session, fill, lines, listening, next_uid

#: 2007-01-01, after every SINCE of the examples.
LATER = 1167609600.0
#: 1990-01-01, before them.
EARLIER = 631152000.0


@pytest.fixture
def imap(server):
    """Alice, an IMAP listener and a logged-in raw session to it."""
    session = Session(listening(server))
    yield session
    session.sock.close()


@pytest.fixture
def rfc4731(server, imap):
    """The mailbox of RFC 4731 3.1's examples, selected: 20 messages, 1 to 3 seen (so 4 is
    the first unseen), 2, 10 and 11 flagged, 15 deleted (5 to 19)."""
    fill(server.store.folder(ALICE), 20, Seen={1, 2, 3}, Flagged={2, 10, 11}, Deleted=range(5, 20))
    imap.run(b"s SELECT INBOX")
    return imap


SMITH = b'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"'


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        (
            b"A282 SEARCH RETURN (MIN COUNT) " + SMITH,
            [b'* ESEARCH (TAG "A282") MIN 2 COUNT 3', b"A282 OK SEARCH completed"],
        ),
        (
            b"A283 SEARCH RETURN () " + SMITH,
            [b'* ESEARCH (TAG "A283") ALL 2,10:11', b"A283 OK SEARCH completed"],
        ),
        (
            b"A284 SEARCH RETURN (MIN) UNSEEN",
            [b'* ESEARCH (TAG "A284") MIN 4', b"A284 OK SEARCH completed"],
        ),
        (
            b"A286 SEARCH RETURN (COUNT) DELETED",
            [b'* ESEARCH (TAG "A286") COUNT 15', b"A286 OK SEARCH completed"],
        ),
    ],
    ids=["A282-min-count", "A283-empty-return-is-all", "A284-min-unseen", "A286-count-deleted"],
)
def test_rfc4731_examples(rfc4731, command, answer):
    """RFC 4731 3.1: the examples on sequence numbers."""
    assert rfc4731.run(command) == lines(*answer)


def test_rfc4731_example_a285_uid_min_max(server, imap):
    """RFC 4731 3.1 (A285): with UID SEARCH, MIN and MAX are UIDs and ESEARCH says UID (1:5000
    is a set of message numbers, so all messages).  The folder's UIDs are 7, 8 and 3800
    (earlier ones used and expunged, as the uidlist's next UID says)."""
    server.store.create_folder(ALICE, "Uids")
    folder = server.store.folder(ALICE, "Uids")
    for uid in (7, 8, 3800):
        next_uid(folder, uid)
        folder.append(message(f"u{uid}"))
    imap.run(b"s SELECT Uids")
    assert imap.run(b"A285 UID SEARCH RETURN (MIN MAX) 1:5000") == lines(
        b'* ESEARCH (TAG "A285") UID MIN 7 MAX 3800', b"A285 OK SEARCH completed"
    )


def test_rfc4731_nothing_found(rfc4731):
    """RFC 4731 3.1: with no match MIN, MAX and ALL are left out but ESEARCH is still sent;
    COUNT is always there (0)."""
    assert rfc4731.run(b"e1 SEARCH RETURN (MIN MAX ALL) DRAFT") == lines(
        b'* ESEARCH (TAG "e1")', b"e1 OK SEARCH completed"
    )
    assert rfc4731.run(b"e2 UID SEARCH RETURN (COUNT MIN) DRAFT") == lines(
        b'* ESEARCH (TAG "e2") UID COUNT 0', b"e2 OK SEARCH completed"
    )


def test_rfc4731_bad_return_options(rfc4731):
    """RFC 4731 3.1 / RFC 4466: an unknown result option, or one not in a list, is BAD."""
    for command in (b"b1 SEARCH RETURN (BOGUS) ALL", b"b2 SEARCH RETURN MIN ALL"):
        assert rfc4731.run(command)[-1].startswith(command[:2] + b" BAD"), command


def test_rfc4731_modseq_with_esearch(server, imap):
    """RFC 4731 3.2: with a MODSEQ criterion ESEARCH ends with MODSEQ: for MIN and/or MAX
    alone the highest modseq of the messages they return, with ALL or COUNT the highest of
    all found."""
    inbox = server.store.folder(ALICE)
    fill(inbox, 4)
    since = inbox.highest_modseq
    for uid in (1, 3, 2):
        inbox.set_flags(uid, {"\\Answered"})
    modseq = {uid: inbox.get(uid).modseq for uid in (1, 2, 3)}
    imap.run(b"s SELECT INBOX")
    assert imap.run(b"m1 SEARCH RETURN (MIN) MODSEQ %d" % (since + 1))[-2:] == lines(
        b'* ESEARCH (TAG "m1") MIN 1 MODSEQ %d' % modseq[1], b"m1 OK SEARCH completed"
    )
    assert imap.run(b"m2 SEARCH RETURN (MIN MAX) MODSEQ %d" % (since + 1)) == lines(
        b'* ESEARCH (TAG "m2") MIN 1 MAX 3 MODSEQ %d' % modseq[3], b"m2 OK SEARCH completed"
    )
    assert imap.run(b"m3 UID SEARCH RETURN (ALL) MODSEQ %d" % (since + 1)) == lines(
        b'* ESEARCH (TAG "m3") UID ALL 1:3 MODSEQ %d' % modseq[2], b"m3 OK SEARCH completed"
    )
    assert imap.run(b"m4 SEARCH RETURN (COUNT) MODSEQ %d" % (inbox.highest_modseq + 1)) == lines(
        b'* ESEARCH (TAG "m4") COUNT 0', b"m4 OK SEARCH completed"
    )


# -- RFC 5182 section 2.2 ------------------------------------------------------------------


def flagged_at(server, count: int, flagged: dict) -> None:
    """``count`` messages of INBOX; message n is flagged and has UID ``flagged[n]``."""
    inbox = server.store.folder(ALICE)
    for n in range(1, count + 1):
        if n in flagged:
            next_uid(inbox, flagged[n])
        inbox.append(message(f"m{n}"), {"\\Flagged"} if n in flagged else (), LATER)
    inbox.mark_seen_by_client([info.uid for info in inbox.messages()])


FETCH_2_84_882 = [
    b"* 2 FETCH (UID 14 FLAGS (\\Flagged))",
    b"* 84 FETCH (UID 100 FLAGS (\\Flagged))",
    b"* 882 FETCH (UID 1115 FLAGS (\\Flagged))",
]


@pytest.mark.parametrize("pipelined", [False, True], ids=["example-1", "example-2-pipelined"])
def test_rfc5182_examples_1_and_2_fetch_of_the_saved_result(server, imap, pipelined):
    """RFC 5182 2.2 examples 1 and 2: SEARCH RETURN (SAVE) answers no SEARCH line; FETCH $
    fetches the messages found (2, 84, 882: UIDs 14, 100, 1115), alone or pipelined.  The
    example's ``(UID INTERNALDATE FLAGS RFC822.HEADER)`` is cut to UID and FLAGS: the RFC
    shows the lines' starts only."""
    flagged_at(server, 882, {2: 14, 84: 100, 882: 1115})
    imap.run(b"s SELECT INBOX")
    search = b'A282 SEARCH RETURN (SAVE) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"'
    fetch = b"A283 FETCH $ (UID FLAGS)"
    if pipelined:
        answer = imap.run(search, fetch)
        assert answer == lines(b"A282 OK SEARCH completed", *FETCH_2_84_882, b"A283 OK completed")
    else:
        assert imap.run(search) == lines(b"A282 OK SEARCH completed, result saved")
        assert imap.run(fetch) == lines(*FETCH_2_84_882, b"A283 OK completed")


def test_rfc5182_example_3_saved_result_in_a_uid_search(server, imap):
    """RFC 5182 2.2 example 3: ``UID $`` and plain ``$`` in UID SEARCH both name the saved
    result (UIDs 17, 900, 901 small, 902 large, 1000 from Smith, 1001 too old)."""
    inbox = server.store.folder(ALICE)
    for uid, size, sender, date in (
        (17, 100, b"Bob", LATER),
        (900, 100, b"Bob", LATER),
        (901, 100, b"Bob", LATER),
        (902, 5000, b"Bob", LATER),
        (1000, 100, b"Smith", LATER),
        (1001, 100, b"Bob", EARLIER),
    ):
        next_uid(inbox, uid)
        inbox.append(message(f"u{uid}", "x" * size + "\r\n").replace(b"Bob", sender), (), date)
    imap.run(b"s SELECT INBOX")
    assert imap.run(b'A300 SEARCH RETURN (SAVE) SINCE 1-Jan-2004 NOT FROM "Smith"') == lines(
        b"A300 OK SEARCH completed"
    )
    for command in (b"A301 UID SEARCH UID $ SMALLER 4096", b"A301 UID SEARCH $ SMALLER 4096"):
        assert imap.run(command) == lines(b"* SEARCH 17 900 901", b"A301 OK completed")


def test_rfc5182_example_4_saved_result_or_numbers(server, imap):
    """RFC 5182 2.2 example 4, scaled from 3021 messages to 12: ``(OR $ 1,10:11) TEXT`` with
    a UTF-8 literal (LITERAL+).  $ is 1, 3 and 6 to 12 (2 is too old, 4 and 5 are from
    Smith); the word is in 1, 3, 4, 6 and 10."""
    inbox = server.store.folder(ALICE)
    for n in range(1, 13):
        word = "мать" if n in (1, 3, 4, 6, 10) else "other"
        sender = b"Smith" if n in (4, 5) else b"Bob"
        body = message(f"m{n}", word + "\r\n").replace(b"Bob", sender)
        inbox.append(body, (), LATER if n != 2 else EARLIER)
    imap.run(b"s SELECT INBOX")
    assert imap.run(b'P282 SEARCH RETURN (SAVE) SINCE 1-Feb-1994 NOT FROM "Smith"') == lines(
        b"P282 OK SEARCH completed"
    )
    text = "мать".encode()
    assert imap.run(b"P283 SEARCH CHARSET UTF-8 (OR $ 1,10:11) TEXT {8+}\r\n" + text) == lines(
        b"* SEARCH 1 3 6 10", b"P283 OK completed"
    )


def test_rfc5182_example_5_a_failed_save_empties_the_result(server, imap):
    """RFC 5182 2.2 example 5: a SEARCH RETURN (SAVE) answered NO (KOI8-R is not supported)
    leaves $ empty, so FETCH $ fetches nothing.  mailgw's BADCHARSET lists the charsets it
    has, US-ASCII and UTF-8 (the example's server has UTF-8 only)."""
    fill(server.store.folder(ALICE), 3)
    imap.run(b"s SELECT INBOX")
    assert imap.run(b'B282 SEARCH RETURN (SAVE) SINCE 1-Feb-1994 NOT FROM "Smith"') == lines(
        b"B282 OK SEARCH completed"
    )
    koi8 = "мать".encode("koi8-r")
    command = b"B283 SEARCH RETURN (SAVE) CHARSET KOI8-R (OR $ 1,3000:3021) TEXT {4+}\r\n"
    assert imap.run(command + koi8) == lines(
        b"B283 NO [BADCHARSET (US-ASCII UTF-8)] KOI8-R is not supported"
    )
    assert imap.run(b"B284 FETCH $ (UID)") == lines(b"B284 OK FETCH completed")


def test_rfc5182_examples_6_to_9_pipelined(server, imap):
    """RFC 5182 2.2 examples 6 to 9.  6: COPY of an empty $ is OK, nothing copied.  7: COPY
    and STORE of $ pipelined after the SEARCH (mailgw's COPY OK carries COPYUID, UIDPLUS).
    8: two SEARCHes pipelined; mailgw answers them in order (the RFC lets a server answer the
    second first).  9: the second SAVE replaces the first."""
    inbox = server.store.folder(ALICE)
    for n, junk, sender in ((1, True, b"Bob"), (2, False, b"Eric"), (3, True, b"Eric")):
        body = message(f"m{n}").replace(b"Bob", sender)
        inbox.append(body, {"$Junk"} if junk else (), LATER)
    inbox.mark_seen_by_client([1, 2, 3])
    server.store.create_folder(ALICE, "Other Messages")
    imap.run(b"s SELECT INBOX")
    validity = b"%d" % server.store.folder(ALICE, "Junk").uid_validity
    assert imap.run(
        b'E282 SEARCH RETURN (SAVE) SINCE 28-Oct-2006 NOT FROM "Eric" KEYWORD $Junk NOT ALL',
        b'E283 COPY $ "Other Messages"',
    ) == lines(b"E282 OK SEARCH completed", b"E283 OK COPY completed, nothing copied")
    assert server.store.folder(ALICE, "Other Messages").messages() == ()
    assert imap.run(
        b"F282 SEARCH RETURN (SAVE) KEYWORD $Junk",
        b'F283 COPY $ "Junk"',
        b"F284 STORE $ +FLAGS.Silent (\\Deleted)",
    ) == lines(
        b"F282 OK SEARCH completed",
        b"F283 OK [COPYUID " + validity + b" 1,3 1:2] COPY completed",
        b"F284 OK STORE completed",
    )
    assert [sorted(info.flags) for info in inbox.messages()] == [
        ["$Junk", "\\Deleted"],
        [],
        ["$Junk", "\\Deleted"],
    ]
    assert imap.run(
        b"G282 SEARCH RETURN (SAVE) KEYWORD $Junk",
        b'G283 SEARCH RETURN (ALL) SINCE 28-Oct-2006 FROM "Eric"',
    ) == lines(
        b"G282 OK SEARCH completed",
        b'* ESEARCH (TAG "G283") ALL 2:3',
        b"G283 OK SEARCH completed",
    )
    assert imap.run(
        b"H282 SEARCH RETURN (SAVE) KEYWORD $Junk",
        b'H283 SEARCH RETURN (SAVE) SINCE 28-Oct-2006 FROM "Eric"',
        b"H284 FETCH $ (UID)",
    ) == lines(
        b"H282 OK SEARCH completed",
        b"H283 OK SEARCH completed",
        b"* 2 FETCH (UID 2)",
        b"* 3 FETCH (UID 3)",
        b"H284 OK FETCH completed",
    )


@pytest.mark.parametrize(
    ("tag", "returns", "answer", "saved"),
    [
        (b"C282", b"ALL", b"ALL 2,10:15,21", None),
        (b"C283", b"ALL SAVE", b"ALL 2,10:15,21", b"2,10:15,21"),
        (b"C284", b"SAVE MIN", b"MIN 2", b"2"),
        (b"C285", b"MAX SAVE MIN", b"MIN 2 MAX 21", b"2,21"),
        (b"C286", b"MAX SAVE MIN COUNT", b"MIN 2 MAX 21 COUNT 8", b"2,10:15,21"),
        (b"C286", b"ALL SAVE MIN", b"MIN 2 ALL 2,10:15,21", b"2,10:15,21"),
    ],
    ids=["C282", "C283", "C284", "C285", "C286", "C286-all-save-min"],
)
def test_rfc5182_example_10_what_save_keeps(server, imap, tag, returns, answer, saved):
    """RFC 5182 2.2 example 10 (the rules of 2.4): with MIN and/or MAX alone SAVE keeps only
    those, with ALL or COUNT all that was found; without SAVE, $ is left as it was (here: 1).
    The RFC's first answer says TAG "C283" for C282, a slip: mailgw answers with the command's
    own tag."""
    fill(server.store.folder(ALICE), 22)
    inbox = server.store.folder(ALICE)
    for uid in (1, 3, 4, 5, 6, 7, 8, 9, 16, 17, 18, 19, 20, 22):
        inbox.set_flags(uid, {"\\Answered"})
    imap.run(b"s SELECT INBOX")
    imap.run(b"z SEARCH RETURN (SAVE) 1")
    command = tag + b" SEARCH RETURN (" + returns + b') SINCE 12-Feb-2006 NOT FROM "Smith"'
    assert imap.run(command + b" UNANSWERED") == lines(
        b'* ESEARCH (TAG "' + tag + b'") ' + answer, tag + b" OK SEARCH completed"
    )
    found = [line.split()[1] for line in imap.run(b"f FETCH $ (UID)")[:-1]]
    expected = (saved or b"1").replace(b"10:15", b"10,11,12,13,14,15").split(b",")
    assert found == expected


def test_rfc5182_dollar_must_stand_alone(server, imap):
    """RFC 5182 3: ``$`` is a sequence set of its own: joined with numbers it is BAD; alone it
    is accepted wherever a sequence set is (FETCH, STORE, COPY, UID forms, SEARCH)."""
    fill(server.store.folder(ALICE), 3, Flagged={2})
    imap.run(b"s SELECT INBOX")
    imap.run(b"a SEARCH RETURN (SAVE) FLAGGED")
    for command in (b"b1 FETCH $,1 (FLAGS)", b"b2 FETCH 1:$ (FLAGS)", b"b3 SEARCH $:2"):
        assert imap.run(command)[-1].startswith(command[:2] + b" BAD"), command
    assert imap.run(b"c1 UID FETCH $ (FLAGS)") == lines(
        b"* 2 FETCH (FLAGS (\\Flagged) UID 2)", b"c1 OK FETCH completed"
    )
    assert imap.run(b"c2 UID STORE $ +FLAGS (\\Seen)") == lines(
        b"* 2 FETCH (FLAGS (\\Flagged \\Seen) UID 2)", b"c2 OK STORE completed"
    )


def test_rfc5182_dollar_and_modseq_in_sort_and_thread(server, imap):
    """RFC 5182 3 allows ``$`` anywhere a sequence set is, so in SORT and THREAD criteria
    too; MODSEQ (RFC 7162 3.1.5) is a search key there as in SEARCH.  ORDEREDSUBJECT puts
    the threads in the order of their first message's date (1, 2, 3 here)."""
    inbox = server.store.folder(ALICE)
    for n, subject in enumerate(("c", "a", "b", "d"), 1):
        inbox.append(message(subject), (), LATER + n)
    inbox.mark_seen_by_client([1, 2, 3, 4])
    since = inbox.highest_modseq
    inbox.set_flags(4, {"\\Seen"})
    imap.run(b"s SELECT INBOX")
    imap.run(b"a SEARCH RETURN (SAVE) 1:3")
    assert imap.run(b"b SORT (SUBJECT) UTF-8 $") == lines(b"* SORT 2 3 1", b"b OK SORT completed")
    assert imap.run(b"c UID SORT (REVERSE SUBJECT) UTF-8 UID $") == lines(
        b"* SORT 1 3 2", b"c OK SORT completed"
    )
    assert imap.run(b"d THREAD ORDEREDSUBJECT UTF-8 $") == lines(
        b"* THREAD (1)(2)(3)", b"d OK THREAD completed"
    )
    highest = b"%d" % inbox.highest_modseq
    assert imap.run(b"e SORT (SUBJECT) UTF-8 MODSEQ %d" % (since + 1)) == lines(
        b"* OK [HIGHESTMODSEQ " + highest + b"] Highest",
        b"* SORT 4",
        b"e OK SORT completed",
    )
    assert imap.run(b"f UID THREAD REFERENCES UTF-8 OR MODSEQ %d $" % (since + 1)) == lines(
        b"* THREAD (1)(2)(3)(4)", b"f OK THREAD completed"
    )
