"""SMTP for mailgw: an ESMTP receiver (MX) and submission server over the Maildir store.

``make_factory(ctx, submission=False)`` builds the listener's factory; ``make_avatar(store,
address)`` is the IMessageDelivery avatar the realm hands out after AUTH.
"""

from mailgw.smtp.delivery import make_avatar
from mailgw.smtp.server import make_factory

__all__ = ["make_avatar", "make_factory"]
