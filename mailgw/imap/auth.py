"""The commands of every state (CAPABILITY, NOOP, LOGOUT, ID), those before login (STARTTLS,
LOGIN, AUTHENTICATE PLAIN with SASL-IR), and ENABLE (RFC 5161; IMAP4rev2, RFC 9051 6.3.1) of
the authenticated state.

Passwords go through ``ctx.portal`` with ``ClientCredentials`` (the client's IP for the guard),
and only over TLS unless ``ctx.allow_plaintext`` (``NO [PRIVACYREQUIRED]`` otherwise).  A login
over ``sessions_per_user_ip``/``sessions_per_user`` (counted by ``mailgw.sessions``) gets
``NO [LIMIT]`` (RFC 5530) and the session stays unauthenticated.
"""

from __future__ import annotations

from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger

import mailgw
from mailgw.auth import ClientCredentials, sasl
from mailgw.imap.account import IAccount
from mailgw.imap.reply import Reply, bad, no, ok
from mailgw.imap.selected import refreshed
from mailgw.imap.wire import commands as c
from mailgw.imap.wire import responses as r

_log = Logger()


async def capability(session, command: c.Capability) -> Reply:
    """CAPABILITY: what the session offers in its present state."""
    session.send(r.untagged(r.Atom(b"CAPABILITY " + b" ".join(session.capabilities()))))
    return ok(b"CAPABILITY completed")


async def noop(session, command: c.Noop) -> Reply:
    """NOOP; with a mailbox selected, look for changes first (reported before the OK)."""
    if session.mailbox is not None:
        return await refreshed(session, b"NOOP", b"NOOP completed")
    return ok(b"NOOP completed")


async def logout(session, command: c.Logout) -> Reply:
    """LOGOUT: BYE, OK, then the connection closes."""
    session.send(r.status_line(None, b"BYE", b"Logging out"))
    return ok(b"LOGOUT completed", then=session.close_connection)


async def id_(session, command: c.Id) -> Reply:
    """ID (RFC 2971): the client's parameters are ignored; ours are name and version."""
    session.send(r.untagged(r.Atom(b"ID"), ["name", "mailgw", "version", mailgw.__version__]))
    return ok(b"ID completed")


async def starttls(session, command: c.StartTLS) -> Reply:
    """STARTTLS; whatever the client sent after the command is thrown away."""
    if session.is_secure():
        return no(b"TLS is already active")
    if not session.can_start_tls():
        return no(b"TLS not available")
    return ok(b"Begin TLS negotiation now", then=session.start_tls)


async def login(session, command: c.Login) -> Reply:
    """LOGIN through the portal; NO before TLS when plaintext passwords are not allowed."""
    if session.login_disabled():
        return no(b"[PRIVACYREQUIRED] Use STARTTLS before LOGIN")
    return await _login(session, command.user, command.password)


async def authenticate(session, command: c.Authenticate) -> Reply:
    """AUTHENTICATE PLAIN (RFC 4616), with an initial response (SASL-IR) or after "+ "."""
    if command.mechanism.upper() != "PLAIN":
        return no(b"[CANNOT] Only PLAIN is supported")
    if session.login_disabled():
        return no(b"[PRIVACYREQUIRED] Use STARTTLS first")
    response = command.initial
    if response is None:
        session.send(r.continuation())
        response = (await session.read_line()).strip()
    try:
        user, password = sasl.plain_credentials(sasl.decode_response(response))
    except sasl.Cancelled:
        return bad(b"AUTHENTICATE cancelled")
    except sasl.ForeignIdentity:
        return no(b"[AUTHORIZATIONFAILED] Cannot act as another user")
    except sasl.SaslError as error:
        return bad(str(error).encode("ascii", "replace"))
    return await _login(session, user.encode("utf-8"), password)


async def _login(session, user: bytes, password: bytes) -> Reply:
    if session.context.faults is not None:
        name = user.decode("utf-8", "replace")
        fault = session.context.faults.take("imap", "login", name)
        if fault is not None:
            return await session.faulted(fault, lambda: _check(session, user, password))
    return await _check(session, user, password)


async def _check(session, user: bytes, password: bytes) -> Reply:
    try:
        username = user.decode("utf-8")
    except UnicodeDecodeError:
        return no(b"[AUTHENTICATIONFAILED] Authentication failed")
    peer = session.transport.getPeer()
    credentials = ClientCredentials(username, password, getattr(peer, "host", ""))
    try:
        _, avatar, logout_ = await session.context.portal.login(credentials, None, IAccount)
    except UnauthorizedLogin:
        return no(b"[AUTHENTICATIONFAILED] Authentication failed")
    except Exception:
        _log.failure("IMAP login could not be checked")
        return no(b"[UNAVAILABLE] Login is not possible now")
    if session.closing:
        logout_()
        return None
    refused = session.tracked.logged_in(username, avatar.address)
    if refused is not None:
        logout_()
        return no(b"[LIMIT] " + refused.encode("ascii"))
    session.account, session.on_logout = avatar, logout_
    session.state = "auth"
    try:
        await avatar.prepare()
    except Exception:
        _log.failure("could not create the special-use folders")
    return ok(b"LOGIN completed")


#: What ENABLE (RFC 5161) can enable, and what each enables with it (RFC 7162 3.2.3), the
#: first as ``* ENABLED`` spells it.  Only what CAPABILITY announces can be enabled.
ENABLES = {
    "CONDSTORE": ("CONDSTORE",),
    "QRESYNC": ("QRESYNC", "CONDSTORE"),
    "IMAP4REV2": ("IMAP4rev2",),
}


async def enable(session, command: c.Enable) -> Reply:
    """ENABLE (RFC 5161, authenticated state only): ``* ENABLED`` lists the extensions asked
    for that this command enabled; unknown ones, and those not announced, are ignored."""
    offered = {cap.decode("ascii").upper() for cap in session.capabilities()}
    newly = []
    for name in command.capabilities:
        if name not in ENABLES or name not in offered:
            continue
        spelled = ENABLES[name][0]
        if spelled not in session.enabled and spelled not in newly:
            newly.append(spelled)
            session.enabled.update(ENABLES[name])
    session.send(r.untagged(r.Atom(b" ".join([b"ENABLED", *(n.encode() for n in newly)]))))
    return ok(b"ENABLE completed")
