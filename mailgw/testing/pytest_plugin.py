"""pytest fixtures for ``mailgw.testing.MailServer``, registered by the ``pytest11`` entry point.

- ``mail_server``: a fresh server for each test;
- ``mail_server_session``: one server for the whole session, ``clear()``ed (messages and faults
  removed, users kept) before each test that uses it.

Choose the modes with the marker ``@pytest.mark.mail_server(auth_required=True, ...)`` (any
``MailServer`` keyword argument; it applies to ``mail_server`` only).  Nothing is imported or
started until a test asks for one of the fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``mail_server`` marker."""
    config.addinivalue_line(
        "markers",
        "mail_server(**options): MailServer keyword arguments for the mail_server fixture "
        "(catch_all, auth_required, allow_plaintext, domains, hostname, services)",
    )


@pytest.fixture
def mail_server(request: pytest.FixtureRequest) -> Iterator[object]:
    """A MailServer started for this test and stopped after it."""
    from mailgw.testing import MailServer

    marker = request.node.get_closest_marker("mail_server")
    options = dict(marker.kwargs) if marker is not None else {}
    with MailServer(**options) as server:
        yield server


@pytest.fixture(scope="session")
def _mail_server_shared() -> Iterator[object]:
    from mailgw.testing import MailServer

    with MailServer() as server:
        yield server


@pytest.fixture
def mail_server_session(_mail_server_shared: object) -> object:
    """The session's MailServer (default modes), cleared before this test."""
    _mail_server_shared.clear()
    return _mail_server_shared
