"""Connection limits and session logging, shared by the SMTP, POP3 and IMAP listeners.

Each protocol factory owns one ``SessionTracker`` (so the connection limits hold per listener)
and asks it for a ``TrackedSession`` in ``buildProtocol``.  The tracker promises:

- at most ``Limits.connections`` sessions at once on the listener, and at most its per-IP cap
  from one client IP (``Limits.connections_per_ip``; the SMTP MX listener passes
  ``Limits.smtp_connections_per_ip`` instead);
- a connection over a limit is never dropped silently: it gets the protocol's own "too busy"
  reply (over TLS on an implicit-TLS listener), then the server closes it; a client that does
  not go away is cut off after ``REFUSAL_GRACE`` seconds.  Refused connections are not counted;
- counts come back down when a session ends, however it ends (QUIT, timeout, reset), and the
  per-IP table only holds IPs with open sessions, so its size is bounded by ``connections``;
- after login, the POP3 and IMAP trackers (which share the server's ``UserSessions``) allow at
  most ``Limits.sessions_per_user_ip`` logged-in sessions of one user from one client IP and
  ``Limits.sessions_per_user`` of one user in all, POP3 and IMAP listeners (plain and TLS)
  together; the login over a limit is refused with the protocol's own reply (the session stays
  open, not logged in), and the count comes back down when the session ends, however it ends;
- every admitted session logs one event when it starts (protocol, client ip:port, listener,
  TLS) and one when it ends (protocol, client, duration, the logged-in user if any, how it
  ended); a refusal logs one event.  Passwords never pass through here.  Login attempts
  themselves are logged by the credentials checker (``mailgw.auth.checker``).

The protocol calls ``TrackedSession.connected`` from ``connectionMade``,
``TrackedSession.logged_in`` after a successful login (and answers a refusal), optionally
``TrackedSession.closing`` to say why the server hangs up, and ``TrackedSession.ended`` from
``connectionLost``.  The transport is never wrapped, so the protocols still see
``ISSLTransport`` on TLS connections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:  # mailgw.context imports this module for UserSessions
    from mailgw.context import Limits

log = Logger()

#: Seconds a refused client has to read the busy reply and go away before it is cut off.
REFUSAL_GRACE = 10.0

#: The text every protocol's "too busy" reply ends with.
BUSY_TEXT = "Too many connections, try again later"


def describe_address(address: object) -> str:
    """``ip:port`` (``[ip]:port`` for IPv6) of a TCP address; ``str(address)`` otherwise."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        return str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def set_no_delay(transport: object) -> bool:
    """Turn Nagle's algorithm off on the TCP connection under ``transport``; True if done.

    Every protocol here answers a command with a small write and waits for the next one, the
    pattern where Nagle's algorithm and delayed ACKs stall a reply by up to 40 ms.  Under
    implicit TLS the protocol's transport is a TLS wrapper: the TCP transport is reached through
    its ``transport`` attribute (STARTTLS keeps the same TCP transport, so the option stays).
    Other transports (UNIX sockets, test doubles) are left alone."""
    while not ITCPTransport.providedBy(transport) or hasattr(transport, "wrappedProtocol"):
        transport = getattr(transport, "transport", None)
        if transport is None:
            return False
    try:
        transport.setTcpNoDelay(True)
    except OSError:
        return False  # the connection is already gone
    return True


class UserSessions:
    """The logged-in POP3 and IMAP sessions of one server, per user and per user and client IP.

    One instance is shared by every POP3 and IMAP listener (``ServerContext.user_sessions``), so
    its counts hold across protocols and across plain and TLS listeners.  Users are counted by
    their canonical address.  Only users with open sessions are kept, so its size is bounded by
    the sessions open."""

    def __init__(self) -> None:
        self._per_user: dict[str, int] = {}
        self._per_user_ip: dict[tuple[str, str | None], int] = {}

    def count(self, user: str, peer_ip: str | None = None) -> int:
        """How many sessions ``user`` has logged in from ``peer_ip``, or in all (None)."""
        if peer_ip is None:
            return self._per_user.get(user, 0)
        return self._per_user_ip.get((user, peer_ip), 0)

    def admit(self, user: str, peer_ip: str | None, limits: Limits) -> str | None:
        """Count a login of ``user`` from ``peer_ip`` if ``limits`` allow it and return None;
        else count nothing and return why not, as a sentence for the client."""
        key = (user, peer_ip)
        if peer_ip is not None and self._per_user_ip.get(key, 0) >= limits.sessions_per_user_ip:
            return (
                f"Too many sessions for this user from this address "
                f"({limits.sessions_per_user_ip} at most)"
            )
        if self._per_user.get(user, 0) >= limits.sessions_per_user:
            return f"Too many sessions for this user ({limits.sessions_per_user} at most)"
        self._per_user[user] = self._per_user.get(user, 0) + 1
        self._per_user_ip[key] = self._per_user_ip.get(key, 0) + 1
        return None

    def release(self, user: str, peer_ip: str | None) -> None:
        """Uncount a login admitted for ``user`` from ``peer_ip``."""
        _decrement(self._per_user, user)
        _decrement(self._per_user_ip, (user, peer_ip))


