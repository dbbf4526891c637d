"""The fixtures of the RFC 9051 tests (``pytest_plugins = ("imap_replay_fixtures",)``): an
IMAP listener with Alice, and raw connections to it (``imap_replay.Client``)."""

from __future__ import annotations

import pytest
from imap_replay import Client
from test_imap import ALICE, PASSWORD

from mailgw.imap import make_factory


@pytest.fixture
def port(server):
    """Alice and an IMAP listener."""
    server.add_user(ALICE, PASSWORD)
    return server.listen(make_factory)


@pytest.fixture
def connect(port):
    """Make logged-in connections (``ENABLE IMAP4rev2`` done unless ``rev2=False``)."""
    clients = []

    def make(**options) -> Client:
        clients.append(Client(port, **options))
        return clients[-1]

    yield make
    for client in clients:
        client.close()
