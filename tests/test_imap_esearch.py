"""ESEARCH (RFC 4731) and SEARCHRES (RFC 5182) over real sockets, the examples replayed from
the RFCs' own text: RFC 4731 3.1 (A282 to A286) and 3.2 (a1 to a4, ESEARCH with MODSEQ), and
every example of RFC 5182 2.2 (1 to 10).  Each runs on a mailbox built so that the example's
numbers come out, its client lines sent as the RFC has them, and the answer compared byte for
byte after ``normalise`` (tests/test_imap_rfc3501.py, whose session and helpers these are: only
the human-readable text of status responses and the values that are the server's own choice;
a modseq the RFC shows is the store's).  Where mailgw answers otherwise, RFC 5182 example 5
(the example contradicts its section 2.1), 7 (COPYUID), 8 (answers in order) and 10 (a tag
slip), the test's docstring says why.  Also the rules behind them (MODSEQ with each result
option, nothing found, BAD options), ``$`` wherever RFC 5182 3 allows a sequence set (SORT and
THREAD too) and the BAD its grammar calls for."""

from __future__ import annotations

import pytest
from test_imap import ALICE, message
from test_imap_condstore import drafts
from test_imap_rfc3501 import Session, fill, lines, listening, next_uid, normalise

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


def test_rfc4731_3_2_example(server, imap):
    """RFC 4731 3.2's example (RFC 7162 Example 15 with result options), on the mailbox of
    that example (tests/test_imap_condstore.py, ``drafts``): with MIN or MAX alone, MODSEQ is
    the found message's (2's, 23's); with MIN and MAX the higher of the two (2's); with COUNT
    the highest of all found (7's).  The RFC's modseq 620162338 is the one the store gave
    before the changes, plus one; the session enabled CONDSTORE at SELECT, so no HIGHESTMODSEQ
    comes first (RFC 7162 3.1)."""
    inbox = server.store.folder(ALICE)
    since = drafts(inbox)
    imap.run(b"s SELECT INBOX (CONDSTORE)")
    search = b' MODSEQ "/flags/\\\\draft" all %d' % (since + 1)
    for tag, returns, answer in (
        (b"a1", b"MIN", b"MIN 2 MODSEQ %d" % inbox.get(2).modseq),
        (b"a2", b"MAX", b"MAX 23 MODSEQ %d" % inbox.get(23).modseq),
        (b"a3", b"MIN MAX", b"MIN 2 MAX 23 MODSEQ %d" % inbox.get(2).modseq),
        (b"a4", b"MIN COUNT", b"MIN 2 COUNT 10 MODSEQ %d" % inbox.get(7).modseq),
    ):
        assert imap.run(tag + b" SEARCH RETURN (" + returns + b")" + search) == lines(
            b'* ESEARCH (TAG "' + tag + b'") ' + answer, tag + b" OK Search complete"
        )


# -- RFC 5182 section 2.2 ------------------------------------------------------------------


def build(inbox, count: int, uids=None, senders=None, early=(), words=(), flags=None) -> None:
    """``count`` messages of INBOX, none \\Recent: message n from ``senders[n]`` (Bob if not
    named), dated ``EARLIER`` if in ``early`` (``LATER`` if not), with the word мать in its
    text if in ``words``, flags ``flags[n]``, UID ``uids[n]`` (the next one if not named)."""
    uids, senders, flags = uids or {}, senders or {}, flags or {}
    for n in range(1, count + 1):
        if n in uids:
            next_uid(inbox, uids[n])
        text = ("мать" if n in words else "other") + "\r\n"
        body = message(f"m{n}", text).replace(b"Bob", senders.get(n, b"Bob"))
        inbox.append(body, flags.get(n, ()), EARLIER if n in early else LATER)
    inbox.mark_seen_by_client([info.uid for info in inbox.messages()])


SAVE_SMITH = b'SEARCH RETURN (SAVE) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"'
FETCH_HEADERS = b"A283 FETCH $ (UID INTERNALDATE FLAGS RFC822.HEADER)"


