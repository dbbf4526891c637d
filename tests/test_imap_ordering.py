"""RFC 5256 SORT and THREAD, pure (``mailgw.imap.ordering``): base subjects rule by rule, sent
dates, address keys, every sort key, and threads on the RFC's examples and on tricky
References (loops, lost parents, duplicate Message-IDs, conflicting parents)."""

from __future__ import annotations

import pytest
from test_imap_ordering_e2e import ORDEREDSUBJECT, REFERENCES, example_messages

from mailgw.imap import ordering
from mailgw.imap.mime.headers import field_value, split_fields
from mailgw.imap.ordering import Message, base_subject, message_ids, sent_date


def parsed(seq: int, data: bytes, internal_date: float = 0.0, uid: int | None = None) -> Message:
    """A Message from the octets of a message's header, as the handlers read it."""
    fields: dict = {}
    for name, raw in split_fields(data):
        if name in ordering.FIELDS and name not in fields:
            fields[name] = field_value(raw)
    return Message(seq, uid or seq, len(data), internal_date, fields)


def mail(seq: int, internal_date: float = 0.0, uid: int | None = None, **headers) -> Message:
    """A Message with the header fields given (``message_id=`` for Message-ID and so on)."""
    text = "".join(f"{k.rstrip('_').replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return parsed(seq, text.encode() + b"\r\n", internal_date, uid)


def threads(messages: list[Message], by_uid: bool = False) -> bytes:
    """THREAD REFERENCES of ``messages``, serialised."""
    return ordering.serialise(ordering.references(messages), by_uid)


# -- base subject (RFC 5256 2.1) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "base", "reply"),
    [
        (b"Hello", "HELLO", False),  # folded for comparison (i;unicode-casemap: titlecase)
        (b"=?utf-8?q?R=C3=A9sum=C3=A9?=", "RE\u0301SUME\u0301", False),  # (1) decoded, NFKD
        (b"=?iso-8859-1?q?r=E9sum=E9?=", "RE\u0301SUME\u0301", False),  # any charset, one key
        (b"a \t  b\t\tc", "A B C", False),  # (1) blanks packed
        (b"=?utf-8?q?a?= =?utf-8?q?b?=", "AB", False),  # blanks between encoded-words go
        (b"=?x-unknown?q?caf=C3=A9?=", "CAFE\u0301", False),  # unknown charset: read as UTF-8
        (b"hello (fwd)", "HELLO", True),  # (2) trailer
        (b"hello (fwd) (FWD)  ", "HELLO", True),  # (2) repeated
        (b"hello   ", "HELLO", False),
        (b"Re: hello", "HELLO", True),  # (3) leaders
        (b"RE:hello", "HELLO", True),
        (b"Fwd: hello", "HELLO", True),
        (b"fw : hello", "HELLO", True),
        (b"Re[2]: hello", "HELLO", True),  # a blob in the leader
        (b"[list] Re: hello", "HELLO", True),  # blobs before it
        (b"Re: Fwd: re: hello", "HELLO", True),  # (5) repeated
        (b"Ad: Re: hello", "AD: RE: HELLO", False),  # not a leader
        (b"Reply: hello", "REPLY: HELLO", False),
        (b"[list] hello", "HELLO", False),  # (4) a blob with text after it
        (b"[list]", "[LIST]", False),  # ... not when nothing would remain
        (b"[a][b] hello", "HELLO", False),
        (b"[fwd: hello]", "HELLO", True),  # (6) forward wrapper, then from (2) again
        (b"[Fwd: Re: hello (fwd)]", "HELLO", True),
        (b"Re: [FWD: c]", "C", True),
        (b"[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "B", True),
        (b"", "", False),
        (b"   ", "", False),
        (b"=?iso-8859-1?q?_?=", "", False),
        (b"Re:", "", True),
    ],
)
def test_base_subject_rules(subject, base, reply):
    assert base_subject(subject) == (base, reply)


def test_broken_encoded_words_never_raise():
    for value in (b"=?utf-8?b?####?=", b"=?utf-8?q?=ZZ?=", b"=?", b"\xff\xfe =?utf-8?q?a?="):
        subject, _ = base_subject(value)
        assert isinstance(subject, str)


# -- keys ----------------------------------------------------------------------------------------


def test_sent_date_in_utc_with_the_internal_date_when_none_parses():
    east = mail(1, date="Mon, 6 Nov 2023 10:00:00 +0100")
    west = mail(2, date="Mon, 6 Nov 2023 01:30:00 -0800")
    assert sent_date(west) - sent_date(east) == 1800  # 09:30 and 09:00 UTC
    assert sent_date(mail(3, 1234.9)) == 1234
    assert sent_date(mail(4, 99.0, date="not a date")) == 99
    assert sent_date(mail(5, 7.0, date="")) == 7


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (b"Zed <zed@example.org>", "ZED"),
        (b"zed@example.org, alice@example.org", "ZED"),  # the first address only
        (b'"Bob, Jr" <bob@example.org>', "BOB"),
        (b"team: a@example.org, b@example.org;", "TEAM"),  # a group: its name
        (b"<@route.example:carl@example.org>", "CARL"),
        (b"=?utf-8?q?Ann?= <ann@example.org>", "ANN"),
        (b"", ""),
    ],
)
def test_address_key_is_the_first_mailbox(value, key):
    assert ordering.first_mailbox(value) == key


