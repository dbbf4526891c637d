"""mailgw as a test fixture: the real SMTP, POP3 and IMAP services on ephemeral loopback ports.

``MailServer`` runs them over a temporary data directory with a CA generated for the run, captures
what applications send, seeds mailboxes for applications that read, and injects faults
(``Fault``).  ``mailgw.testing.pytest_plugin`` wraps it in pytest fixtures.  The names are
imported on first use, so loading the pytest plugin costs nothing until a fixture is used.
"""

from __future__ import annotations

import importlib

__all__ = ["CapturedMessage", "Fault", "FaultTable", "MailServer"]

_HOMES = {
    "CapturedMessage": "mailgw.testing.server",
    "MailServer": "mailgw.testing.server",
    "Fault": "mailgw.testing.faults",
    "FaultTable": "mailgw.testing.faults",
}


def __getattr__(name: str) -> object:
    """Import ``MailServer`` and friends when first asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module 'mailgw.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
