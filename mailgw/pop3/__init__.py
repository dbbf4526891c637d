"""POP3 (RFC 1939, with CAPA, RESP-CODES, PIPELINING, TOP, UIDL and STLS) over mailgw's store.

``make_factory(ctx)`` builds the listener's factory (``server``); ``make_avatar(store, address)``
is what the realm hands out for ``twisted.mail.pop3.IMailbox`` (``mailbox``).
"""

from mailgw.pop3.mailbox import make_avatar
from mailgw.pop3.server import make_factory

__all__ = ["make_avatar", "make_factory"]
