"""RFC 9051 (IMAP4rev2) examples of sections 6 and 8 that differ from RFC 3501's, replayed over
a real socket after ``ENABLE IMAP4rev2`` (``imap_replay`` says what is normalised): ENABLE,
SELECT and EXAMINE with their LIST line and [CLOSED], APPEND with APPENDUID, SEARCH answered
with ESEARCH (and the saved result), STORE (its FETCH answers have no UID), MOVE, UID EXPUNGE,
IDLE.  LIST's are in
``test_imap_rfc9051_list``, the server responses of section 7 in ``test_imap_rfc9051_responses``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from imap_replay import (
    ALICE,
    Example,
    Lines,
    check,
    fill,
    letter,
    message,
    normalised,
    selected,
    store_all,
)

#: The ``port`` and ``connect`` fixtures.
pytest_plugins = ("imap_replay_fixtures",)


def caps_after_login(server, client) -> dict:
    """The capability list as the RFC's example server spells it -> mailgw's."""
    caps = client.send(b"c CAPABILITY")[0].decode()[len("* CAPABILITY ") :]
    return {"IMAP4rev2 ID LITERAL+ X-GOOD-IDEA": caps}


def inbox_of(count: int, name: str = "INBOX", uidnext="4392", validity="3857529045") -> Callable:
    """A setup: ``count`` messages in ``name`` (created unless INBOX)."""

    def setup(server, client) -> dict:
        if name != "INBOX":
            client.ok(b"c CREATE " + name.encode())
        folder = server.store.folder(ALICE, name)
        fill(folder, count)
        return {
            validity: str(folder.uid_validity),
            f"[UIDNEXT {uidnext}]": f"[UIDNEXT {folder.uid_next}]",
            "[HIGHESTMODSEQ]": f"[HIGHESTMODSEQ {folder.highest_modseq}]",
        }

    return setup


def select_closed(server, client) -> dict:
    """6.3.2's second example: INBOX of 172 messages, Drafts of 5."""
    inbox, drafts = server.store.folder(ALICE), server.store.folder(ALICE, "Drafts")
    fill(inbox, 172)
    fill(drafts, 5)
    return {
        "3857529045": str(inbox.uid_validity),
        "9877410381": str(drafts.uid_validity),
        "[UIDNEXT 4392]": f"[UIDNEXT {inbox.uid_next}]",
        "[UIDNEXT 102]": f"[UIDNEXT {drafts.uid_next}]",
        "[HIGHESTMODSEQ]": f"[HIGHESTMODSEQ {inbox.highest_modseq}]",
        "[HIGHESTMODSEQ D]": f"[HIGHESTMODSEQ {drafts.highest_modseq}]",
    }


@selected
def search_box(server, client) -> dict:
    """The mailbox of 6.4.4's examples: 43 messages; 2, 10 and 11 \\Flagged (and 5, from
    Smith); 1 to 3 \\Seen; 20 to 34 \\Deleted; 43 says "отпуск"."""
    letters = []
    for n in range(1, 44):
        flags = {"\\Flagged"} if n in (2, 5, 10, 11) else set()
        flags |= {"\\Seen"} if n <= 3 else set()
        flags |= {"\\Deleted"} if 20 <= n <= 34 else set()
        sender = "John Smith <smith@elsewhere.test>" if n == 5 else "Bob <bob@elsewhere.test>"
        letters.append((letter(n, sender, "отпуск" if n == 43 else "Hello."), flags))
    uids = store_all(server.store.folder(ALICE), letters)
    return {"UID MIN 7 MAX 3800": f"UID MIN {uids[0]} MAX {uids[-1]}"}


@selected
def saved_smaller(server, client) -> dict:
    """Six messages: 1 from Smith, 3 and 4 of more than 4096 octets."""
    letters = []
    for n in range(1, 7):
        sender = "John Smith <smith@elsewhere.test>" if n == 1 else "Bob <bob@elsewhere.test>"
        letters.append((letter(n, sender, "x" * 5000 if n in (3, 4) else "small"), set()))
    uids = store_all(server.store.folder(ALICE), letters)
    return {"17,900,901": f"{uids[1]},{uids[4]}:{uids[5]}"}


