"""LIST, LSUB and STATUS: RFC 3501 wildcards, LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819),
SPECIAL-USE (RFC 6154), STATUS=SIZE (RFC 8438) and names that are not modified UTF-7.

The RFC examples are replayed over a real socket after the folders and subscriptions the example
shows are made, and the whole answer compared byte for byte.  mailgw's hierarchy delimiter is
'.', not the examples' '/', so names are written with '.'; INBOX is listed as mailgw has it (the
examples' ``\\Marked \\NoInferiors`` describe their server's INBOX); there are no remote
mailboxes, so the REMOTE examples answer their local part.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from test_imap import ALICE, PASSWORD, message, read_until
from twisted.logger import globalLogPublisher

from mailgw.imap import make_factory
from mailgw.imap.listing import Query, list_mailboxes, lsub_mailboxes, pattern_matcher
from mailgw.imap.wire import mutf7
from mailgw.imap.wire.parser import parse_command

#: The folders and subscriptions every new user gets (removed for the examples).
DEFAULTS = ("Sent", "Drafts", "Trash", "Junk", "Archive")


@pytest.fixture
def port(server):
    """Alice and an IMAP listener."""
    server.add_user(ALICE, PASSWORD)
    return server.listen(make_factory)


@pytest.fixture
def failures():
    """The failures mailgw logs during the test."""
    logged: list = []

    def observe(event):
        if "log_failure" in event:
            logged.append(event)

    globalLogPublisher.addObserver(observe)
    yield logged
    globalLogPublisher.removeObserver(observe)


class Session:
    """A raw logged-in connection that sends one command and returns its whole answer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        read_until(self.sock, b"* OK")
        assert b"x OK" in self.run(b"x LOGIN " + ALICE.encode() + b" " + PASSWORD.encode())

    def run(self, line: bytes) -> bytes:
        """Send ``line`` (its tag first); every line up to and including the tagged reply."""
        tag = line.split(b" ", 1)[0]
        self.sock.sendall(line + b"\r\n")
        return read_until(self.sock, tag + b" ")

    def ok(self, line: bytes) -> None:
        """Run a command that must succeed."""
        answer = self.run(line)
        assert re.search(rb"(^|\n)" + re.escape(line.split(b" ")[0]) + rb" OK", answer), answer

    def make(self, folders=(), subscribed=(), unsubscribed=("INBOX",)) -> None:
        """Leave only INBOX and ``folders``; subscribe exactly ``subscribed``."""
        for name in DEFAULTS:
            self.ok(b"d DELETE " + name.encode())
            self.run(b"u UNSUBSCRIBE " + name.encode())
        for name in unsubscribed:
            self.run(b"u UNSUBSCRIBE " + name.encode())
        for name in folders:
            self.ok(b"c CREATE " + mutf7.encode(name))
        for name in subscribed:
            self.ok(b"s SUBSCRIBE " + mutf7.encode(name))

    def close(self) -> None:
        """Hang up."""
        self.sock.close()


@pytest.fixture
def imap(port):
    """A logged-in raw session."""
    session = Session(port)
    yield session
    session.close()


def lines(*text: str) -> bytes:
    """Response lines as the wire carries them."""
    return "".join(line + "\r\n" for line in text).encode()


def user_dir(server) -> Path:
    """Alice's Maildir."""
    return Path(server.config.mail_dir) / "example.test" / "alice"


# -- RFC 5258 section 5 ---------------------------------------------------------------------------

FOOD = ("Fruit", "Fruit.Apple", "Fruit.Banana", "Tofu", "Vegetable", "Vegetable.Broccoli",
        "Vegetable.Corn")  # fmt: skip
FOOD_SUBSCRIBED = ("INBOX", "Fruit.Banana", "Fruit.Peach", "Vegetable", "Vegetable.Broccoli")

