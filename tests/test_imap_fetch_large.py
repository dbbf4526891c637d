"""Messages of CHUNK octets or more are sent from their file in pieces (never held whole):
what arrives is the stored message, octet for octet, with BODY[], BODY.PEEK[], RFC822 and a
partial, beside small messages, and also when the message is expunged while it is sent."""

from __future__ import annotations

from test_imap import ALICE, connect, imap_server, inbox, message  # noqa: F401

from mailgw.imap import fetch


def big_message(subject: str, lines: int) -> bytes:
    return message(subject, "".join(f"line {n:07d} of a large body\r\n" for n in range(lines)))


def test_large_bodies_arrive_exactly(imap_server, inbox, monkeypatch):  # noqa: F811
    _, port = imap_server
    pieces = []
    read = fetch._Piecewise.read
    monkeypatch.setattr(fetch._Piecewise, "read", lambda self: pieces.append(1) or read(self))
    bodies = [
        message("small"),
        big_message("big", 120_000),
        message("after"),
        big_message("second big", 20_000),
    ]
    assert len(bodies[1]) > 10 * fetch.CHUNK and len(bodies[3]) > fetch.CHUNK
    for data in bodies:
        inbox.append(data)
    client = connect(port)
    client.select("INBOX", readonly=True)
    typ, fetched = client.fetch("1:4", "(BODY.PEEK[] RFC822.SIZE)")
    assert typ == "OK"
    assert [item[1] for item in fetched if isinstance(item, tuple)] == bodies
    assert len(pieces) >= 12  # the two large ones in pieces of at most CHUNK octets
    typ, fetched = client.fetch("2", "(RFC822 BODY.PEEK[]<1000.20>)")
    assert typ == "OK"
    literals = [item[1] for item in fetched if isinstance(item, tuple)]
    assert literals == [bodies[1], bodies[1][1000:1020]]
    client.logout()


def test_a_large_message_expunged_while_sent_arrives_whole(imap_server, inbox):  # noqa: F811
    _, port = imap_server
    big = big_message("going", 200_000)
    inbox.append(big)
    reader = connect(port)
    reader.select("INBOX")
    remover = connect(port)
    remover.select("INBOX")
    reader.send(b"a1 FETCH 1 (BODY[])\r\n")
    remover.store("1", "+FLAGS", "\\Deleted")
    remover.expunge()
    head = reader.readline()
    assert head.startswith(b"* 1 FETCH (BODY[] {%d}" % len(big))
    assert reader.read(len(big)) == big
    rest = reader.readline()
    while not rest.startswith(b"a1 "):
        rest = reader.readline()
    assert rest.startswith(b"a1 OK")
    reader.logout()
    remover.logout()
