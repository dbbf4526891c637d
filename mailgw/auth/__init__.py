"""Users and login: the passwd-file user database, password hashes, the login guard, and the
``twisted.cred`` checker, credentials and realm the protocols log in through.
"""

from __future__ import annotations

from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from mailgw.auth.checker import PasswordChecker
from mailgw.auth.cost import CredentialsCache, HashingPool, LoginCostSettings
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
    "CredentialsCache",
    "HashingPool",
    "InvalidAddress",
    "LoginCostSettings",
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


def build_portal(
    users, guard, realm, clock=reactor, run_in_thread=deferToThread, cache=None
) -> Portal:
    """A Portal over ``realm`` with a PasswordChecker of ``users`` behind ``guard``, hashing
    through ``run_in_thread`` and remembering verified logins in ``cache`` (if given)."""
    checker = PasswordChecker(users, guard, clock, run_in_thread, cache)
    return Portal(realm, [checker])