EVERYTHING = lines(
    '* LIST () "." "INBOX"',
    '* LIST () "." "Fruit"',
    '* LIST () "." "Fruit.Apple"',
    '* LIST () "." "Fruit.Banana"',
    '* LIST () "." "Tofu"',
    '* LIST () "." "Vegetable"',
    '* LIST () "." "Vegetable.Broccoli"',
    '* LIST () "." "Vegetable.Corn"',
)
SUBSCRIBED = lines(
    '* LIST (\\Subscribed) "." "INBOX"',
    '* LIST (\\Subscribed) "." "Fruit.Banana"',
    '* LIST (\\Subscribed \\NonExistent) "." "Fruit.Peach"',
    '* LIST (\\Subscribed) "." "Vegetable"',
    '* LIST (\\Subscribed) "." "Vegetable.Broccoli"',
)
TOP_WITH_CHILDREN = lines(
    '* LIST (\\HasNoChildren) "." "INBOX"',
    '* LIST (\\HasChildren) "." "Fruit"',
    '* LIST (\\HasNoChildren) "." "Tofu"',
    '* LIST (\\HasChildren) "." "Vegetable"',
)
EVERYTHING_MARKED = lines(
    '* LIST (\\Subscribed) "." "INBOX"',
    '* LIST () "." "Fruit"',
    '* LIST () "." "Fruit.Apple"',
    '* LIST (\\Subscribed) "." "Fruit.Banana"',
    '* LIST () "." "Tofu"',
    '* LIST (\\Subscribed) "." "Vegetable"',
    '* LIST (\\Subscribed) "." "Vegetable.Broccoli"',
    '* LIST () "." "Vegetable.Corn"',
)


@pytest.mark.parametrize(
    "command, answer",
    [
        pytest.param(b'A01 LIST "" "*"', EVERYTHING, id="example 1: the hierarchy"),
        pytest.param(b'A02 LIST (SUBSCRIBED) "" "*"', SUBSCRIBED, id="example 2: SUBSCRIBED"),
        pytest.param(
            b'A03 LIST () "" "%" RETURN (CHILDREN)', TOP_WITH_CHILDREN, id="example 3: CHILDREN"
        ),
        pytest.param(
            b'A04 LIST (REMOTE) "" "%" RETURN (CHILDREN)', TOP_WITH_CHILDREN, id="example 4: REMOTE"
        ),
        pytest.param(
            b'A05 LIST (REMOTE SUBSCRIBED) "" "*"', SUBSCRIBED, id="example 5: REMOTE SUBSCRIBED"
        ),
        pytest.param(
            b'A06 LIST (REMOTE) "" "*" RETURN (SUBSCRIBED)',
            EVERYTHING_MARKED,
            id="example 6: RETURN (SUBSCRIBED)",
        ),
    ],
)
def test_rfc5258_examples_on_the_food_hierarchy(imap, command, answer):
    """Examples 1 to 6: the whole answer, byte for byte."""
    imap.make(FOOD, FOOD_SUBSCRIBED, unsubscribed=())
    tag = command.split(b" ")[0]
    assert imap.run(command) == answer + tag + b" OK LIST completed\r\n"


def test_rfc5258_example_7_several_patterns(imap):
    """Example 7: one LIST, three patterns (Drafts keeps its special-use attribute)."""
    imap.make(["Drafts", "Sent.March2004", "Sent.December2003", "Sent.August2004"])
    assert imap.run(b'A07 LIST "" ("INBOX" "Drafts" "Sent.%")') == lines(
        '* LIST () "." "INBOX"',
        '* LIST (\\Drafts) "." "Drafts"',
        '* LIST () "." "Sent.August2004"',
        '* LIST () "." "Sent.December2003"',
        '* LIST () "." "Sent.March2004"',
        "A07 OK LIST completed",
    )


def test_rfc5258_example_8_childinfo(imap):
    """Example 8: a parent not subscribed, listed for its subscribed child (CHILDINFO)."""
    imap.make(["Foo", "Foo.Bar", "Foo.Baz", "Moo"], ["Foo.Bar"])
    assert imap.run(b'A08 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"') == lines(
        '* LIST () "." "Foo" ("CHILDINFO" ("SUBSCRIBED"))', "A08 OK LIST completed"
    )
    assert imap.run(b'A09 LIST (SUBSCRIBED) "" "%"') == b"A09 OK LIST completed\r\n"


