"""IMAP4rev1 over the mail store: ``make_factory(ctx)`` for the listener, ``make_avatar`` for the
realm (see ``server.py`` for what is reused from Twisted's ``IMAP4Server``)."""

from mailgw.imap.account import make_avatar
from mailgw.imap.server import make_factory

__all__ = ["make_avatar", "make_factory"]