def _decrement(counts: dict, key: object) -> None:
    left = counts.pop(key) - 1
    if left > 0:
        counts[key] = left


class SessionTracker:
    """Counts one listener's open sessions, in all and per client IP, and hands out Sessions.

    ``per_ip`` is the cap from one client IP (default ``limits.connections_per_ip``).  With
    ``users``, logins of the sessions handed out are counted there against the per-user
    limits; without (SMTP), a login is only remembered for the end event."""

    def __init__(
        self,
        limits: Limits,
        protocol_name: str,
        busy_reply: bytes,
        clock: IReactorTime | None = None,
        per_ip: int | None = None,
        users: UserSessions | None = None,
    ) -> None:
        if clock is None:  # imported here: importing mailgw.context must not install it
            from twisted.internet import reactor as clock
        self.limits = limits
        self.protocol_name = protocol_name
        #: The complete wire reply (with CRLF) sent to a refused client.
        self.busy_reply = busy_reply
        self.clock = clock
        #: At most this many sessions at once from one client IP.
        self.per_ip = per_ip if per_ip is not None else limits.connections_per_ip
        #: The server's logged-in sessions per user, or None if logins are not limited here.
        self.users = users
        self._total = 0
        self._per_ip: dict[str, int] = {}

    @property
    def total(self) -> int:
        """How many sessions are open."""
        return self._total

    def count(self, peer_ip: str) -> int:
        """How many sessions are open from ``peer_ip``."""
        return self._per_ip.get(peer_ip, 0)

    def admit(self, peer_ip: str | None) -> bool:
        """Count a new session from ``peer_ip`` (None: no IP, only the total counts) if both
        limits allow it; False, and nothing counted, if one does not."""
        if self._total >= self.limits.connections:
            return False
        if peer_ip is not None:
            if self._per_ip.get(peer_ip, 0) >= self.per_ip:
                return False
            self._per_ip[peer_ip] = self._per_ip.get(peer_ip, 0) + 1
        self._total += 1
        return True

    def release(self, peer_ip: str | None) -> None:
        """Uncount a session admitted for ``peer_ip``."""
        self._total -= 1
        if peer_ip is not None:
            _decrement(self._per_ip, peer_ip)

    def _over(self, peer_ip: str | None) -> str:
        if self._total >= self.limits.connections:
            return f"{self._total} connections open on this listener"
        return f"{self.count(peer_ip)} connections open from {peer_ip}"

    def start(self, address: IAddress) -> TrackedSession | None:
        """A counted session for a client at ``address``, or None (logged) if over a limit."""
        peer_ip = getattr(address, "host", None)
        if self.admit(peer_ip):
            return TrackedSession(self, peer_ip, describe_address(address))
        log.warn(
            "{protocol} connection from {client} refused: {why}",
            protocol=self.protocol_name,
            client=describe_address(address),
            why=self._over(peer_ip),
            session_event="refused",
        )
        return None

    def refusal(self) -> Protocol:
        """The protocol to serve a refused connection: busy reply, then close."""
        return Refusal(self.busy_reply, self.clock, REFUSAL_GRACE)