def test_rfc5258_example_9_childinfo_subscribed_or_not(imap):
    """Example 9: CHILDINFO on subscribed and unsubscribed parents alike, none with ``*``
    (every subscribed descendant is listed itself) nor for a child that matches too."""
    folders = ["Foo2", "Foo2.Bar1", "Foo2.Bar2", "Baz2", "Baz2.Bar2", "Baz2.Bar22", "Baz2.Bar222"]
    folders += ["Eps2", "Eps2.Mailbox1", "Qux2", "Qux2.Bar2"]
    imap.make(folders, ["Foo2.Bar1", "Foo2.Bar2", "Baz2", "Eps2", "Eps2.Mailbox1"])
    assert imap.run(b'C04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"') == lines(
        '* LIST (\\Subscribed) "." "Baz2"',
        '* LIST (\\Subscribed) "." "Eps2" ("CHILDINFO" ("SUBSCRIBED"))',
        '* LIST () "." "Foo2" ("CHILDINFO" ("SUBSCRIBED"))',
        "C04 OK LIST completed",
    )
    assert imap.run(b'C05 LIST (SUBSCRIBED RECURSIVEMATCH) "" "*2"') == lines(
        '* LIST (\\Subscribed) "." "Baz2"',
        '* LIST (\\Subscribed) "." "Eps2" ("CHILDINFO" ("SUBSCRIBED"))',
        '* LIST () "." "Foo2" ("CHILDINFO" ("SUBSCRIBED"))',
        '* LIST (\\Subscribed) "." "Foo2.Bar2"',
        "C05 OK LIST completed",
    )
    assert b"CHILDINFO" not in imap.run(b'C06 LIST (SUBSCRIBED RECURSIVEMATCH) "" "*"')


def test_rfc5258_errors(imap):
    """Unknown options and RECURSIVEMATCH alone (or with REMOTE only) are BAD."""
    for line in (
        b'a LIST (BOGUS) "" ""',
        b'b LIST (RECURSIVEMATCH) "" "*"',
        b'c LIST (RECURSIVEMATCH REMOTE) "" "*"',
        b'd LIST "" "*" RETURN (BOGUS)',
    ):
        assert imap.run(line).startswith(line[:1] + b" BAD "), line


# -- RFC 5819 and RFC 6154 ------------------------------------------------------------------------


def test_rfc5819_example_list_status(imap, server):
    """RFC 5819 section 5: STATUS after each selectable mailbox, none for a \\Noselect one."""
    imap.make(["foo"])
    for index in range(3):
        imap.ok(b"a APPEND foo {%d+}\r\n" % len(message(str(index))) + message(str(index)))
    imap.ok(b"a APPEND foo (\\Seen) {%d+}\r\n" % len(message("x")) + message("x"))
    imap.ok(b"a APPEND INBOX {%d+}\r\n" % len(message("i")) + message("i"))
    for sub in ("cur", "new", "tmp"):  # a folder made by another program, without its parent
        (user_dir(server) / ".bar.baz" / sub).mkdir(parents=True)
    assert imap.run(b'A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))') == lines(
        '* LIST () "." "INBOX"',
        '* STATUS "INBOX" (MESSAGES 1 UNSEEN 1)',
        '* LIST (\\Noselect) "." "bar"',
        '* LIST () "." "foo"',
        '* STATUS "foo" (MESSAGES 4 UNSEEN 3)',
        "A01 OK LIST completed",
    )


def test_list_status_skips_names_listed_only_for_childinfo(imap):
    """RETURN (STATUS) with RECURSIVEMATCH: no STATUS for a parent listed only for CHILDINFO,
    nor for a subscribed name without a folder."""
    imap.make(["Foo", "Foo.Bar", "Baz"], ["Foo.Bar", "Baz", "Gone"])
    command = b'A1 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (STATUS (MESSAGES))'
    assert imap.run(command) == lines(
        '* LIST (\\Subscribed) "." "Baz"',
        '* STATUS "Baz" (MESSAGES 0)',
        '* LIST () "." "Foo" ("CHILDINFO" ("SUBSCRIBED"))',
        '* LIST (\\Subscribed \\NonExistent) "." "Gone"',
        "A1 OK LIST completed",
    )


def test_rfc6154_special_use_selection_and_return_option(imap):
    """RFC 6154 section 5.2: the SPECIAL-USE selection lists only special-use folders; the
    attributes are also given without it."""
    assert imap.run(b't3 LIST (SPECIAL-USE) "" "*" RETURN (SPECIAL-USE)') == lines(
        '* LIST (\\Archive) "." "Archive"',
        '* LIST (\\Drafts) "." "Drafts"',
        '* LIST (\\Junk) "." "Junk"',
        '* LIST (\\Sent) "." "Sent"',
        '* LIST (\\Trash) "." "Trash"',
        "t3 OK LIST completed",
    )
    assert b'* LIST (\\Sent) "." "Sent"\r\n' in imap.run(b't2 LIST "" "%"')


