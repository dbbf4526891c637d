"""mailgw.imap.wire.parser: the RFCs' example commands into typed commands, malformed ones into
ParseError with the right tag and a readable reason, and nothing else for any input."""

from __future__ import annotations

import ast
import random
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.imap.wire import commands as c
from mailgw.imap.wire.parser import ParseError, parse_command

ALL = c.SequenceSet(((1, None),))
FLAGS = c.FetchAttribute("FLAGS")
UID = c.FetchAttribute("UID")


def seq(*ranges) -> c.SequenceSet:
    return c.SequenceSet(tuple(r if isinstance(r, tuple) else (r, r) for r in ranges))


def att(name, part=(), text=None, fields=(), peek=False, partial=None, section=True):
    sect = c.Section(part, text, fields) if section else None
    return c.FetchAttribute(name, section=sect, peek=peek, partial=partial)


def parse(line: bytes) -> c.Command:
    return parse_command(line + b"\r\n")


# -- RFC 3501 section 6 and the sample session of section 8 ----------------------------------

RFC3501 = [
    (b"abcd CAPABILITY", c.Capability(b"abcd")),
    (b"a002 NOOP", c.Noop(b"a002")),
    (b"A023 LOGOUT", c.Logout(b"A023")),
    (b"a001 STARTTLS", c.StartTLS(b"a001")),
    (b"A001 AUTHENTICATE GSSAPI", c.Authenticate(b"A001", mechanism="GSSAPI")),
    (b"a001 LOGIN SMITH SESAME", c.Login(b"a001", user=b"SMITH", password=b"SESAME")),
    (b"A142 SELECT INBOX", c.Select(b"A142", mailbox="INBOX")),
    (b"A932 EXAMINE blurdybloop", c.Select(b"A932", mailbox="blurdybloop", readonly=True)),
    (b"A003 CREATE owatagusiam/", c.Create(b"A003", mailbox="owatagusiam/")),
    (b"A683 DELETE blurdybloop", c.Delete(b"A683", mailbox="blurdybloop")),
    (b"A683 RENAME blurdybloop sarasota", c.Rename(b"A683", old="blurdybloop", new="sarasota")),
    (b"A002 SUBSCRIBE #news.comp.mail.mime", c.Subscribe(b"A002", "#news.comp.mail.mime")),
    (b"A002 UNSUBSCRIBE #news.comp.mail.mime", c.Unsubscribe(b"A002", "#news.comp.mail.mime")),
    (b'A101 LIST "" ""', c.List(b"A101", reference="", patterns=("",))),
    (b'A102 LIST #news.comp.mail.misc ""', c.List(b"A102", "#news.comp.mail.misc", ("",))),
    (b"A202 LIST ~/Mail/ %", c.List(b"A202", reference="~/Mail/", patterns=("%",))),
    (b'A682 LIST "" *', c.List(b"A682", reference="", patterns=("*",))),
    (b'A002 LSUB "#news." "comp.mail.*"', c.Lsub(b"A002", "#news.", "comp.mail.*")),
    (
        b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)",
        c.Status(b"A042", mailbox="blurdybloop", items=("UIDNEXT", "MESSAGES")),
    ),
    (b"FXXZ CHECK", c.Check(b"FXXZ")),
    (b"A341 CLOSE", c.Close(b"A341")),
    (b"A202 EXPUNGE", c.Expunge(b"A202")),
    (
        b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"',
        c.Search(
            b"A282",
            criteria=(
                "AND",
                [
                    ("FLAG", "\\Flagged", True),
                    ("DATE", "SINCE", (1994, 2, 1)),
                    ("NOT", ("HEADER", "from", "smith")),
                ],
            ),
        ),
    ),
    (
        b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])",
        c.Fetch(
            b"A654",
            messages=seq((2, 4)),
            attributes=(FLAGS, att("BODY", text="HEADER.FIELDS", fields=("DATE", "FROM"))),
        ),
    ),
    (
        b"A003 STORE 2:4 +FLAGS (\\Deleted)",
        c.Store(b"A003", messages=seq((2, 4)), mode="add", flags=("\\Deleted",)),
    ),
    (b"A003 COPY 2:4 MEETING", c.Copy(b"A003", messages=seq((2, 4)), mailbox="MEETING")),
    (
        b"A999 UID FETCH 4827313:4828442 FLAGS",
        c.Fetch(b"A999", messages=seq((4827313, 4828442)), attributes=(UID, FLAGS), uid=True),
    ),
    # section 8, lower-cased as the sample session writes it
    (b"a001 login mrc secret", c.Login(b"a001", user=b"mrc", password=b"secret")),
    (b"a002 select inbox", c.Select(b"a002", mailbox="INBOX")),
    (
        b"a003 fetch 12 full",
        c.Fetch(
            b"a003",
            messages=seq(12),
            attributes=tuple(
                c.FetchAttribute(n)
                for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")
            ),
        ),
    ),
    (
        b"a004 fetch 12 body[header]",
        c.Fetch(b"a004", messages=seq(12), attributes=(att("BODY", text="HEADER"),)),
    ),
    (
        b"a005 store 12 +flags \\deleted",
        c.Store(b"a005", messages=seq(12), mode="add", flags=("\\deleted",)),
    ),
    (b"a006 logout", c.Logout(b"a006")),
]


