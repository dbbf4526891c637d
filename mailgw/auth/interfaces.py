"""Interfaces of the user database, the login guard and the avatars the realm hands out.

Login goes through ``twisted.cred``: each protocol builds ``ClientCredentials`` (a username,
a password and the client's IP) and calls ``portal.login(creds, None, <avatar interface>)``.
The avatar interfaces a protocol may ask for are Twisted's ``twisted.mail.pop3.IMailbox`` and
``twisted.mail.smtp.IMessageDelivery``, and mailgw's own ``mailgw.imap.account.IAccount``; the
realm builds them from factories that the service composition registers, so this package
imports nothing of the protocol packages.
"""

from __future__ import annotations

from twisted.cred.credentials import IUsernamePassword
from zope.interface import Attribute, Interface


class IClientCredentials(IUsernamePassword):
    """A username and password, and where the attempt came from (for the login guard)."""

    client_ip = Attribute("str: the client's IP address, '' if unknown.")


class IUserDatabase(Interface):
    """The users that may log in and receive mail.  Addresses are canonical (see canonical())."""

    def canonical(address: str) -> str:
        """Return the canonical form of a login name or address (domain lower-cased).

        mailgw also lower-cases the local part (as Dovecot's %Lu does).  Raise
        mailgw.auth.InvalidAddress for a name unusable as a user (no '@', ':', whitespace,
        control characters, a part unsafe as a directory name)."""

    def exists(address: str) -> bool:
        """Is this a user (after canonicalisation)?  Picks up edits of the file at once."""

    def users() -> list:
        """Return every user's canonical address, sorted."""

    def check_password(address: str, password: bytes) -> bool:
        """Verify a password (blocking: hashing is slow; run it in a thread).

        An unknown user costs the same time as a wrong password."""

    def password_entry(address: str) -> str | None:
        """The user's stored password field (``{SCHEME}hash``) in force, None for an unknown
        user or one who cannot log in; cheap (no hashing), and changed by every new password."""

    def add_user(address: str, password: bytes) -> None:
        """Add a user with an {ARGON2ID} hash; raise KeyError-like UserExists if present."""

    def set_password(address: str, password: bytes) -> None:
        """Replace a user's password hash; raise NoSuchUser."""

    def remove_user(address: str) -> None:
        """Remove a user; raise NoSuchUser."""


class ILoginGuard(Interface):
    """Slows down and then refuses password guessing, per client IP and per account."""

    def delay_for(client_ip: str, account: str) -> float:
        """Seconds to wait before answering an attempt from here (0 if none failed lately)."""

    def is_blocked(client_ip: str, account: str) -> bool:
        """Are attempts from this IP or for this account refused for now?"""

    def record_failure(client_ip: str, account: str) -> None:
        """Count a failed attempt."""

    def record_success(client_ip: str, account: str) -> None:
        """Forget the failures of this IP for this account after a good login."""
