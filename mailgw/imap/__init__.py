"""IMAP4rev1 over the mail store, on mailgw's own engine: ``make_factory(ctx)`` for the listener,
``make_avatar`` and ``IAccount`` for the realm (see ``session.py`` for the engine's layout)."""

from mailgw.imap.account import IAccount, make_avatar
from mailgw.imap.server import make_factory

__all__ = ["IAccount", "make_avatar", "make_factory"]