@pytest.mark.parametrize("line, expected", RFC3501)
def test_rfc3501_examples(line, expected):
    assert parse(line) == expected


def test_rfc3501_append_and_search_with_literals():
    message = b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nSubject: x\r\n\r\nHello Joe\r\n"
    data = b"A003 APPEND saved-messages (\\Seen) {%d}\r\n%s\r\n" % (len(message), message)
    assert parse_command(data) == c.Append(
        b"A003", "saved-messages", (c.AppendMessage(("\\Seen",), None, message),)
    )
    command = parse_command(b"A284 SEARCH CHARSET UTF-8 TEXT {6}\r\nXXXXXX\r\n")
    assert command == c.Search(b"A284", criteria=("AND", [("TEXT", "xxxxxx")]), charset="UTF-8")


# -- extensions ----------------------------------------------------------------------------

EXTENSIONS = [
    # RFC 7162 CONDSTORE / QRESYNC
    (b"a ENABLE CONDSTORE qresync", c.Enable(b"a", capabilities=("CONDSTORE", "QRESYNC"))),
    (b"a SELECT INBOX (CONDSTORE)", c.Select(b"a", mailbox="INBOX", condstore=True)),
    (
        b"a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\\Deleted)",
        c.Store(
            b"a103",
            seq(6, 4, 8),
            "add",
            True,
            ("\\Deleted",),
            uid=True,
            unchanged_since=12121230045,
        ),
    ),
    (
        b"s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)",
        c.Fetch(b"s100", ALL, (UID, FLAGS), uid=True, changed_since=12345),
    ),
    (
        b"s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)",
        c.Fetch(b"s100", seq((300, 500)), (UID, FLAGS), True, 12345, vanished=True),
    ),
    (
        b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
        c.Select(
            b"A02",
            "INBOX",
            qresync=c.QResync(67890007, 20050715194045000, seq(41, (43, 211), (214, 541))),
        ),
    ),
    (
        b"B01 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 "
        b"(5000,7500,9000,9990:9999 15000,22500,27000,29970,29973)))",
        c.Select(
            b"B01",
            "INBOX",
            qresync=c.QResync(
                67890007,
                90060115194045000,
                seq((1, 29997)),
                (seq(5000, 7500, 9000, (9990, 9999)), seq(15000, 22500, 27000, 29970, 29973)),
            ),
        ),
    ),
    (
        b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338',
        c.Search(b"a", criteria=("AND", [("MODSEQ", 620162338)])),
    ),
    (
        b"t SEARCH OR NOT MODSEQ 720162338 LARGER 50000",
        c.Search(
            b"t", criteria=("AND", [("OR", ("NOT", ("MODSEQ", 720162338)), ("SIZE", True, 50000))])
        ),
    ),
    (
        b"a FETCH 1:* (FLAGS MODSEQ)",
        c.Fetch(b"a", ALL, (FLAGS, c.FetchAttribute("MODSEQ"))),
    ),
    (
        b"a STATUS blurdybloop (UIDNEXT MESSAGES HIGHESTMODSEQ)",
        c.Status(b"a", "blurdybloop", ("UIDNEXT", "MESSAGES", "HIGHESTMODSEQ")),
    ),
    # RFC 4731 ESEARCH, RFC 5182 SEARCHRES
    (
        b'A282 SEARCH RETURN (MIN COUNT) FLAGGED NOT FROM "Smith"',
        c.Search(
            b"A282",
            criteria=("AND", [("FLAG", "\\Flagged", True), ("NOT", ("HEADER", "from", "smith"))]),
            returns=("MIN", "COUNT"),
        ),
    ),
    (
        b"A283 SEARCH RETURN () FLAGGED",
        c.Search(b"A283", criteria=("AND", [("FLAG", "\\Flagged", True)]), returns=("ALL",)),
    ),
    (
        b"A285 UID SEARCH RETURN (MIN MAX) 1:5000",
        c.Search(
            b"A285", criteria=("AND", [("SEQ", [(1, 5000)])]), uid=True, returns=("MIN", "MAX")
        ),
    ),
    (
        b"A282 SEARCH RETURN (SAVE) FLAGGED",
        c.Search(b"A282", criteria=("AND", [("FLAG", "\\Flagged", True)]), returns=("SAVE",)),
    ),
    (
        b"A283 FETCH $ (UID INTERNALDATE FLAGS RFC822.HEADER)",
        c.Fetch(
            b"A283",
            c.SequenceSet(saved=True),
            tuple(c.FetchAttribute(n) for n in ("UID", "INTERNALDATE", "FLAGS", "RFC822.HEADER")),
        ),
    ),
    (
        b"A301 UID SEARCH UID $ SMALLER 4096",
        c.Search(b"A301", criteria=("AND", [("UID_SAVED",), ("SIZE", False, 4096)]), uid=True),
    ),
    (b"A302 SEARCH $", c.Search(b"A302", criteria=("AND", [("SAVED",)]))),
    (b"A303 UID COPY $ Other", c.Copy(b"A303", c.SequenceSet(saved=True), "Other", uid=True)),
    # RFC 5256 SORT and THREAD
    (
        b"A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994",
        c.Sort(b"A282", ((False, "SUBJECT"),), "UTF-8", ("AND", [("DATE", "SINCE", (1994, 2, 1))])),
    ),
    (
        b"C283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL",
        c.Sort(b"C283", ((False, "SUBJECT"), (True, "DATE")), "UTF-8", ("AND", [("ALL",)])),
    ),
    (
        b'D283 UID SORT (SUBJECT) US-ASCII TEXT "not in mailbox"',
        c.Sort(
            b"D283", ((False, "SUBJECT"),), "US-ASCII", ("AND", [("TEXT", "not in mailbox")]), True
        ),
    ),
    (
        b"A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000",
        c.Thread(b"A283", "ORDEREDSUBJECT", "UTF-8", ("AND", [("DATE", "SINCE", (2000, 3, 5))])),
    ),
    (
        b'A284 THREAD REFERENCES US-ASCII TEXT "gewp"',
        c.Thread(b"A284", "REFERENCES", "US-ASCII", ("AND", [("TEXT", "gewp")])),
    ),
    # RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154 SPECIAL-USE
    (b'A01 LIST "" %', c.List(b"A01", "", ("%",))),
    (b'A02 LIST (SUBSCRIBED) "" "*"', c.List(b"A02", "", ("*",), ("SUBSCRIBED",), extended=True)),
    (
        b'A03 LIST () "" "%" RETURN (CHILDREN)',
        c.List(b"A03", "", ("%",), returns=("CHILDREN",), extended=True),
    ),
    (
        b'A05 LIST (REMOTE SUBSCRIBED) "" "*"',
        c.List(b"A05", "", ("*",), ("REMOTE", "SUBSCRIBED"), extended=True),
    ),
    (
        b'A07 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (SUBSCRIBED)',
        c.List(b"A07", "", ("%",), ("SUBSCRIBED", "RECURSIVEMATCH"), ("SUBSCRIBED",), None, True),
    ),
    (
        b'A01 LIST "" ("INBOX" "Drafts" "Sent/%")',
        c.List(b"A01", "", ("INBOX", "Drafts", "Sent/%"), extended=True),
    ),
    (
        b'A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))',
        c.List(b"A01", "", ("%",), status=("MESSAGES", "UNSEEN"), extended=True),
    ),
    (
        b't1 LIST (SPECIAL-USE) "" * RETURN (SPECIAL-USE)',
        c.List(b"t1", "", ("*",), ("SPECIAL-USE",), ("SPECIAL-USE",), extended=True),
    ),
    (
        b"t1 CREATE MySpecial (USE (\\Drafts \\Sent))",
        c.Create(b"t1", "MySpecial", ("\\Drafts", "\\Sent")),
    ),
    # RFC 4978, 4959, 2971, 3691, 6851, 4315, 3516
    (b"a COMPRESS deflate", c.Compress(b"a", "DEFLATE")),
    (
        b"a AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=",
        c.Authenticate(b"a", "PLAIN", b"dGVzdAB0ZXN0AHRlc3Q="),
    ),
    (b"a AUTHENTICATE EXTERNAL =", c.Authenticate(b"a", "EXTERNAL", b"=")),
    (b'a ID ("name" "sodr" "version" NIL)', c.Id(b"a", (("name", "sodr"), ("version", None)))),
    (b"a ID NIL", c.Id(b"a", None)),
    (b"a UNSELECT", c.Unselect(b"a")),
    (b"a NAMESPACE", c.Namespace(b"a")),
    (b"a IDLE", c.Idle(b"a")),
    (b"a UID MOVE 42:69 foo", c.Copy(b"a", seq((42, 69)), "foo", uid=True, move=True)),
    (b"a MOVE 1 foo", c.Copy(b"a", seq(1), "foo", move=True)),
    (b"A202 UID EXPUNGE 3000:3002", c.Expunge(b"A202", uids=seq((3000, 3002)))),
    (
        b"a FETCH 1 (BINARY.PEEK[1.2]<0.100> BINARY[] BINARY.SIZE[3])",
        c.Fetch(
            b"a",
            seq(1),
            (
                att("BINARY", (1, 2), peek=True, partial=(0, 100)),
                att("BINARY"),
                att("BINARY.SIZE", (3,)),
            ),
        ),
    ),
]


