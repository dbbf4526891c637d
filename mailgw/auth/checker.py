"""The credentials checker: password verification off the reactor, behind the login guard.

Every refusal looks the same to the client: ``UnauthorizedLogin("Authentication failed")`` after
the guard's delay, whether the user is unknown, the password wrong or the client blocked (a
blocked attempt's password is not even checked).  Hashing runs through ``run_in_thread``
(``deferToThread``, or the server's bounded ``HashingPool``), so a burst of logins never stalls
other sessions.  With a ``CredentialsCache``, a password verified lately against the user's
password field in force is accepted without hashing again; the guard is asked first all the
same, and a cached success waits for the guard's delay as any success does.  Each attempt is
logged once, with the account and the client IP, never the password.
"""

from __future__ import annotations

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailgw.auth.errors import InvalidAddress
from mailgw.auth.interfaces import IClientCredentials

log = Logger()

#: The one refusal message, whatever the reason.
FAILED = "Authentication failed"

#: Longest login name kept for the guard's account table.
MAX_ACCOUNT_KEY = 320


@implementer(ICredentialsChecker)
class PasswordChecker:
    """ICredentialsChecker for IUsernamePassword and IClientCredentials over an IUserDatabase.

    ``requestAvatarId`` fires with the canonical address (str) or fails with UnauthorizedLogin.
    Successful logins are answered after the delay the guard asks for too, so a client that has
    been failing cannot tell a good guess early by its timing.
    """

    credentialInterfaces = (IUsernamePassword, IClientCredentials)

    def __init__(
        self, users, guard, clock=reactor, run_in_thread=deferToThread, cache=None
    ) -> None:
        self._users = users
        self._guard = guard
        self._clock = clock
        self._run_in_thread = run_in_thread
        self._cache = cache

    def requestAvatarId(self, credentials) -> defer.Deferred:
        """Check the credentials; fire with the canonical address or fail UnauthorizedLogin."""
        client_ip = credentials.client_ip if IClientCredentials.providedBy(credentials) else ""
        name = _text(credentials.username)
        password = credentials.password
        if isinstance(password, str):
            password = password.encode("utf-8")
        try:
            address = self._users.canonical(name)
        except InvalidAddress:
            address = None
        account = address or name.strip().lower()[:MAX_ACCOUNT_KEY]
        if self._guard.is_blocked(client_ip, account):
            return self._refuse(client_ip, account, "blocked after repeated failures")
        entry = None
        if address is not None and self._cache is not None:
            entry = self._users.password_entry(address)
            if entry is not None and self._cache.verified(address, password, entry):
                return self._checked(True, client_ip, account, address)
        d = self._run_in_thread(self._users.check_password, name, password)
        if entry is not None:
            d.addCallback(self._remember, address, password, entry)
        d.addCallbacks(
            self._checked,
            self._check_failed,
            callbackArgs=(client_ip, account, address),
            errbackArgs=(client_ip, account),
        )
        return d

    def _remember(self, ok: bool, address: str, password: bytes, entry: str) -> bool:
        """Cache a success, if the password field it was checked against is still in force."""
        if ok and self._users.password_entry(address) == entry:
            self._cache.add(address, password, entry)
        return ok

    def _checked(self, ok: bool, client_ip: str, account: str, address: str | None):
        """Answer after the password was verified (or not)."""
        if self._guard.is_blocked(client_ip, account):
            return self._refuse(client_ip, account, "blocked after repeated failures")
        if not ok or address is None:
            self._guard.record_failure(client_ip, account)
            return self._refuse(client_ip, account, "unknown user or wrong password")
        delay = self._guard.delay_for(client_ip, account)
        self._guard.record_success(client_ip, account)
        log.info(
            "Login succeeded for {account!r} from {client_ip}", account=account, client_ip=client_ip
        )
        return self._after(delay, address)

    def _check_failed(self, failure: Failure, client_ip: str, account: str):
        """The password check itself raised: log it and refuse like any other failure."""
        log.failure(
            "Password check for {account!r} from {client_ip} raised",
            failure,
            account=account,
            client_ip=client_ip,
        )
        return self._refuse(client_ip, account, "internal error")

    def _refuse(self, client_ip: str, account: str, reason: str) -> defer.Deferred:
        """Log the failure and fail with UnauthorizedLogin after the guard's delay."""
        log.warn(
            "Login failed for {account!r} from {client_ip}: {reason}",
            account=account,
            client_ip=client_ip,
            reason=reason,
        )
        delay = self._guard.delay_for(client_ip, account)
        return self._after(delay, Failure(UnauthorizedLogin(FAILED)))

    def _after(self, delay: float, result) -> defer.Deferred:
        """A Deferred firing with ``result`` (or failing with it) ``delay`` seconds from now."""
        if delay <= 0:
            return defer.fail(result) if isinstance(result, Failure) else defer.succeed(result)
        d = task.deferLater(self._clock, delay, lambda: None)
        d.addCallback(lambda _: result)
        return d


def _text(username) -> str:
    """The login name as text; bytes that are not UTF-8 get backslash escapes (never a user)."""
    if isinstance(username, bytes):
        return username.decode("utf-8", errors="backslashreplace")
    return str(username)
