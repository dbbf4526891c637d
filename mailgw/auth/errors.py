"""Errors of the user database, raised to the admin command and the service composition."""

from __future__ import annotations


class UserDatabaseError(Exception):
    """The user database could not carry out a change."""


class InvalidAddress(UserDatabaseError, ValueError):
    """A login name or address is not usable as a mailgw user (see ``canonical_address``)."""


class UserExists(UserDatabaseError, KeyError):
    """The user is already in the passwd-file."""

    def __str__(self) -> str:
        """The message as given, not ``KeyError``'s quoted repr."""
        return str(self.args[0]) if self.args else ""


class NoSuchUser(UserDatabaseError, KeyError):
    """The user is not in the passwd-file."""

    def __str__(self) -> str:
        """The message as given, not ``KeyError``'s quoted repr."""
        return str(self.args[0]) if self.args else ""


class PasswdFileError(UserDatabaseError, OSError):
    """The passwd-file cannot be read or written (unreadable, not text, I/O error)."""