@pytest.mark.parametrize("line, expected", EXTENSIONS)
def test_extension_examples(line, expected):
    assert parse(line) == expected


def test_every_command_of_the_contract_has_an_example():
    produced = {type(expected) for _, expected in RFC3501 + EXTENSIONS}
    contract = {
        cls
        for cls in vars(c).values()
        if isinstance(cls, type) and issubclass(cls, c.Command) and cls is not c.Command
    }
    assert contract - produced == {c.Append}  # APPEND has its own tests (literals)


def test_fetch_sections_and_partials():
    command = parse(
        b'a fetch 5 (body.peek[1.2.header.fields.not (Received "X-Spam")]<10.0> body[1.MIME] '
        b"BODY[TEXT]<0.4294967295> rfc822 RFC822.TEXT bodystructure body envelope)"
    )
    assert command.attributes == (
        att("BODY", (1, 2), "HEADER.FIELDS.NOT", ("Received", "X-Spam"), True, (10, 0)),
        att("BODY", (1,), "MIME"),
        att("BODY", (), "TEXT", partial=(0, 4294967295)),
        *(c.FetchAttribute(n) for n in ("RFC822", "RFC822.TEXT", "BODYSTRUCTURE", "BODY")),
        c.FetchAttribute("ENVELOPE"),
    )


