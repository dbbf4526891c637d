"""FETCH's one-pass writer (``mailgw.imap.fetch.fetch_responses``) as imaplib sees it.

The common items (UID, FLAGS, RFC822.SIZE, INTERNALDATE, BODY[]) are answered without Twisted's
per-message path; these tests check that the answers are the same as that path's, over ranges
that span several written chunks and a body larger than one chunk, and that a SELECT of an
unchanged folder (served from a shared snapshot) still sees every change.
"""

from __future__ import annotations

import re
from pathlib import Path

from test_imap import ALICE, connect, imap_server, inbox, message  # noqa: F401

from mailgw.imap import fetch

_ITEM = re.compile(rb"(UID \d+|FLAGS \([^)]*\)|RFC822\.SIZE \d+|INTERNALDATE \"[^\"]+\")")


def test_metadata_of_many_messages_matches_the_general_path(
    imap_server,  # noqa: F811
    inbox,  # noqa: F811
    monkeypatch,
):
    """UID/FLAGS/RFC822.SIZE/INTERNALDATE of 600 messages (written in chunks of 4 KiB here)
    are the same as when ENVELOPE forces Twisted's per-message path, in order."""
    monkeypatch.setattr(fetch, "CHUNK", 4096)
    _, port = imap_server
    for i in range(600):
        flags = {"\\Seen", "$Label1"} if i % 3 == 0 else {"\\Flagged"} if i % 3 == 1 else set()
        inbox.append(message(f"m {i}"), flags=flags, internal_date=1_600_000_000.0 + i * 3607)
    client = connect(port)
    client.select("INBOX")
    typ, fast = client.uid("FETCH", "1:*", "(FLAGS RFC822.SIZE INTERNALDATE)")
    assert typ == "OK" and len(fast) == 600
    typ, general = client.uid("FETCH", "1:*", "(FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)")
    assert typ == "OK" and len(general) == 600
    for number, (ours, theirs) in enumerate(zip(fast, general, strict=True), 1):
        assert ours.startswith(b"%d (FLAGS (" % number)
        assert _ITEM.findall(ours) == _ITEM.findall(theirs)
    assert b"FLAGS ($Label1 \\Seen)" in fast[0]
    assert b'INTERNALDATE "13-Sep-2020 12:26:40 +0000"' in fast[0]
    typ, some = client.fetch("2,5:6,599:*", "(UID)")
    assert [line.split()[0] for line in some] == [b"2", b"5", b"6", b"599", b"600"]
    client.logout()


def test_bodies_larger_than_a_chunk_arrive_whole(imap_server, inbox):  # noqa: F811
    """BODY.PEEK[] of a message over one written chunk, between small ones, is exact."""
    _, port = imap_server
    big = message("big", "".join(f"line {n:07d} of a long body\r\n" for n in range(12000)))
    assert len(big) > fetch.CHUNK
    bodies = [message("small 1"), big, message("small 2")]
    for data in bodies:
        inbox.append(data)
    client = connect(port)
    client.select("INBOX", readonly=True)
    typ, fetched = client.fetch("1:3", "(UID BODY.PEEK[] RFC822.SIZE)")
    assert typ == "OK"
    literals = [item for item in fetched if isinstance(item, tuple)]
    assert [body for _, body in literals] == bodies
    tails = [item for item in fetched if not isinstance(item, tuple)]
    sizes = [int(re.search(rb"RFC822\.SIZE (\d+)", tail).group(1)) for tail in tails]
    assert sizes == [len(data) for data in bodies]
    client.logout()


def test_select_again_sees_changes_made_since(imap_server, inbox):  # noqa: F811
    """A second SELECT of an unchanged folder reports it as before; after a delivery and a
    flag change by another session, a SELECT reports the new count, flags and UNSEEN."""
    _, port = imap_server
    for i in range(3):
        inbox.append(message(f"m {i}"), flags={"\\Seen"})
    first = connect(port)
    assert first.select("INBOX") == ("OK", [b"3"])
    first.close()
    again = connect(port)
    assert again.select("INBOX") == ("OK", [b"3"])
    assert again.response("UNSEEN") == ("UNSEEN", [None])
    again.store("2", "-FLAGS", "\\Seen")
    again.store("1", "+FLAGS", "$Done")
    inbox.append(message("new"), flags={"\\Seen"})
    third = connect(port)
    assert third.select("INBOX") == ("OK", [b"4"])
    assert third.response("UNSEEN") == ("UNSEEN", [b"2"])
    assert b"$Done" in third.response("FLAGS")[1][0]
    typ, flags = third.fetch("1:*", "(FLAGS)")
    assert [b"\\Seen" in line for line in flags] == [True, False, True, True]
    for client in (again, third):
        client.logout()


def test_noop_reports_changes_other_programs_made_on_disk(imap_server, inbox):  # noqa: F811
    """A file renamed (flag added) and one removed by another program are reported at NOOP,
    as FETCH and EXPUNGE; a NOOP with nothing changed reports nothing."""
    server, port = imap_server
    for i in range(4):
        inbox.append(message(f"m {i}"), flags={"\\Seen"})
    client = connect(port)
    client.select("INBOX")
    client.noop()
    assert client.noop() == ("OK", [b"NOOP completed"])
    cur = Path(server.config.mail_dir) / "example.test" / "alice" / "cur"
    names = sorted(cur.iterdir())
    assert len(names) == 4 and all(name.name.endswith(":2,S") for name in names)
    names[1].rename(names[1].with_name(names[1].name[: -len("S")] + "FS"))
    names[2].unlink()
    typ, _ = client.noop()
    assert typ == "OK"
    assert client.response("EXPUNGE") == ("EXPUNGE", [b"3"])
    assert client.response("FETCH")[1] == [b"2 (FLAGS (\\Flagged \\Seen))"]
    typ, flags = client.fetch("1:*", "(FLAGS)")
    assert [b"\\Flagged" in line for line in flags] == [False, True, False]
    client.logout()