@pytest.mark.parametrize("pipelined", [False, True], ids=["example-1", "example-2-pipelined"])
def test_rfc5182_examples_1_and_2_fetch_of_the_saved_result(server, imap, pipelined):
    """RFC 5182 2.2 examples 1 and 2: SEARCH RETURN (SAVE) answers no SEARCH line; FETCH $
    fetches the messages found (2, 84, 882: UIDs 14, 100, 1115), alone or pipelined.  The RFC
    shows each FETCH line's start only (``* 2 FETCH (UID 14 ...``), so that is what is
    compared; the headers are literals, whose lines are not responses."""
    flagged = {n: {"\\Flagged"} for n in (2, 84, 882)}
    build(server.store.folder(ALICE), 882, uids={2: 14, 84: 100, 882: 1115}, flags=flagged)
    imap.run(b"s SELECT INBOX")
    if pipelined:
        answer = imap.send(b"A282 " + SAVE_SMITH, FETCH_HEADERS)
        assert normalise(answer.split(b"\r\n", 1)[0]) == lines(b"A282 OK SEARCH completed")
    else:
        assert imap.run(b"A282 " + SAVE_SMITH) == lines(b"A282 OK SEARCH completed, result saved")
        answer = imap.send(FETCH_HEADERS)
    fetches = [line for line in answer.split(b"\r\n") if line.startswith(b"* ")]
    assert [line.split(b" INTERNALDATE ")[0] for line in fetches] == [
        b"* 2 FETCH (UID 14",
        b"* 84 FETCH (UID 100",
        b"* 882 FETCH (UID 1115",
    ]
    assert normalise(answer)[-1] == lines(b"A283 OK completed")[0]


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
    """RFC 5182 2.2 example 4: ``(OR $ 1,3000:3021) TEXT`` with an 8-octet UTF-8 literal
    (synchronising, as the example has it) on 3021 messages.  The word is in 5, 882, 1102,
    3003, 3005 and 3006; 5 and 3003 to 3006 are from Smith, so $ has 882 and 1102 but not 5,
    and 3003, 3005 and 3006 are found through 3000:3021."""
    smith = {n: b"Smith" for n in (5, 3003, 3004, 3005, 3006)}
    build(server.store.folder(ALICE), 3021, senders=smith, words={5, 882, 1102, 3003, 3005, 3006})
    imap.run(b"s SELECT INBOX")
    assert imap.run(b'P282 SEARCH RETURN (SAVE) SINCE 1-Feb-1994 NOT FROM "Smith"') == lines(
        b"P282 OK SEARCH completed"
    )
    continuation = imap.run(b"P283 SEARCH CHARSET UTF-8 (OR $ 1,3000:3021) TEXT {8}", until=b"+")
    assert continuation == lines(b"+ Ready")
    assert imap.run("мать".encode(), until=b"P283 ") == lines(
        b"* SEARCH 882 1102 3003 3005 3006", b"P283 OK completed"
    )


def test_rfc5182_example_5_a_failed_search(server, imap):
    """RFC 5182 2.2 example 5: B283 (no SAVE) is answered NO, KOI8-R not being supported.  The
    example's comment says $ is then empty, but its own section 2.1 says a SEARCH "with no
    SAVE result option that caused the server to return NO tagged response" MUST NOT change
    the search result variable, so mailgw keeps B282's result: B284 fetches it.  Its
    BADCHARSET lists the charsets it has in parentheses, as RFC 3501's grammar has it (the
    example's ``[BADCHARSET UTF-8]`` has none)."""
    build(server.store.folder(ALICE), 3)
    imap.run(b"s SELECT INBOX")
    assert imap.run(b'B282 SEARCH RETURN (SAVE) SINCE 1-Feb-1994 NOT FROM "Smith"') == lines(
        b"B282 OK SEARCH completed"
    )
    command = b"B283 SEARCH CHARSET KOI8-R (OR $ 1,3000:3021) TEXT {4}"
    assert imap.run(command, until=b"+") == lines(b"+ Ready")
    assert imap.run("мать".encode("koi8-r"), until=b"B283 ") == lines(
        b"B283 NO [BADCHARSET (US-ASCII UTF-8)] KOI8-R is not supported"
    )
    assert imap.run(b"B284 FETCH $ (UID)") == lines(
        b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 3)", b"B284 OK completed"
    )
    assert imap.run(b'B285 SEARCH RETURN (SAVE) CHARSET KOI8-R TEXT "x"')[0].startswith(b"B285 NO")
    assert imap.run(b"B286 FETCH $ (UID)") == lines(b"B286 OK completed")