@selected
def saved_or(server, client) -> dict:
    """3021 messages; 882, 1102, 3003, 3005 and 3006 say "мать", and so do 500 and 3010, from
    Smith (outside ``$``), of which only 3010 is in 3000:3021."""
    letters = []
    for n in range(1, 3022):
        smith = n in (500, 3003, 3005, 3010)
        sender = "John Smith <smith@elsewhere.test>" if smith else "Bob <bob@elsewhere.test>"
        says = n in (500, 882, 1102, 3003, 3005, 3006)
        letters.append((letter(n, sender, "мать" if says else "Hello."), set()))
    store_all(server.store.folder(ALICE), letters)
    return {}


@selected
def store_box(server, client) -> dict:
    """6.4.6's mailbox: message 2 \\Seen, 4 \\Flagged and \\Seen.  The FETCH answers of STORE
    are no unsolicited ones, so IMAP4rev2 adds no UID to them (7.5.2)."""
    flags = {2: {"\\Seen"}, 4: {"\\Flagged", "\\Seen"}}
    fill(server.store.folder(ALICE), 5, lambda n: flags.get(n, set()))
    return {}


@selected
def move_box(server, client) -> dict:
    """89 messages with UIDs 1 to 20 expunged, so UID 42 is message 22; a folder foo."""
    inbox = server.store.folder(ALICE)
    fill(inbox, 89)
    inbox.expunge(list(range(1, 21)))
    client.ok(b"c CREATE foo")
    foo = server.store.folder(ALICE, "foo")
    return {"432432": str(foo.uid_validity), "1202:1229": f"{foo.uid_next}:{foo.uid_next + 27}"}


@selected
def uid_expunge_box(server, client) -> dict:
    """Five messages, 1 and 3 to 5 \\Deleted."""
    uids = fill(server.store.folder(ALICE), 5, lambda n: {"\\Deleted"} if n != 2 else set())
    return {"3000:3002": f"{uids[2]}:{uids[4]}"}


def saved_messages(server, client) -> dict:
    """A folder saved-messages; the APPENDUID its next message gets."""
    client.ok(b"c CREATE saved-messages")
    saved = server.store.folder(ALICE, "saved-messages")
    return {"[APPENDUID]": f"[APPENDUID {saved.uid_validity} {saved.uid_next}]"}


def append_copy(server, client) -> dict:
    """6.3.12's second example: saved-messages, meeting and funny; INBOX selected with four
    messages whose UIDs skip after the second (UIDs 3 to 6 expunged)."""
    for name in ("saved-messages", "meeting", "funny"):
        client.ok(b"c CREATE " + name.encode())
    inbox = server.store.folder(ALICE)
    fill(inbox, 8)
    inbox.expunge([3, 4, 5, 6])
    client.ok(b"s SELECT INBOX")
    saved, meeting, funny = (
        server.store.folder(ALICE, n) for n in ("saved-messages", "meeting", "funny")
    )
    return {
        "38505 3955": f"{saved.uid_validity} {saved.uid_next}",
        "38505 304,319:320 3956:3958": f"{meeting.uid_validity} 2,7:8 1:3",
        "305:310": "3:6",
        "3857529045": str(funny.uid_validity),
        "[HIGHESTMODSEQ]": f"[HIGHESTMODSEQ {funny.highest_modseq + 1}]",  # after A006's copy
        "[COPYUID funny]": f"[COPYUID {funny.uid_validity} 2 1]",
    }


#: Why mailgw's EXPUNGE responses come in another order than the RFC's.
_DOWNWARDS = (
    "mailgw tells expunged messages from the highest number down, so each number stays that of "
    "the same message until its EXPUNGE (7.5.1 shows both orders: 3 3 5 8 or 9 8 7 6 5)"
)
# The 432432 and 1202:1229 of the MOVE example are mailgw's choices, as in ``move_box``.