# -- SORT ----------------------------------------------------------------------------------------


@pytest.fixture
def box() -> list[Message]:
    """Five messages whose keys all order differently."""
    return [
        mail(1, 500.0, subject="Re: b", date="1 Jan 2020 00:00 +0000", from_="c@x", to="e@x"),
        mail(2, 100.0, subject="a", date="1 Jan 2021 00:00 +0000", from_="a@x", cc="z@x"),
        mail(3, 300.0, subject="C", from_="B@x", to="a@x", cc="y@x"),
        mail(4, 300.0, subject="b", date="1 Jan 2019 00:00 +0000", from_="a@x", to="d@x"),
        mail(5, 200.0, subject="[x] d", date="bogus", to="b@x", cc="x@x"),
    ]


@pytest.mark.parametrize(
    ("keys", "order"),
    [
        ("ARRIVAL", [2, 5, 3, 4, 1]),  # 3 and 4 tie: sequence order
        ("DATE", [5, 3, 4, 1, 2]),  # 3 and 5 have no usable Date: their internal date
        ("SUBJECT", [2, 1, 4, 3, 5]),
        ("FROM", [5, 2, 4, 3, 1]),  # none sorts first
        ("TO", [2, 3, 5, 4, 1]),
        ("CC", [1, 4, 5, 3, 2]),
        ("SIZE", None),  # checked below: by octets
        ("REVERSE ARRIVAL", [1, 3, 4, 5, 2]),  # ties stay in sequence order
        ("REVERSE SUBJECT", [5, 3, 1, 4, 2]),
        ("SUBJECT REVERSE ARRIVAL", [2, 1, 4, 3, 5]),
        ("FROM REVERSE DATE", [5, 2, 4, 3, 1]),
        ("REVERSE FROM ARRIVAL", [1, 3, 2, 4, 5]),
    ],
)
def test_sort_by_each_key(box, keys, order):
    parsed_keys, reverse = [], False
    for word in keys.split():
        if word == "REVERSE":
            reverse = True
            continue
        parsed_keys.append((reverse, word))
        reverse = False
    got = [m.seq for m in ordering.sort(box, tuple(parsed_keys))]
    if order is None:
        order = [m.seq for m in sorted(box, key=lambda m: (m.size, m.seq))]
    assert got == order


def test_sort_of_nothing_and_uids():
    assert ordering.sort([], ((False, "DATE"),)) == []
    messages = [mail(1, 2.0, uid=10), mail(2, 1.0, uid=20)]
    assert [m.number(True) for m in ordering.sort(messages, ((False, "ARRIVAL"),))] == [20, 10]


# -- THREAD --------------------------------------------------------------------------------------


def example(text: bytes, by_subject: bool) -> list[Message]:
    return [parsed(n, data) for n, data in sorted(example_messages(text, by_subject).items())]


def test_the_rfc_examples():
    """RFC 5256 section 4's THREAD answers, from messages that thread so."""
    refs = ordering.references(example(REFERENCES, False))
    assert ordering.serialise(refs, True) == REFERENCES
    ordered = ordering.ordered_subject(example(ORDEREDSUBJECT, True))
    assert ordering.serialise(ordered, False) == ORDEREDSUBJECT
    assert ordering.serialise([], False) == b""


def test_thread_grammar_chains_and_branches():
    """(1 2 (3 4)(5)): a chain of only children needs no parentheses, branches do."""
    messages = [
        mail(1, 1, message_id="<1@x>"),
        mail(2, 2, message_id="<2@x>", references="<1@x>"),
        mail(3, 3, message_id="<3@x>", references="<1@x> <2@x>"),
        mail(4, 4, message_id="<4@x>", in_reply_to="<3@x>"),
        mail(5, 5, message_id="<5@x>", references="<2@x>"),
    ]
    assert threads(messages) == b"(1 2 (3 4)(5))"


def test_lost_parents_make_dummies():
    """Two replies to a message not in the mailbox hang under a dummy; one is promoted."""
    messages = [
        mail(1, 1, message_id="<1@x>", references="<lost@x>", subject="one"),
        mail(2, 2, message_id="<2@x>", references="<lost@x> <2b@x>", subject="two"),
        mail(3, 3, message_id="<3@x>", references="<gone@x>", subject="three"),
    ]
    assert threads(messages) == b"((1)(2))(3)"


def test_loops_are_not_made():
    """A References loop (a cites b, b cites a) is cut; a message whose References end with
    itself has no parent (as Dovecot: its own last reference replaces the parent)."""
    messages = [
        mail(1, 1, message_id="<a@x>", references="<b@x>"),
        mail(2, 2, message_id="<b@x>", references="<a@x>"),
        mail(3, 3, message_id="<c@x>", references="<a@x> <b@x> <c@x>"),
        mail(4, 4, message_id="<d@x>", references="<d@x>"),
    ]
    assert threads(messages) == b"(2 1)(3)(4)"


