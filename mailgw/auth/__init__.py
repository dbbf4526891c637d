"""Users and login: the passwd-file user database, password hashes, the login guard, and the
``twisted.cred`` checker, credentials and realm the protocols log in through.
"""

from __future__ import annotations

from twisted.cred.portal import Portal
from twisted.internet import reactor

from mailgw.auth.checker import PasswordChecker
from mailgw.auth.credentials import ClientCredentials
from mailgw.auth.errors import (
    InvalidAddress,
    NoSuchUser,
    PasswdFileError,
    UserDatabaseError,
    UserExists,
)
from mailgw.auth.guard import LoginGuard
from mailgw.auth.realm import MailRealm, NoAvatarFactory
from mailgw.auth.userdb import PasswdFileUserDatabase

__all__ = [
    "ClientCredentials",
    "InvalidAddress",
    "LoginGuard",
    "MailRealm",
    "NoAvatarFactory",
    "NoSuchUser",
    "PasswdFileError",
    "PasswdFileUserDatabase",
    "PasswordChecker",
    "UserDatabaseError",
    "UserExists",
    "build_portal",
]


def build_portal(users, guard, realm, clock=reactor) -> Portal:
    """A Portal over ``realm`` with a PasswordChecker of ``users`` behind ``guard``."""
    return Portal(realm, [PasswordChecker(users, guard, clock=clock)])
