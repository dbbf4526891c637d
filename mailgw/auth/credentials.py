"""The credentials every protocol hands to the portal: a username, a password and the client IP."""

from __future__ import annotations

import hmac

from zope.interface import implementer

from mailgw.auth.interfaces import IClientCredentials


@implementer(IClientCredentials)
class ClientCredentials:
    """IClientCredentials (and so IUsernamePassword) for one login attempt.

    ``username`` is kept as bytes (a str is UTF-8 encoded), as Twisted's protocols pass it.
    The password never appears in ``repr``.
    """

    def __init__(self, username: bytes | str, password: bytes, client_ip: str = "") -> None:
        self.username = username.encode("utf-8") if isinstance(username, str) else username
        self.password = password
        self.client_ip = client_ip

    def checkPassword(self, password: bytes) -> bool:
        """Is ``password`` the password given?  Constant-time; not for stored hashes."""
        return hmac.compare_digest(self.password, password)

    def __repr__(self) -> str:
        """Username and IP only."""
        return f"<ClientCredentials username={self.username!r} client_ip={self.client_ip!r}>"
