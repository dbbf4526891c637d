"""The realm: hands each protocol the avatar it asks for, built by a registered factory.

The service composition registers one factory per avatar interface (``pop3.IMailbox``,
``imap.IAccount``, ``smtp.IMessageDelivery``...), so this package imports nothing of the
protocol packages.  A factory takes the canonical address and returns ``(avatar, logout)``.
"""

from __future__ import annotations

from twisted.cred.error import UnhandledCredentials
from twisted.cred.portal import IRealm
from zope.interface import implementer


class NoAvatarFactory(UnhandledCredentials):
    """None of the avatar interfaces asked for has a factory in the realm."""


@implementer(IRealm)
class MailRealm:
    """IRealm over a dict {avatar interface: callable(address) -> (avatar, logout callable)}."""

    def __init__(self, factories: dict) -> None:
        self.factories = dict(factories)

    def requestAvatar(self, avatarId, mind, *interfaces) -> tuple:
        """Return (interface, avatar, logout) for the first interface with a factory.

        ``avatarId`` is the canonical address from the checker (bytes are decoded as UTF-8).
        Raise NoAvatarFactory (an UnhandledCredentials) when no interface has one.
        """
        address = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
        for interface in interfaces:
            factory = self.factories.get(interface)
            if factory is not None:
                avatar, logout = factory(address)
                return interface, avatar, logout
        names = ", ".join(getattr(i, "__name__", repr(i)) for i in interfaces) or "none"
        raise NoAvatarFactory(f"no avatar factory for the interfaces asked for: {names}")
