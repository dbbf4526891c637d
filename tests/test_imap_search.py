"""SEARCH's evaluator over a real Maildir folder: the criteria trees the parser makes, the
compiled predicate and the plain-text shortcut give the answers RFC 3501 asks for (decoded
base64 and quoted-printable text, encoded words, charsets), on the reactor and in a thread."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest

from mailgw.imap import search
from mailgw.imap.search import Candidate, SearchSyntaxError, evaluate, find, matching
from mailgw.imap.wire.parser import parse_command
from mailgw.store import MaildirStore

USER = "ann@example.test"
DAY = calendar.timegm((2024, 2, 1, 12, 0, 0))

CORPUS = [
    # 1: plain ASCII, word in the body
    (
        b"Subject: plain\r\nDate: Thu, 1 Feb 2024 10:00:00 +0000\r\n\r\nA trip to Zanzibar.\r\n",
        {"\\Seen"},
    ),
    # 2: the word only base64-encoded
    (
        b"Subject: b64\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b"dmlzaXQgemFuemliYXIgc29vbg==\r\n",
        set(),
    ),
    # 3: quoted-printable, the word split by a soft line break
    (
        b"Subject: qp\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nzan=\r\nzibar =C3=A9t=C3=A9\r\n",
        {"\\Flagged", "$Work"},
    ),
    # 4: the word in an encoded-word subject only
    (b"Subject: =?utf-8?q?Zanzi=62ar?=\r\n\r\nnothing here\r\n", {"\\Seen", "\\Answered"}),
    # 5: latin-1 body with a non-ASCII word, multipart
    (
        b"Subject: multi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\ncaf\xe9 cr\xe8me\r\n--b--\r\n",
        set(),
    ),
    # 6: near miss
    (b"Subject: near\r\nFrom: Zanzi Bar <zb@example.test>\r\n\r\nzanzi bar\r\n", {"\\Deleted"}),
]


@pytest.fixture
def folder(tmp_path: Path):
    store = MaildirStore(tmp_path / "mail", tmp_path / "tmp", "mx.example.test")
    folder = store.folder(USER, "INBOX")
    for data, flags in CORPUS:
        folder.append(data, flags, internal_date=DAY + 86400 * len(folder.messages()))
    return folder


def rows(folder, recent=frozenset()):
    return [(seq, info, info.uid in recent) for seq, info in enumerate(folder.messages(), 1)]


def criteria(text: str) -> tuple:
    return parse_command(b"a SEARCH " + text.encode() + b"\r\n").criteria


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("ALL", [1, 2, 3, 4, 5, 6]),
        ("UNSEEN", [2, 3, 5, 6]),
        ("SEEN NOT ANSWERED", [1]),
        ("OR FLAGGED DELETED", [3, 6]),
        ("KEYWORD $work", [3]),
        ("UNKEYWORD $WORK", [1, 2, 4, 5, 6]),
        ("RECENT", [2, 5]),
        ("NEW", [2, 5]),
        ("OLD", [1, 3, 4, 6]),
        ("2:4", [2, 3, 4]),
        ("*", [6]),
        ("UID 5:*", [5, 6]),
        ("LARGER 100", [2, 3, 5]),
        ("SMALLER 60", [4]),
        ("SINCE 3-Feb-2024", [3, 4, 5, 6]),
        ("BEFORE 2-Feb-2024", [1]),
        ("ON 2-Feb-2024", [2]),
        ("SENTON 1-Feb-2024", [1]),
        ("SUBJECT zanzibar", [4]),
        ('FROM "zanzi bar"', [6]),
        ('HEADER Date ""', [1]),
        ("BODY zanzibar", [1, 2, 3]),
        ("TEXT ZANZIBAR", [1, 2, 3, 4]),
        ('TEXT "zanzi bar"', [6]),
        ('CHARSET UTF-8 BODY "café"', [5]),
        ('CHARSET UTF-8 BODY "été"', [3]),
        ("NOT TEXT zanzibar UNSEEN", [5, 6]),
        ("TEXT boundary", [5]),
    ],
)
def test_criteria_find_what_rfc_3501_says(folder, text, found):
    tree = criteria(text)
    assert matching(folder, tree, rows(folder, recent={2, 5}), False) == found
    uids = [info.uid for info in folder.messages()]
    assert matching(folder, tree, rows(folder, recent={2, 5}), True) == [uids[n - 1] for n in found]


def test_candidates_answer_as_rows(folder):
    """ordering's form: snapshots with \\Recent among the flags."""
    candidates = [
        Candidate(
            seq,
            info.uid,
            info.flags | ({"\\Recent"} if seq == 2 else set()),
            info.size,
            info.internal_date,
        )
        for seq, info in enumerate(folder.messages(), 1)
    ]
    assert evaluate(folder, criteria("RECENT"), candidates, False) == [2]
    assert evaluate(folder, criteria("TEXT zanzibar UNSEEN"), candidates, False) == [2, 3]


def test_a_message_gone_is_left_out(folder):
    listed = rows(folder)
    folder.expunge([listed[0][1].uid])
    assert matching(folder, criteria("TEXT zanzibar"), listed, False) == [2, 3, 4]
    assert matching(folder, criteria("ALL"), listed, False) == [1, 2, 3, 4, 5, 6]


def test_an_unknown_criterion_is_refused(folder):
    assert search.unsupported(("AND", [("MODSEQ", 3)])) == "MODSEQ"
    with pytest.raises(SearchSyntaxError):
        matching(folder, ("AND", [("MODSEQ", 3)]), rows(folder), False)


def test_nothing_to_search(folder):
    assert matching(folder, criteria("*"), [], False) == []


def test_flag_searches_are_answered_at_once(folder):
    """No file to read and a small view: the Deferred has fired when ``find`` returns."""
    answered = []
    find(folder, criteria("UNSEEN"), rows(folder), False).addCallback(answered.append)
    assert answered == [[2, 3, 5, 6]]