#: The permanent flags of the RFC's server -> mailgw's (every system flag and keywords).
_PERMANENT = {
    "(\\Deleted \\Seen \\*)": "(\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)",
    "(\\Deleted \\Seen \\Answered \\Flagged \\Draft \\*)": (
        "(\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)"
    ),
}


EXAMPLES = {
    "6.3.1-enable-capability-unchanged": Example(
        """
        C: t1 CAPABILITY
        S: * CAPABILITY IMAP4rev2 ID LITERAL+ X-GOOD-IDEA
        S: t1 OK foo
        C: t2 ENABLE CONDSTORE X-GOOD-IDEA
        S: * ENABLED X-GOOD-IDEA
        S: t2 OK foo
        C: t3 CAPABILITY
        S: * CAPABILITY IMAP4rev2 ID LITERAL+ X-GOOD-IDEA
        S: t3 OK foo again
        """,
        caps_after_login,
        differs={"* ENABLED X-GOOD-IDEA": "* ENABLED CONDSTORE"},
        reason="the RFC's server knows the fictitious X-GOOD-IDEA and not CONDSTORE; mailgw "
        "the other way round, so it enables CONDSTORE and ignores X-GOOD-IDEA",
    ),
    "6.3.1-enable-condstore": Example(
        """
        C: a1 ENABLE CONDSTORE
        S: * ENABLED CONDSTORE
        S: a1 OK Conditional Store enabled
        """
    ),
    "8-enable-imap4rev2": Example(
        """
        C: babc ENABLE IMAP4rev2
        S: * ENABLED IMAP4rev2
        S: babc OK Some capabilities enabled
        C: babd ENABLE IMAP4rev2
        S: * ENABLED
        S: babd OK
        """,
        rev2=False,
    ),
    "6.3.2-select": Example(
        """
        C: A142 SELECT INBOX
        S: * 172 EXISTS
        S: * OK [UIDVALIDITY 3857529045] UIDs valid
        S: * OK [UIDNEXT 4392] Predicted next UID
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited
        S: * LIST () "/" INBOX
        S: A142 OK [READ-WRITE] SELECT completed
        """,
        inbox_of(172),
        choices={**_PERMANENT, '"/" INBOX': '"." "INBOX"'},
        differs={'* LIST () "." "INBOX"': '* LIST () "." "INBOX"\n* OK [HIGHESTMODSEQ]'},
        reason="mailgw announces CONDSTORE, so SELECT also gives HIGHESTMODSEQ (RFC 7162 3.1.2.1)",
        unordered=True,
    ),
    "6.3.2-select-closed": Example(
        """
        C: A142 SELECT INBOX
        S: * 172 EXISTS
        S: * OK [UIDVALIDITY 3857529045] UIDs valid
        S: * OK [UIDNEXT 4392] Predicted next UID
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited
        S: A142 OK [READ-WRITE] SELECT completed
        C: A143 SELECT Drafts
        S: * OK [CLOSED] Previous mailbox is now closed
        S: * 5 EXISTS
        S: * OK [UIDVALIDITY 9877410381] UIDs valid
        S: * OK [UIDNEXT 102] Predicted next UID
        S: * LIST () "/" Drafts
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS (\\Deleted \\Seen \\Answered
            \\Flagged \\Draft \\*)] System flags and keywords allowed
        S: A143 OK [READ-WRITE] SELECT completed
        """,
        select_closed,
        choices={**_PERMANENT, '* LIST () "/" Drafts': '* LIST (\\Drafts) "." "Drafts"'},
        differs={
            "* 172 EXISTS": '* 172 EXISTS\n* LIST () "." "INBOX"\n* OK [HIGHESTMODSEQ]',
            "* 5 EXISTS": "* 5 EXISTS\n* OK [HIGHESTMODSEQ D]",
        },
        reason="the RFC leaves A142's LIST response out of this example (6.3.2 requires it, as "
        "the example before shows); mailgw gives HIGHESTMODSEQ (it announces CONDSTORE)",
        unordered=True,
    ),
    "6.3.3-examine": Example(
        """
        C: A932 EXAMINE blurdybloop
        S: * 17 EXISTS
        S: * OK [UIDVALIDITY 3857529045] UIDs valid
        S: * OK [UIDNEXT 4392] Predicted next UID
        S: * LIST () "/" blurdybloop
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS ()] No permanent flags permitted
        S: A932 OK [READ-ONLY] EXAMINE completed
        """,
        inbox_of(17, "blurdybloop"),
        choices={'"/" blurdybloop': '"." "blurdybloop"'},
        differs={"* 17 EXISTS": "* 17 EXISTS\n* OK [HIGHESTMODSEQ]"},
        reason="mailgw gives HIGHESTMODSEQ (it announces CONDSTORE)",
        unordered=True,
    ),
    "6.4.4-search-min-count": Example(
        """
        C: A282 SEARCH RETURN (MIN COUNT) FLAGGED
            SINCE 1-Feb-1994 NOT FROM "Smith"
        S: * ESEARCH (TAG "A282") MIN 2 COUNT 3
        S: A282 OK SEARCH completed
        """,
        search_box,
    ),
    "6.4.4-search-return-empty-list": Example(
        """
        C: A283 SEARCH RETURN () FLAGGED
            SINCE 1-Feb-1994 NOT FROM "Smith"
        S: * ESEARCH (TAG "A283") ALL 2,10:11
        S: A283 OK SEARCH completed
        """,
        search_box,
    ),
    "6.4.4-search-plain-and-literal": Example(
        """
        C: A284 SEARCH TEXT "string not in mailbox"
        S: * ESEARCH (TAG "A284")
        S: A284 OK SEARCH completed
        C: A285 SEARCH CHARSET UTF-8 TEXT {12}
        S: + Ready for literal text
        C: отпуск
        S: * ESEARCH (TAG "A285") ALL 43
        S: A285 OK SEARCH completed
        """,
        search_box,
    ),
    "6.4.4-search-first-unseen": Example(
        """
        C: A284 SEARCH RETURN (MIN) UNSEEN
        S: * ESEARCH (TAG "A284") MIN 4
        S: A284 OK SEARCH completed
        """,
        search_box,
    ),
    "6.4.4-uid-search-min-max": Example(
        """
        C: A285 UID SEARCH RETURN (MIN MAX) 1:5000
        S: * ESEARCH (TAG "A285") UID MIN 7 MAX 3800
        S: A285 OK SEARCH completed
        """,
        search_box,
    ),
    "6.4.4-search-count-deleted": Example(
        """
        C: A286 SEARCH RETURN (COUNT) DELETED
        S: * ESEARCH (TAG "A286") COUNT 15
        S: A286 OK SEARCH completed
        """,
        search_box,
    ),
    "6.4.4.4-example-3-saved-result-in-uid-search": Example(
        """
        C: A300 SEARCH RETURN (SAVE) SINCE 1-Jan-2004
            NOT FROM "Smith"
        S: A300 OK SEARCH completed
        C: A301 UID SEARCH UID $ SMALLER 4096
        S: * ESEARCH (TAG "A301") UID ALL 17,900,901
        S: A301 OK completed
        C: A302 UID SEARCH $ SMALLER 4096
        S: * ESEARCH (TAG "A302") UID ALL 17,900,901
        S: A302 OK completed
        """,
        saved_smaller,
    ),
    "6.4.4.4-example-4-saved-result-or": Example(
        """
        C: P282 SEARCH RETURN (SAVE) SINCE 1-Feb-1994
            NOT FROM "Smith"
        S: P282 OK SEARCH completed
        C: P283 SEARCH CHARSET UTF-8 (OR $ 1,3000:3021) TEXT {8+}
        C: мать
        S: * ESEARCH (TAG "P283") ALL 882,1102,3003,3005:3006
        S: P283 OK completed
        """,
        saved_or,
    ),
    "6.3.12-append-literal": Example(
        """
        C: A003 APPEND saved-messages (\\Seen) {326}
        S: + Ready for literal data
        C: Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)
        C: From: Fred Foobar <foobar@Blurdybloop.example>
        C: Subject: afternoon meeting
        C: To: mooch@owatagu.siam.edu.example
        C: Message-Id: <B27397-0100000@Blurdybloop.example>
        C: MIME-Version: 1.0
        C: Content-Type: TEXT/PLAIN; CHARSET=US-ASCII
        C:
        C: Hello Joe, do you think we can meet at 3:30 tomorrow?
        C:
        S: A003 OK APPEND completed
        """,
        saved_messages,
        differs={"A003 OK APPEND completed": "A003 OK [APPENDUID]"},
        reason="mailgw announces UIDPLUS, so APPEND answers APPENDUID (7.1)",
    ),
    "6.3.12-appenduid-copyuid": Example(
        """
        C: A003 APPEND saved-messages (\\Seen) {297+}
        C: Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)
        C: From: Fred Foobar <foobar@example.com>
        C: Subject: afternoon meeting
        C: To: mooch@example.com
        C: Message-Id: <B27397-0100000@example.com>
        C: MIME-Version: 1.0
        C: Content-Type: TEXT/PLAIN; CHARSET=US-ASCII
        C:
        C: Hello Joe, do you think we can meet at 3:30 tomorrow?
        C:
        S: A003 OK [APPENDUID 38505 3955] APPEND completed
        C: A004 COPY 2:4 meeting
        S: A004 OK [COPYUID 38505 304,319:320 3956:3958] Done
        C: A005 UID COPY 305:310 meeting
        S: A005 OK No matching messages, so nothing copied
        C: A006 COPY 2 funny
        S: A006 OK Done
        C: A007 SELECT funny
        S: * 1 EXISTS
        S: * OK [UIDVALIDITY 3857529045] Validity session-only
        S: * OK [UIDNEXT 2] Predicted next UID
        S: * NO [UIDNOTSTICKY] Non-persistent UIDs
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS (\\Deleted \\Seen)] Limited
        S: * LIST () "." funny
        S: A007 OK [READ-WRITE] SELECT completed
        """,
        append_copy,
        choices={
            "(\\Deleted \\Seen)]": "(\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]",
            '"." funny': '"." "funny"',
        },
        differs={
            "A006 OK Done": "A006 OK [COPYUID funny]",
            "* NO [UIDNOTSTICKY] Non-persistent UIDs": "* OK [CLOSED]\n* OK [HIGHESTMODSEQ]",
        },
        reason="the RFC's funny is a mailbox of non-persistent UIDs (UIDNOTSTICKY, hence no "
        "COPYUID); mailgw's UIDs always persist.  A007 replaces the selected INBOX, so mailgw "
        "says [CLOSED] first (6.3.2), and HIGHESTMODSEQ (it announces CONDSTORE)",
        unordered=True,
    ),
    "6.4.6-store-answers-without-uid": Example(
        """
        C: A003 STORE 2:4 +FLAGS (\\Deleted)
        S: * 2 FETCH (FLAGS (\\Deleted \\Seen))
        S: * 3 FETCH (FLAGS (\\Deleted))
        S: * 4 FETCH (FLAGS (\\Deleted \\Flagged \\Seen))
        S: A003 OK STORE completed
        """,
        store_box,
    ),
    "6.4.8-uid-move": Example(
        """
        C: a UID MOVE 42:69 foo
        S: * OK [COPYUID 432432 42:69 1202:1229]
        """
        + "S: * 22 EXPUNGE\n" * 28
        + """
        S: a OK Done
        """,
        move_box,
        differs={
            "* OK [COPYUID 432432 42:69 1202:1229]": "* OK [COPYUID 432432 42:69 1202:1229]\n"
            + "\n".join(f"* {n} EXPUNGE" for n in range(49, 21, -1)),
            "* 22 EXPUNGE": "",
        },
        reason=_DOWNWARDS,
    ),
    "6.4.9-uid-expunge": Example(
        """
        C: A003 UID EXPUNGE 3000:3002
        S: * 3 EXPUNGE
        S: * 3 EXPUNGE
        S: * 3 EXPUNGE
        S: A003 OK UID EXPUNGE completed
        """,
        uid_expunge_box,
        differs={
            "* 3 EXPUNGE": "",
            "A003 OK UID EXPUNGE completed": "* 5 EXPUNGE\n* 4 EXPUNGE\n* 3 EXPUNGE\nA003 OK",
        },
        reason=_DOWNWARDS,
    ),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_rfc9051_example(connect, server, name):
    """The example replayed after ENABLE IMAP4rev2 (``imap_replay``: what is normalised)."""
    check(connect, server, EXAMPLES[name])


def test_rfc9051_example_6_3_13_idle(connect, server):
    """6.3.13's IDLE example: new mail and another client's expunges told while idling, none
    during FETCH.  The other client expunges by MOVE (so no flag change is told first) and
    delivers by APPEND.  mailgw answers IDLE's continuation first and then what is pending
    (the RFC shows A004's EXPUNGE and EXISTS before "+ idling"; RFC 2177 allows either)."""
    inbox = server.store.folder(ALICE)
    fill(inbox, 3)
    client, other = connect(), connect(rev2=False)
    other.ok(b"o SELECT INBOX")
    lines = Lines(client.sock)
    client.sock.sendall(b"A001 SELECT INBOX\r\n")
    answer = [lines.next() for _ in range(7)]
    rfc = [  # the RFC's, with mailgw's choices of flags, UIDVALIDITY and UIDNEXT put in
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]",
        b"* 3 EXISTS",
        b"* OK [UIDVALIDITY %d]" % inbox.uid_validity,
        b"* OK [UIDNEXT 4]",
        b'* LIST () "." "INBOX"',
        b"* OK [HIGHESTMODSEQ %d]" % inbox.highest_modseq,  # mailgw announces CONDSTORE
    ]
    assert sorted(map(normalised, answer)) == sorted(rfc)
    assert lines.take(1) == [b"A001 OK [READ-WRITE]"]
    client.sock.sendall(b"A002 IDLE\r\n")
    assert lines.take(1) == [b"+"]
    other.ok(b"o APPEND INBOX {%d+}\r\n" % len(message("new")) + message("new"))
    assert lines.take(1) == [b"* 4 EXISTS"]
    client.sock.sendall(b"DONE\r\n")
    assert lines.take(1) == [b"A002 OK"]
    other.ok(b"o MOVE 2 Trash")
    client.sock.sendall(b"A003 FETCH 4 ALL\r\n")
    fetched = lines.next()
    assert fetched.startswith(b"* 4 FETCH (FLAGS () INTERNALDATE "), fetched  # no \\Recent
    assert lines.take(1) == [b"A003 OK"]
    client.sock.sendall(b"A004 IDLE\r\n")
    assert lines.take(3) == [b"+", b"* 2 EXPUNGE", b"* 3 EXISTS"]
    other.ok(b"o MOVE 3 Trash")
    assert lines.take(2) == [b"* 3 EXPUNGE", b"* 2 EXISTS"]
    other.ok(b"o APPEND INBOX {%d+}\r\n" % len(message("newer")) + message("newer"))
    assert lines.take(1) == [b"* 3 EXISTS"]
    client.sock.sendall(b"DONE\r\n")
    assert lines.take(1) == [b"A004 OK"]
    client.sock.sendall(b"A005 FETCH 3 ALL\r\n")
    assert lines.next().startswith(b"* 3 FETCH (FLAGS () INTERNALDATE ")
    assert lines.take(1) == [b"A005 OK"]