def test_a_messages_own_references_win_over_a_guess():
    """As Dovecot: #2 guesses that <c> is a child of <a>; <c> itself says its parent is <b>,
    which descends from it, so it becomes a root (imaptest's thread script)."""
    messages = [
        mail(1, 17, message_id="<a@b>"),
        mail(2, 15, message_id="<b@b>", references="<a@b> <c@b>"),
        mail(3, 16, message_id="<c@b>", references="<b@b>"),
    ]
    assert threads(messages) == b"(3 2)(1)"


def test_duplicate_message_ids():
    """The first message keeps the Message-ID (a reply goes under it); the second is alone."""
    messages = [
        mail(1, 1, message_id="<dup@x>", subject="first"),
        mail(2, 2, message_id="<dup@x>", subject="second"),
        mail(3, 3, message_id="<r@x>", references="<dup@x>", subject="Re: first"),
    ]
    assert threads(messages) == b"(1 3)(2)"
    same = [mail(1, 1, message_id="<a@b>"), mail(2, 1, message_id="<a@b>")]
    assert threads(same) == b"(1)(2)"


def test_in_reply_to_only_without_references():
    messages = [
        mail(1, 1, message_id="<1@x>"),
        mail(2, 2, message_id="<2@x>"),
        mail(3, 3, message_id="<3@x>", references="<2@x>", in_reply_to="<1@x>"),
        mail(4, 4, message_id="<4@x>", in_reply_to="junk <1@x> <2@x>"),
    ]
    assert threads(messages) == b"(1 4)(2 3)"


def test_threads_gathered_by_subject():
    """Step 5: a reply's thread goes under the original; two originals, or two replies, under
    a dummy; empty subjects stay apart."""
    messages = [
        mail(1, 1, subject="Budget"),
        mail(2, 2, subject="Re: budget"),
        mail(3, 3, subject="Lunch"),
        mail(4, 4, subject="[list] lunch"),
        mail(5, 5, subject=""),
        mail(6, 6, subject=""),
        mail(7, 0, subject="Re: Fwd: minutes"),
        mail(8, 8, subject="Re: minutes"),
    ]
    assert threads(messages) == b"((7)(8))(1 2)((3)(4))(5)(6)"


def test_siblings_and_roots_by_sent_date_then_uid():
    messages = [
        mail(1, 50, message_id="<p@x>"),
        mail(2, 9, message_id="<q@x>", references="<p@x>", date="1 Jan 2020 00:00 +0000"),
        mail(3, 1, message_id="<r@x>", references="<p@x>", date="1 Jan 2019 00:00 +0000"),
        mail(4, 9, message_id="<s@x>", references="<p@x>", date="1 Jan 2020 00:00 +0000"),
        mail(5, 10, message_id="<t@x>"),
    ]
    assert threads(messages) == b"(5)(1 (3)(2)(4))"
    assert threads([mail(1, 9, uid=40), mail(2, 1, uid=30)], by_uid=True) == b"(30)(40)"


def test_ordered_subject():
    """One thread per base subject, empty ones too; a lone child written as a chain."""
    messages = [
        mail(1, 3, subject="b"),
        mail(2, 1, subject="Re: a"),
        mail(3, 4, subject="a"),
        mail(4, 2, subject="Re: B"),
        mail(5, 5),
        mail(6, 6, subject=""),
        mail(7, 7, subject="Fwd: a"),
    ]
    assert ordering.serialise(ordering.ordered_subject(messages), False) == b"(2 (3)(7))(4 1)(5 6)"


def test_deep_threads_do_not_exhaust_the_stack():
    chain = [mail(1, 0, message_id="<0@x>")]
    chain += [
        mail(n + 1, n, message_id=f"<{n}@x>", in_reply_to=f"<{n - 1}@x>") for n in range(1, 3000)
    ]
    assert threads(chain) == b"(" + b" ".join(b"%d" % n for n in range(1, 3001)) + b")"
    comb = [mail(1, 0, message_id="<0@x>")]
    for n in range(1, 1500):
        comb.append(mail(2 * n, 2 * n, message_id=f"<{n}@x>", in_reply_to=f"<{n - 1}@x>"))
        comb.append(mail(2 * n + 1, 2 * n + 1, message_id=f"<l{n}@x>", in_reply_to=f"<{n - 1}@x>"))
    assert threads(sorted(comb, key=lambda m: m.seq)).count(b"(") == 2 * 1499 + 1


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        (b"<a@b>", ["a@b"]),
        (b"  <a@b> (comment) <c@d>", ["a@b", "c@d"]),
        (b"<a @ b>", ["a@b"]),  # blanks inside are dropped
        (b"<no-at-sign> <x@y>", ["x@y"]),
        (b'<"odd id"@example.org>', ["odd id@example.org"]),
        (b"<unclosed@x", []),
        (b"", []),
        (b"no brackets at all", []),
    ],
)
def test_message_ids_as_dovecot_reads_them(value, ids):
    assert message_ids(value) == ids
