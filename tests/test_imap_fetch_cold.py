"""A FETCH batch that meets a file not in the page cache keeps what it serialised before it
and reads the rest in the worker thread: every message arrives once, in order, exact."""

from __future__ import annotations

import os

from test_imap import ALICE, connect, imap_server, inbox, message  # noqa: F401


def test_messages_after_an_evicted_file_arrive_once_in_order(imap_server, inbox):  # noqa: F811
    server, port = imap_server
    stored = [message(f"m {n}", f"body {n}\r\n" * 300) for n in range(6)]
    for data in stored:
        inbox.append(data)
    client = connect(port)
    client.select("INBOX", readonly=True)
    assert client.fetch("1:6", "(BODY.PEEK[])")[0] == "OK"  # all in the page cache now
    client.select("INBOX", readonly=True)  # and listed in cur/, where that FETCH moved them
    for info in inbox.messages()[2::2]:  # the 3rd and the 5th evicted
        fd = os.open(inbox.path / info.subdir / info.filename, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    typ, data = client.fetch("1:6", "(BODY.PEEK[] UID)")
    assert typ == "OK"
    literals = [item for item in data if isinstance(item, tuple)]
    assert [body for _, body in literals] == stored
    assert [head.split()[0] for head, _ in literals] == [b"%d" % n for n in range(1, 7)]
    client.logout()