def test_fetch_macros_expand():
    assert parse(b"a FETCH 1 FAST").attributes == tuple(
        c.FetchAttribute(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE")
    )
    assert [a.name for a in parse(b"a UID FETCH 1 ALL").attributes] == [
        "UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"
    ]  # fmt: skip


def test_uid_fetch_keeps_a_given_uid_once():
    assert parse(b"a UID FETCH 1 (FLAGS UID)").attributes == (FLAGS, UID)


def test_append_multiappend_date_and_literal8():
    data = (
        b'a APPEND Drafts (\\Seen $Work) " 7-Feb-1994 21:52:25 -0800" {3+}\r\nabc '
        b"(\\Draft) ~{2+}\r\n\x00\x01 {0+}\r\n\r\n"
    )
    command = parse_command(data)
    assert command.mailbox == "Drafts"
    assert command.messages == (
        c.AppendMessage(("\\Seen", "$Work"), 760686745.0, b"abc"),
        c.AppendMessage(("\\Draft",), None, b"\x00\x01"),
        c.AppendMessage((), None, b""),
    )


def test_literals_anywhere_a_string_goes():
    assert parse_command(b'a LOGIN {5}\r\nalice {6+}\r\nse"c t\r\n') == c.Login(
        b"a", b"alice", b'se"c t'
    )
    assert parse_command(b"a SELECT {6}\r\nEntw\xc3\xbc\r\n").mailbox == "Entwü"
    # a literal that ends in CR, then its line ended by a bare LF
    assert parse_command(b"a LOGIN x {1}\r\n\r\n").password == b"\r"


def test_mailbox_names_are_decoded():
    assert parse(b"a SELECT Entw&APw-rfe").mailbox == "Entwürfe"
    assert parse(b'a SELECT "iNbOx"').mailbox == "INBOX"
    assert parse(b"a SELECT inbox.sub").mailbox == "inbox.sub"
    assert parse('a SELECT "ınbox"'.encode()).mailbox == "ınbox"  # dotless i: not INBOX
    assert parse(b'a LOGIN "a\\"b" "c\\\\d"') == c.Login(b"a", b'a"b', b"c\\d")


def test_lenient_spacing_and_bare_lf():
    assert parse_command(b"a  UID  FETCH  1:*  ( FLAGS  UID )   \n") == c.Fetch(
        b"a", ALL, (FLAGS, UID), uid=True
    )


def test_star_and_reversed_ranges_kept_as_written():
    assert parse(b"a FETCH 5:3,*,7:* FLAGS").messages == seq((5, 3), (None, None), (7, None))


# -- SEARCH: the tree mailgw.imap.search evaluates --------------------------------------------

#: Criteria and the trees the former ``mailgw.imap.search.parse_criteria`` gave for them: the
#: evaluator in ``mailgw.imap.search`` reads exactly these.
# fmt: off
SEARCHES = [
    (b"ALL", ("AND", [("ALL",)])),
    (b"SEEN UNSEEN ANSWERED UNANSWERED DELETED UNDELETED DRAFT UNDRAFT FLAGGED UNFLAGGED", ("AND", [
        ("FLAG", "\\Seen", True), ("FLAG", "\\Seen", False), ("FLAG", "\\Answered", True),
        ("FLAG", "\\Answered", False), ("FLAG", "\\Deleted", True), ("FLAG", "\\Deleted", False),
        ("FLAG", "\\Draft", True), ("FLAG", "\\Draft", False), ("FLAG", "\\Flagged", True),
        ("FLAG", "\\Flagged", False)])),
    (b"NEW OLD RECENT", ("AND", [
        ("AND", [("FLAG", "\\Recent", True), ("FLAG", "\\Seen", False)]),
        ("FLAG", "\\Recent", False), ("FLAG", "\\Recent", True)])),
    (b"KEYWORD $Work UNKEYWORD Junk", ("AND", [
        ("KEYWORD", "$work", True), ("KEYWORD", "junk", False)])),
    (b'FROM alice TO "Bob Smith" CC x BCC y SUBJECT "Re: Hi"', ("AND", [
        ("HEADER", "from", "alice"), ("HEADER", "to", "bob smith"), ("HEADER", "cc", "x"),
        ("HEADER", "bcc", "y"), ("HEADER", "subject", "re: hi")])),
    (b'HEADER X-Spam "YES" HEADER List-Id ""', ("AND", [
        ("HEADER", "x-spam", "yes"), ("HEADER", "list-id", "")])),
    (b"BODY hello TEXT World", ("AND", [("BODY", "hello"), ("TEXT", "world")])),
    (b'BEFORE 1-Feb-2024 ON "15-mar-2023" SINCE 01-Jan-2000', ("AND", [
        ("DATE", "BEFORE", (2024, 2, 1)), ("DATE", "ON", (2023, 3, 15)),
        ("DATE", "SINCE", (2000, 1, 1))])),
    (b"SENTBEFORE 1-Feb-2024 SENTON 2-Feb-2024 SENTSINCE 3-Feb-2024", ("AND", [
        ("DATE", "SENTBEFORE", (2024, 2, 1)), ("DATE", "SENTON", (2024, 2, 2)),
        ("DATE", "SENTSINCE", (2024, 2, 3))])),
    (b"LARGER 100 SMALLER 5000", ("AND", [("SIZE", True, 100), ("SIZE", False, 5000)])),
    (b"UID 1:5,7,9:* 2,4:*", ("AND", [
        ("UID", [(1, 5), (7, 7), (9, None)]), ("SEQ", [(2, 2), (4, None)])])),
    (b"NOT SEEN OR FLAGGED DELETED", ("AND", [
        ("NOT", ("FLAG", "\\Seen", True)),
        ("OR", ("FLAG", "\\Flagged", True), ("FLAG", "\\Deleted", True))])),
    (b"(SEEN (FLAGGED OR ANSWERED DRAFT)) NOT (1:3)", ("AND", [
        ("AND", [("FLAG", "\\Seen", True), ("AND", [
            ("FLAG", "\\Flagged", True),
            ("OR", ("FLAG", "\\Answered", True), ("FLAG", "\\Draft", True))])]),
        ("NOT", ("AND", [("SEQ", [(1, 3)])]))])),
    (b"OR (FROM a SUBJECT b) NOT NOT ALL", ("AND", [
        ("OR", ("AND", [("HEADER", "from", "a"), ("HEADER", "subject", "b")]),
         ("NOT", ("NOT", ("ALL",))))])),
]
# fmt: on


@pytest.mark.parametrize("criteria, expected", SEARCHES)
def test_search_tree_is_the_evaluators(criteria, expected):
    assert parse(b"a SEARCH " + criteria).criteria == expected
    assert parse(b"a UID SEARCH CHARSET US-ASCII " + criteria).criteria == expected


def test_search_strings_in_their_charset():
    tree = parse_command(b"a SEARCH CHARSET ISO-8859-1 SUBJECT {4}\r\nS\xd6ME\r\n").criteria
    assert tree == ("AND", [("HEADER", "subject", "söme")])
    tree = parse_command(b"a SEARCH CHARSET UTF-8 TEXT {5}\r\ns\xc3\xb6me\r\n").criteria
    assert tree == ("AND", [("TEXT", "söme")])


@pytest.mark.parametrize("charset", [b"base64", b"rot13", b"idna", b"punycode", b"x-unknown"])
def test_search_in_charsets_python_cannot_decode_text_with(charset):
    command = parse_command(b"a SEARCH CHARSET %s TEXT {2}\r\n\xff\xfe\r\n" % charset)
    assert command.charset == charset.decode()
    assert command.criteria == ("AND", [("TEXT", "\ufffd\ufffd")])


@settings(max_examples=100, deadline=None)
@given(st.from_regex(rb'[A-Za-z0-9_.:-]{1,16}|"[A-Za-z0-9_ -]{0,8}"', fullmatch=True))
def test_any_charset_name_parses(charset):
    command = parse_command(b"a SEARCH CHARSET " + charset + b" TEXT {2}\r\n\xc3\xa9\r\n")
    assert command.criteria[1][0][0] == "TEXT"


def test_search_nesting_limit():
    assert parse(b"a SEARCH " + b"NOT " * 50 + b"ALL").criteria[1][0][0] == "NOT"
    with pytest.raises(ParseError, match="nested too deeply"):
        parse(b"a SEARCH " + b"NOT " * 60 + b"ALL")
    with pytest.raises(ParseError, match="nested too deeply"):
        parse(b"a SEARCH " + b"(" * 2000 + b"ALL" + b")" * 2000)


# -- malformed commands ----------------------------------------------------------------------

BAD = [
    (b"", None, "empty"),
    (b"\x00\xff\xfe", None, "tag"),
    (b"+ NOOP", None, "tag"),
    (b"a(b NOOP", None, "tag"),
    (b"a", b"a", "missing command"),
    (b"a \xc3\xa9LOGIN x y", b"a", "command name"),
    (b"A442 XPIG-LATIN", b"A442", "unknown command XPIG-LATIN"),
    (b"a UID", b"a", "UID needs a command"),
    (b"a UID LOGIN x y", b"a", "UID LOGIN is not a command"),
    (b"a NOOP extra", b"a", "after NOOP"),
    (b"a LOGIN", b"a", "LOGIN needs a user name"),
    (b"a LOGIN user", b"a", "LOGIN needs a password"),
    (b"a LOGIN user pw extra", b"a", "after LOGIN"),
    (b"a LOGIN {-1}", b"a", "literal size is not a number"),
    (b"a LOGIN {abc}", b"a", "literal size is not a number"),
    (b"a LOGIN {5}", b"a", "shorter"),
    (b"a LOGIN {3} x", b"a", "must end its line"),
    (b"a LOGIN " + b"(" * 5000, b"a", "LOGIN needs a user name"),
    (b'a LOGIN "unterminated', b"a", "quoted"),
    (b'a LOGIN "bad \\x escape" pw', b"a", "quoted"),
    (b"a LOGIN ~{1}\r\nx pw", b"a", "literal8"),
    (b"a FETCH", b"a", "FETCH needs a sequence set"),
    (b"a FETCH 1", b"a", "FETCH needs data items"),
    (b"a FETCH x:y (FLAGS)", b"a", "FETCH needs a sequence set"),
    (b"a FETCH 1:4294967296 (FLAGS)", b"a", "number too large"),
    (b"a UID FETCH 0:* (FLAGS)", b"a", "0 is not a message number"),
    (b"a FETCH 1,,2 (FLAGS)", b"a", "bad sequence set"),
    (b"a FETCH 1:2:3 FLAGS", b"a", "bad sequence set"),
    (b"a FETCH 1,$ FLAGS", b"a", "bad sequence set"),
    (b"a FETCH 1 (FLAGS", b"a", "unterminated"),
    (b"a FETCH 1 FLAGS)))", b"a", "after FETCH"),
    (b"a FETCH 1 ()", b"a", "FETCH needs data items"),
    (b"a FETCH 1 (NONSENSE)", b"a", "unknown FETCH item NONSENSE"),
    (b"a FETCH 1 (FLAGS ALL)", b"a", "ALL cannot be inside a list"),
    (b"a FETCH 1 " + b"(" * 5000 + b"FLAGS", b"a", "bad FETCH item"),
    (b"a FETCH 1 BODY.PEEK", b"a", "BODY.PEEK needs a section"),
    (b"a FETCH 1 FLAGS[]", b"a", "FLAGS takes no section"),
    (b"a FETCH 1 BODY[MIME]", b"a", "MIME needs a part number"),
    (b"a FETCH 1 BODY[0]", b"a", "0 is not allowed"),
    (b"a FETCH 1 BODY[1.]", b"a", "part number"),
    (b"a FETCH 1 BODY[1HEADER]", b"a", "bad section"),
    (b"a FETCH 1 BODY[HEADER.FIELDS]", b"a", "HEADER.FIELDS needs a list"),
    (b"a FETCH 1 BODY[HEADER.FIELDS ()]", b"a", "HEADER.FIELDS needs a list"),
    (b"a FETCH 1 BODY[FOO]", b"a", "unknown section FOO"),
    (b"a FETCH 1 BODY[HEADER", b"a", "unterminated section"),
    (b"a FETCH 1 BINARY[HEADER]", b"a", "part numbers only"),
    (b"a FETCH 1 BINARY.SIZE[1]<0.5>", b"a", "no partial"),
    (b"a FETCH 1 BODY[]<99999999999999999999.1>", b"a", "number too large"),
    (b"a FETCH 1 BODY[]<1.4294967296>", b"a", "number too large"),
    (b"a FETCH 1 BODY[]<1>", b"a", "partial"),
    (b"a FETCH 1 FLAGS (VANISHED)", b"a", "VANISHED needs UID FETCH and CHANGEDSINCE"),
    (b"a UID FETCH 1 FLAGS (VANISHED)", b"a", "VANISHED needs UID FETCH and CHANGEDSINCE"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)", b"a", "unknown FETCH modifier"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE x)", b"a", "CHANGEDSINCE needs a mod-sequence"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE 9223372036854775808)", b"a", "number too large"),
    (b"a STORE 1 +FLAGS", b"a", "+FLAGS needs flags"),
    (b"a UID STORE 1:* FLAGS.SILENT", b"a", "FLAGS.SILENT needs flags"),
    (b"a UID STORE", b"a", "STORE needs a sequence set"),
    (b"a STORE 1 FLAGZ (\\Seen)", b"a", "unknown STORE data item"),
    (b"a STORE 1 +FLAGS ((\\Seen)))", b"a", "nested parentheses"),
    (b"a STORE 1 +FLAGS (\\Seen", b"a", "unterminated flag list"),
    (b"a STORE 1 +FLAGS (\\Recent)", b"a", "\\Recent"),
    (b"a STORE 1 +FLAGS \\*", b"a", "bad flag"),
    (b"a STORE 1 (UNCHANGEDSINCE) FLAGS ()", b"a", "UNCHANGEDSINCE needs"),
    (b"a UID EXPUNGE", b"a", "UID EXPUNGE needs a sequence set"),
    (b"a EXPUNGE 1:3", b"a", "after EXPUNGE"),
    (b"a COPY 1", b"a", "COPY needs a mailbox name"),
    (b"a SEARCH", b"a", "SEARCH needs search criteria"),
    (b"a SEARCH FOO", b"a", "unknown search key FOO"),
    (b"a SEARCH FROM", b"a", "FROM needs"),
    (b'a SEARCH "ALL"', b"a", "quoted string"),
    (b"a SEARCH (SEEN", b"a", "unbalanced"),
    (b"a SEARCH SEEN)", b"a", "after SEARCH"),
    (b"a SEARCH ()", b"a", "empty parentheses"),
    (b"a SEARCH SINCE 1-Foo-2024", b"a", "bad date"),
    (b"a SEARCH SINCE 32-Jan-2024", b"a", "bad date"),
    (b'a SEARCH SINCE "1-Jan-2024', b"a", "bad date"),
    (b"a SEARCH LARGER x", b"a", "LARGER needs a number"),
    (b"a SEARCH OR SEEN", b"a", "OR needs two search keys"),
    (b"a SEARCH NOT", b"a", "NOT needs a search key"),
    (b"a SEARCH 0", b"a", "0 is not a message number"),
    (b"a SEARCH RETURN (BOGUS) ALL", b"a", "unknown SEARCH return option"),
    (b"a SEARCH MODSEQ x", b"a", "MODSEQ needs a mod-sequence"),
    (b'a SEARCH MODSEQ "/flags/x" bogus 5', b"a", "entry type"),
    (b"a SORT SUBJECT UTF-8 ALL", b"a", "SORT needs sort keys"),
    (b"a SORT (SUBJECT REVERSE) UTF-8 ALL", b"a", "REVERSE needs a sort key"),
    (b"a SORT (COLOUR) UTF-8 ALL", b"a", "unknown SORT key"),
    (b"a SORT (DATE) UTF-8", b"a", "SORT needs search criteria"),
    (b"a THREAD FANCY UTF-8 ALL", b"a", "unknown THREAD algorithm"),
    (b"a SELECT", b"a", "SELECT needs a mailbox name"),
    (b'a SELECT "\xff"', b"a", "bad mailbox name"),
    (b"a SELECT INBOX (BOGUS)", b"a", "unknown SELECT parameter"),
    (b"a SELECT INBOX (QRESYNC (0 1))", b"a", "0 is not allowed"),
    (b"a SELECT INBOX (QRESYNC (1))", b"a", "QRESYNC needs a mod-sequence"),
    (b"a SELECT INBOX (QRESYNC (1 2 1:* (1:2)))", b"a", "QRESYNC sequence match needs UIDs"),
    (b"a SELECT INBOX (QRESYNC (1 2 $))", b"a", "$ is not allowed"),
    (b"a EXAMINE INBOX CONDSTORE", b"a", "EXAMINE parameters must be a list"),
    (b"a LIST", b"a", "LIST needs a reference"),
    (b'a LIST ""', b"a", "LIST needs a mailbox pattern"),
    (b'a LIST (BOGUS) "" *', b"a", "unknown LIST selection option"),
    (b'a LIST (RECURSIVEMATCH) "" *', b"a", "RECURSIVEMATCH needs another"),
    (b'a LIST "" * (CHILDREN)', b"a", "RETURN"),
    (b'a LIST "" * RETURN (BOGUS)', b"a", "unknown LIST return option"),
    (b'a LIST "" ()', b"a", "LIST needs a mailbox pattern"),
    (b"a STATUS INBOX", b"a", "STATUS needs a list of items"),
    (b"a STATUS INBOX ()", b"a", "STATUS needs a list of items"),
    (b"a STATUS INBOX (BOGUS)", b"a", "unknown STATUS item"),
    (b"a APPEND INBOX", b"a", "APPEND needs a message literal"),
    (b"a APPEND INBOX hello", b"a", "APPEND needs a message literal"),
    (b"a APPEND INBOX{1}\r\nx", b"a", "APPEND needs a message literal"),
    (b"a APPEND INBOX {1}\r\nx (\\Seen)", b"a", "APPEND needs a message literal"),
    (b'a APPEND INBOX "32-Jul-1996 02:44:25 -0700" {1+}\r\nx', b"a", "bad date-time"),
    (b"a APPEND INBOX (\\Recent) {1+}\r\nx", b"a", "\\Recent"),
    (b"a APPEND INBOX {-1}", b"a", "literal size is not a number"),
    (b"a ENABLE", b"a", "ENABLE needs a capability"),
    (b"a ID", b"a", "ID needs a parameter list or NIL"),
    (b'a ID ("name")', b"a", "ID field needs a value"),
    (b"a ID (name x)", b"a", "ID field names are strings"),
    (b"a ID FOO", b"a", "ID needs a parameter list or NIL"),
    (b"a CREATE x (BOGUS)", b"a", "unknown CREATE parameter"),
    (b"a RENAME x", b"a", "RENAME needs two mailbox names"),
    (b"a AUTHENTICATE", b"a", "AUTHENTICATE needs a mechanism"),
    (b"a COMPRESS", b"a", "COMPRESS needs a mechanism"),
]