def test_rfc6154_create_with_use(imap):
    """CREATE ... (USE ...): accepted when the name carries that use here, else [USEATTR]."""
    imap.make()
    assert imap.run(b"t1 CREATE Sent (USE (\\Sent))") == b"t1 OK CREATE done\r\n"
    answer = imap.run(b"t2 CREATE MySent (USE (\\Sent))")
    assert answer.startswith(b"t2 NO [USEATTR] ")
    assert imap.run(b'l LIST "" MySent') == b"l OK LIST completed\r\n"


# -- RFC 3501 wildcards and LSUB ------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, matches, misses",
    [
        ("a.%", ["a.b", "a.c"], ["a.b.c", "a", "ab"]),
        ("a.*", ["a.b", "a.b.c"], ["a", "ab"]),
        ("a.%.%", ["a.b.c"], ["a.b", "a.b.c.d"]),
        ("a.*c", ["a.c", "a.b.c", "a.bc"], ["a.c.d"]),
        ("%t*4", ["test3.test4", "t4"], ["test3.test5"]),
        ("inbox", ["INBOX"], ["inbox.x"]),
        ("InBoX", ["INBOX"], []),
        ("a+b(", ["a+b("], ["aab("]),
    ],
)
def test_wildcards(pattern, matches, misses):
    """``%`` never crosses '.', ``*`` does; other characters stand for themselves; INBOX in any
    case."""
    test = pattern_matcher("", pattern)
    assert all(test(name) for name in matches)
    assert not any(test(name) for name in misses)


def test_reference_is_joined_to_the_pattern():
    """``LIST a. *`` is ``LIST "" a.*``."""
    assert pattern_matcher("a.", "*")("a.b.c") and not pattern_matcher("a.", "*")("b")


def test_parents_of_deep_folders_are_listed_noselect():
    """A folder whose parent is no folder lists the parent \\Noselect (with ``%`` and ``*``)."""
    query = Query("", ("%",))
    found = list_mailboxes(query, ["INBOX", "x.y.z"], [], {})
    assert [(entry.name, entry.attributes) for entry in found] == [
        ("INBOX", ()),
        ("x", ("\\Noselect",)),
    ]
    names = [entry.name for entry in list_mailboxes(Query("", ("*",)), ["x.y.z"], [], {})]
    assert names == ["x", "x.y", "x.y.z"]


def test_lsub_rules():
    """LSUB ``*test`` matches only names ending in test; ``%`` lists \\Noselect parents of
    subscribed children (RFC 3501 6.3.9); a subscribed name without a folder is \\Noselect."""
    folders = {"m", "m.test", "m.test2", "m.test2.test", "m.test3", "m.test3.test3"}
    subscribed = ["m.test", "m.test2.test", "m.test3.test3", "m.gone"]
    found = lsub_mailboxes("", "*test", folders, subscribed)
    assert [entry.name for entry in found] == ["m.test", "m.test2.test"]
    found = lsub_mailboxes("", "m.%", folders, subscribed)
    assert [(entry.name, entry.attributes) for entry in found] == [
        ("m.gone", ("\\Noselect",)),
        ("m.test", ()),
        ("m.test2", ("\\Noselect",)),
        ("m.test3", ("\\Noselect",)),
    ]


def test_list_and_lsub_over_the_wire(imap):
    """LIST "" "" gives the delimiter; ``%`` stays on its level; LSUB as the RFC says."""
    imap.make(["m.test", "m.test2.test", "m.test3.test4.test5"], ["m.test2.test"])
    assert imap.run(b'a LIST "" ""') == lines('* LIST (\\Noselect) "." ""', "a OK LIST completed")
    assert imap.run(b'b LIST "" m.%') == lines(
        '* LIST () "." "m.test"',
        '* LIST () "." "m.test2"',
        '* LIST () "." "m.test3"',
        "b OK LIST completed",
    )
    assert imap.run(b'c LSUB "" m.%') == lines(
        '* LSUB (\\Noselect) "." "m.test2"', "c OK LSUB completed"
    )
    assert imap.run(b'd LSUB "" *test') == lines(
        '* LSUB () "." "m.test2.test"', "d OK LSUB completed"
    )


# -- STATUS ---------------------------------------------------------------------------------------


def status_of(imap: Session, items: bytes) -> dict[str, int]:
    """The STATUS items of INBOX."""
    answer = imap.run(b"s STATUS INBOX (" + items + b")")
    found = re.search(rb'\* STATUS "INBOX" \(([^)]*)\)', answer)
    assert found, answer
    words = found.group(1).split()
    return {words[i].decode(): int(words[i + 1]) for i in range(0, len(words), 2)}


