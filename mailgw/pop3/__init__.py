"""POP3 (RFC 1939, with CAPA, RESP-CODES, PIPELINING, TOP, UIDL, STLS and AUTH PLAIN) over mailgw's
store, one session per maildrop at a time.

``make_factory(ctx)`` builds the listener's factory (``server``); ``make_avatar(store, address)``
is what the realm hands out for ``twisted.mail.pop3.IMailbox`` (``mailbox``, locked by ``lock``).
Pure layers: ``parser`` (command lines), ``sasl`` (AUTH PLAIN), ``multiline`` (byte-stuffing, TOP).
APOP is not offered: it needs plaintext passwords on the server (see ``server``).
"""

from mailgw.pop3.mailbox import make_avatar
from mailgw.pop3.server import make_factory

__all__ = ["make_avatar", "make_factory"]