@pytest.mark.parametrize("line, tag, reason", BAD)
def test_malformed_commands_are_parse_errors(line, tag, reason):
    with pytest.raises(ParseError) as caught:
        parse(line)
    assert caught.value.tag == tag
    assert reason in caught.value.reason
    assert caught.value.reason.isprintable() and len(caught.value.reason) < 100


# -- purity, speed and robustness ---------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def imports_of(module: str) -> set[str]:
    """The modules ``module`` imports, and theirs within mailgw, read from the source (package
    ``__init__`` files aside: ``mailgw.imap``'s own imports the server)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        path = ROOT / (name.replace(".", "/") + ".py")
        if name in seen or not path.exists():
            seen.add(name)
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                todo += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return seen


@pytest.mark.parametrize("module", ["parser", "framing", "mutf7"])
def test_wire_layer_imports_nothing_of_twisted_nor_io(module):
    imported = imports_of(f"mailgw.imap.wire.{module}")
    assert not {name for name in imported if name.split(".")[0] in ("twisted", "socket", "os")}


def best_of(function, repeat: int = 5, number: int = 2000) -> float:
    """The fastest mean time of one call, in seconds (the machine is shared)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            function()
        times.append((time.perf_counter() - started) / number)
    return min(times)


def test_common_fetch_is_fast():
    assert best_of(lambda: parse_command(b"a UID FETCH 1:* (FLAGS)\r\n")) < 30e-6