def test_status_size_deleted_highestmodseq(imap):
    """SIZE is the sum of the messages' sizes (CRLF lines), DELETED counts \\Deleted,
    HIGHESTMODSEQ is SELECT's and grows with each change."""
    assert status_of(imap, b"SIZE DELETED") == {"SIZE": 0, "DELETED": 0}
    sizes = []
    for index in range(3):
        data = message(f"message {index}", "x" * (100 * index) + "\r\n")
        sizes.append(len(data))
        imap.ok(b"a APPEND INBOX {%d+}\r\n" % len(data) + data)
    before = status_of(imap, b"HIGHESTMODSEQ")["HIGHESTMODSEQ"]
    imap.ok(b"e EXAMINE INBOX (CONDSTORE)")
    imap.ok(b"u UNSELECT")
    imap.ok(b"x SELECT INBOX")
    imap.ok(b"f STORE 2:3 +FLAGS (\\Deleted)")
    imap.ok(b"u UNSELECT")
    values = status_of(imap, b"MESSAGES SIZE DELETED HIGHESTMODSEQ UNSEEN")
    assert list(values) == ["MESSAGES", "SIZE", "DELETED", "HIGHESTMODSEQ", "UNSEEN"]
    assert values["SIZE"] == sum(sizes) and values["MESSAGES"] == 3
    assert values["DELETED"] == 2 and values["UNSEEN"] == 3
    assert values["HIGHESTMODSEQ"] > before
    answer = imap.run(b"e EXAMINE INBOX (CONDSTORE)")
    assert b"[HIGHESTMODSEQ %d]" % values["HIGHESTMODSEQ"] in answer


def test_status_of_a_missing_folder_and_bad_items(imap):
    """STATUS of no folder is NO [NONEXISTENT]; an unknown item is BAD."""
    assert imap.run(b"a STATUS Nowhere (SIZE)").startswith(b"a NO [NONEXISTENT]")
    assert imap.run(b"b STATUS INBOX (BIGNESS)").startswith(b"b BAD ")


def test_capabilities_announced(imap):
    """LIST-EXTENDED, LIST-STATUS and STATUS=SIZE are announced."""
    answer = imap.run(b"a CAPABILITY").split(b"\r\n")[0].split()
    assert {b"LIST-EXTENDED", b"LIST-STATUS", b"STATUS=SIZE"} <= set(answer)


# -- names that are not modified UTF-7 ------------------------------------------------------------


def test_invalid_modified_utf7_is_parsed_and_kept_apart():
    """An ASCII name that is not modified UTF-7 parses, marked with the reason."""
    command = parse_command(b"a SELECT &AGE-\r\n")
    assert command.mailbox == "&AGE-" and "non-canonical" in command.mailbox.undecodable


@pytest.mark.parametrize(
    "line",
    [
        b"a SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}",
        b'a EXAMINE "&Jjo"',
        b"a CREATE &AGE-",
        b"a DELETE &AGE-",
        b"a RENAME &AGE- x",
        b"a RENAME INBOX &AGE-",
        b"a SUBSCRIBE &AGE-",
        b"a UNSUBSCRIBE &AGE-",
        b"a STATUS &AGE- (MESSAGES)",
        b"a APPEND &AGE- {1+}\r\nx",
    ],
)
def test_invalid_modified_utf7_names_get_a_clean_no(imap, failures, line):
    """NO with a reason a person can read; no Python repr, nothing logged as a failure."""
    answer = imap.run(line)
    assert answer.startswith(b"a NO Mailbox name is not valid: "), answer
    assert b"b'" not in answer and b'b"' not in answer
    assert imap.run(b'l LIST "" *&AGE-*') == b"l OK LIST completed\r\n"
    assert not failures


def test_invalid_modified_utf7_patterns_list_nothing(imap, failures):
    """imaptest's atoms: a pattern that is no modified UTF-7 is OK and lists nothing."""
    answer = imap.run(b'a LIST "" !#$&\'+,-.0123456789:;<=>?@^_`|[}%*')
    assert answer == b"a OK LIST completed\r\n"
    assert imap.run(b'b LSUB "" &AGE-%') == b"b OK LSUB completed\r\n"
    assert imap.run(b'c LIST "" ~foo') == b"c OK LIST completed\r\n"
    assert not failures
