"""The process-wide cache of ENVELOPE, BODY and BODYSTRUCTURE (``mailgw.imap.cache``): bounded
in octets, least recently used out first, shared by every session, and never answering for a
folder whose UIDVALIDITY changed."""

from __future__ import annotations

import imaplib

import pytest
from test_imap import ALICE, connect, imap_server, inbox, message  # noqa: F401

from mailgw.imap import cache
from mailgw.imap.cache import ItemCache

ITEMS = "(ENVELOPE BODYSTRUCTURE BODY)"


def test_the_cache_holds_at_most_its_limit_and_drops_the_least_recently_used():
    items = ItemCache(limit=10_000)
    for n in range(100):
        items.put(("f", n), b"x" * 500)
    assert 0 < items.size <= 10_000
    assert items.get(("f", 0)) is None and items.get(("f", 99)) == b"x" * 500
    kept = len(items)
    oldest = 100 - kept
    assert items.get(("f", oldest)) is not None  # now the most recently used
    items.put(("f", "new"), b"y" * 500)
    assert items.get(("f", oldest)) is not None and items.get(("f", oldest + 1)) is None


def test_an_item_over_the_limit_is_not_kept_and_a_replaced_one_counts_once():
    items = ItemCache(limit=1_000)
    items.put("big", b"z" * 2_000)
    assert items.get("big") is None and items.size == 0
    items.put("k", b"a" * 100)
    size = items.size
    items.put("k", b"b" * 100)
    assert items.size == size and items.get("k") == b"b" * 100
    items.clear()
    assert len(items) == 0 and items.size == 0


def fetch_items(client: imaplib.IMAP4) -> list[bytes]:
    """Each message's FETCH response, literals inlined."""
    typ, data = client.fetch("1:*", ITEMS)
    assert typ == "OK"
    return [b"".join(item) if isinstance(item, tuple) else item for item in data]


def test_sessions_share_what_one_computed(imap_server, inbox):  # noqa: F811
    """A second session's FETCH gets the same octets and computes nothing new."""
    _, port = imap_server
    for n in range(3):
        inbox.append(message(f"shared {n}"))
    cache.items.clear()
    first = connect(port)
    first.select("INBOX", readonly=True)
    answer = fetch_items(first)
    assert len(cache.items) == 9  # three items of three messages
    second = connect(port)
    second.select("INBOX", readonly=True)
    assert fetch_items(second) == answer
    assert len(cache.items) == 9
    assert b'"shared 2"' in answer[2] and b"BODYSTRUCTURE (" in answer[0]
    first.logout()
    second.logout()


def test_a_new_uidvalidity_is_not_answered_from_the_cache(imap_server):  # noqa: F811
    """Folder deleted and made again: UID 1 is another message, and its ENVELOPE says so."""
    _, port = imap_server
    client = connect(port)
    client.create("Work")
    client.append("Work", None, None, message("the first", "one\r\n"))
    client.select("Work")
    old_validity = client.response("UIDVALIDITY")[1]
    assert b'"the first"' in fetch_items(client)[0]
    client.close()
    assert client.delete("Work")[0] == "OK"
    client.create("Work")
    client.append("Work", None, None, message("the second", "two, longer\r\n"))
    client.select("Work")
    assert client.response("UIDVALIDITY")[1] != old_validity
    answer = fetch_items(client)[0]
    assert b'"the second"' in answer and b'"the first"' not in answer
    client.logout()


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.items.clear()
    yield
    cache.items.clear()