#: Messages from Eric in RFC 5182 example 8's answer (ALL 3:15,27,29:103).
ERIC = {*range(3, 16), 27, *range(29, 104)}
JUNK = (1, 3, 27)


def test_rfc5182_examples_6_to_9_pipelined(server, imap):
    """RFC 5182 2.2 examples 6 to 9 on 103 messages: those from Eric (3:15,27,29:103) are
    dated after 28-Oct-2006, the others before; 1, 3 and 27 are $Junk.  6: COPY of an empty $
    is OK, nothing copied.  7: COPY and STORE of $ pipelined after the SEARCH (mailgw's COPY
    OK carries COPYUID, as it announces UIDPLUS).  8: two SEARCHes pipelined; mailgw answers
    them in the order sent (the RFC lets a server answer the second first).  9: the second
    SAVE replaces the first (H284 is not in the RFC: it shows what $ holds)."""
    inbox = server.store.folder(ALICE)
    senders = {n: b"Eric" for n in ERIC}
    early = set(range(1, 104)) - ERIC
    build(inbox, 103, senders=senders, early=early, flags={n: {"$Junk"} for n in JUNK})
    server.store.create_folder(ALICE, "Other Messages")
    imap.run(b"s SELECT INBOX")
    validity = b"%d" % server.store.folder(ALICE, "Junk").uid_validity
    assert imap.run(
        b'E282 SEARCH RETURN (SAVE) SINCE 28-Oct-2006 NOT FROM "Eric"',
        b'E283 COPY $ "Other Messages"',
    ) == lines(b"E282 OK SEARCH completed", b"E283 OK COPY completed, nothing copied")
    assert server.store.folder(ALICE, "Other Messages").messages() == ()
    assert imap.run(
        b"F282 SEARCH RETURN (SAVE) KEYWORD $Junk",
        b'F283 COPY $ "Junk"',
        b"F284 STORE $ +FLAGS.Silent (\\Deleted)",
    ) == lines(
        b"F282 OK SEARCH completed",
        b"F283 OK [COPYUID " + validity + b" 1,3,27 1:3] COPY completed",
        b"F284 OK STORE completed",
    )
    deleted = [info.uid for info in inbox.messages() if "\\Deleted" in info.flags]
    assert deleted == list(JUNK)
    assert imap.run(
        b"G282 SEARCH RETURN (SAVE) KEYWORD $Junk",
        b'G283 SEARCH RETURN (ALL) SINCE 28-Oct-2006 FROM "Eric"',
    ) == lines(
        b"G282 OK SEARCH completed",
        b'* ESEARCH (TAG "G283") ALL 3:15,27,29:103',
        b"G283 OK SEARCH completed",
    )
    assert imap.run(
        b"H282 SEARCH RETURN (SAVE) KEYWORD $Junk",
        b'H283 SEARCH RETURN (SAVE) SINCE 28-Oct-2006 FROM "Eric"',
        b"H284 FETCH $ (UID)",
    ) == lines(
        b"H282 OK SEARCH completed",
        b"H283 OK SEARCH completed",
        *(b"* %d FETCH (UID %d)" % (n, n) for n in sorted(ERIC)),
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
    """RFC 5182 2.2 example 10 (the rules of 2.4) on 22 messages, 2, 10 to 15 and 21 found (1
    and 3 to 9 are from Smith, 16 to 20 and 22 too old): with MIN and/or MAX alone SAVE keeps
    only those, with ALL or COUNT all that was found; without SAVE, $ is left as it was (here
    1: ``z`` is not in the RFC, nor is the FETCH $ that shows what $ holds).  The RFC's first
    answer says TAG "C283" for C282, a slip: mailgw answers with the command's own tag."""
    smith = {n: b"Smith" for n in (1, *range(3, 10))}
    build(server.store.folder(ALICE), 22, senders=smith, early={*range(16, 21), 22})
    imap.run(b"s SELECT INBOX")
    imap.run(b"z SEARCH RETURN (SAVE) 1")
    command = tag + b" SEARCH RETURN (" + returns + b') SINCE 12-Feb-2006 NOT FROM "Smith"'
    assert imap.run(command) == lines(
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