def test_hostile_lines_are_quick():
    hostile = [
        b"a SEARCH " + b"(" * 50_000,
        b"a FETCH 1 (" + b"BODY[HEADER.FIELDS (" + b"X " * 30_000 + b")]",
        b"a LOGIN " + b'"' + b"\\" * 100_000,
        b"a STORE 1 FLAGS (" + b"\\Seen " * 20_000,
        b"a FETCH " + b"1," * 40_000 + b"1 FLAGS",
        b"a LIST " + b"(" * 100_000,
        b"a NOOP " + b"x" * 100_000,
    ]
    for line in hostile:
        started = time.perf_counter()
        try:
            parse(line)
        except ParseError:
            pass
        assert time.perf_counter() - started < 0.5, line[:40]


VALID = [line for line, _ in RFC3501 + EXTENSIONS] + [b"a SEARCH " + s for s, _ in SEARCHES]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_only_parse_errors(data):
    try:
        parse_command(data)
    except ParseError as error:
        assert error.tag is None or data.startswith(error.tag)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(VALID), st.randoms(use_true_random=False))
def test_mutated_commands_give_only_parse_errors(line, rng: random.Random):
    data = bytearray(line)
    pieces = [b" ", b"(", b")", b"[", b"]", b"{", b"}", b"{3}\r\n", b'"', b"\\", b"*", b":", b"0",
              b"4294967296", b"\xff", b"\r\n", b"<", b".", b"$", b"~{1+}\r\n", b"NIL"]  # fmt: skip
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(data) + 1)
        action = rng.random()
        if action < 0.4:
            data[where:where] = rng.choice(pieces)
        elif action < 0.7:
            del data[where : where + rng.randint(1, 4)]
        else:
            data[where : where + 1] = bytes([rng.randrange(256)])
    try:
        command = parse_command(bytes(data) + b"\r\n")
    except ParseError:
        return
    assert isinstance(command, c.Command)