class TrackedSession:
    """One admitted session: logs its start and end and gives its slot back when it ends."""

    def __init__(self, tracker: SessionTracker, peer_ip: str | None, client: str) -> None:
        self._tracker = tracker
        self._peer_ip = peer_ip
        #: The client as ``ip:port``.
        self.client = client
        #: The login name of the last successful login in this session, or None.
        self.user: str | None = None
        #: The account counted in the tracker's UserSessions for this session, or None.
        self._account: str | None = None
        self._transport: object | None = None
        self._started = tracker.clock.seconds()
        self._why: str | None = None
        self._open = True

    def connected(self, transport: object) -> None:
        """Log the start of the session on ``transport`` (call from ``connectionMade``)."""
        self._transport = transport
        self._started = self._tracker.clock.seconds()
        set_no_delay(transport)
        log.info(
            "{protocol} session {client} started on {listener}{tls_note}",
            protocol=self._tracker.protocol_name,
            client=self.client,
            listener=describe_address(transport.getHost()),
            tls=ISSLTransport.providedBy(transport),
            tls_note=" (TLS)" if ISSLTransport.providedBy(transport) else "",
            session_event="start",
        )

    def logged_in(self, user: str, account: str | None = None) -> str | None:
        """Count the login of ``account`` (its canonical address; default ``user``) against the
        per-user limits and remember ``user`` for the end event; None if it is admitted.

        Otherwise nothing is counted, the refusal is logged, and the reason is returned as a
        sentence for the protocol's reply (the caller logs the avatar out).  A login after the
        session ended is refused too, so a login that completes after a disconnect never
        leaves a count behind.  Without ``UserSessions`` (SMTP) every login is admitted."""
        self.logged_out()
        if not self._open:
            return "The session has ended"
        users = self._tracker.users
        if users is not None:
            account = account if account is not None else user
            why = users.admit(account, self._peer_ip, self._tracker.limits)
            if why is not None:
                log.warn(
                    "{protocol} login of {user} from {client} refused: {why}",
                    protocol=self._tracker.protocol_name,
                    user=user,
                    client=self.client,
                    why=why,
                    session_event="login_refused",
                )
                return why
            self._account = account
        self.user = user
        return None

    def logged_out(self) -> None:
        """Undo ``logged_in`` (a login that could not complete); nothing if none is counted."""
        if self._uncount():
            self.user = None

    def _uncount(self) -> bool:
        """Give the counted login back, if there is one; True if there was."""
        account, self._account = self._account, None
        if account is None:
            return False
        self._tracker.users.release(account, self._peer_ip)
        return True

    def closing(self, why: str) -> None:
        """Say why the server is about to hang up (e.g. "idle timeout"), for the end event."""
        self._why = why

    def ended(self, reason: Failure) -> None:
        """Log the end of the session and give its slot back (call from ``connectionLost``);
        only the first call counts."""
        if not self._open:
            return
        self._open = False
        self._tracker.release(self._peer_ip)
        self._uncount()
        log.info(
            "{protocol} session {client} ended ({how}) after {duration:.1f} s, {login}",
            protocol=self._tracker.protocol_name,
            client=self.client,
            duration=self._tracker.clock.seconds() - self._started,
            user=self.user,
            login=f"user {self.user}" if self.user else "no login",
            how=self._how(reason),
            session_event="end",
        )

    def _how(self, reason: Failure) -> str:
        if self._why is not None:
            return self._why
        if getattr(self._transport, "disconnecting", False):
            return "closed by server"
        if reason.check(ConnectionDone):
            return "closed by client"
        return f"connection lost: {reason.getErrorMessage()}"


class Refusal(Protocol):
    """Serves a connection over the limits: sends the busy reply, closes, ignores input."""

    def __init__(self, reply: bytes, clock: IReactorTime, grace: float) -> None:
        self._reply = reply
        self._clock = clock
        self._grace = grace
        self._cutoff: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """Send the reply and close; cut the connection off if still open after the grace."""
        self.transport.write(self._reply)
        if ISSLTransport.providedBy(self.transport) or not hasattr(
            self.transport, "loseWriteConnection"
        ):
            self.transport.loseConnection()
        else:
            # Half-close: keep reading (and discarding) until the client closes, so that input
            # it already sent does not make the kernel reset the connection over the reply.
            self.transport.loseWriteConnection()
        self._cutoff = self._clock.callLater(self._grace, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        """Discard whatever the client sends."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop the cut-off timer."""
        if self._cutoff is not None and self._cutoff.active():
            self._cutoff.cancel()
        self._cutoff = None
