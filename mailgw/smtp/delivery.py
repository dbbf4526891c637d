"""The SMTP side of the store: who may send to whom, and streaming DATA into the Maildir store.

``Delivery`` implements Twisted's ``twisted.mail.smtp.IMessageDelivery`` (the avatar the realm
hands out after AUTH, and the policy of anonymous sessions).  It departs from Twisted's model in
one way, on purpose: ``validateTo`` returns the users a recipient resolves to (through
``mailgw.recipients``: users, aliases, catch-alls, postmaster, subaddresses) instead of a factory
of one ``IMessageSMTP`` per recipient, because mailgw writes a message once
(``IMailStore.incoming()``) and hard-links it to every user on commit.  ``MessageWriter``
replaces Twisted's per-recipient ``IMessageSMTP`` line sink and ``SMTP._messageHandled``: it
enforces the size and line limits while streaming, and its reply comes only after the commit
(fsync) has returned.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from email.utils import formatdate

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.mail.smtp import IMessageDelivery
from twisted.python.failure import Failure
from zope.interface import implementer

from mailgw.recipients import PostmasterUnavailable, Recipients, UnknownRecipient
from mailgw.relay.queue import QueueError
from mailgw.smtp import replies
from mailgw.smtp.parsing import CommandError, Mailbox
from mailgw.smtp.replies import Reply
from mailgw.store.interfaces import StoreError

_log = Logger()

#: A submitted message's header is held until its end, or this many octets, to see whether
#: it lacks Message-ID or Date (which are then added).
HEADER_HOLD = 64 * 1024

_HEADER_END = re.compile(rb"(?:^|\r\n)\r\n")
_HAS_DATE = re.compile(rb"(?im)^date[ \t]*:")
_HAS_MESSAGE_ID = re.compile(rb"(?im)^message-id[ \t]*:")


@dataclass(frozen=True)
class Session:
    """What a Delivery needs to know of the server and the connection it serves."""

    recipients: Recipients
    hostname: str
    #: The TLS in use, as Postfix's Received: header says it (``TLSv1.3 with cipher ...``),
    #: or None on a plaintext connection.
    tls: str | None = None
    #: May an authenticated user send to other domains (a submission service with a queue)?
    relay: bool = False


@implementer(IMessageDelivery)
@dataclass(frozen=True)
class Delivery:
    """Sender and recipient policy for one SMTP session, and its trace header.

    ``user`` is the authenticated address (None for an anonymous MX client).  An avatar from
    ``make_avatar`` has no session yet: the server binds it with ``bind`` before use, because
    the realm knows the store but not the user database or the local domains."""

    user: str | None = None
    session: Session | None = None

    def bind(self, session: Session) -> Delivery:
        """This policy, for that session."""
        return replace(self, session=session)

    def validateFrom(self, helo: tuple, origin: Mailbox | None) -> Mailbox | None:
        """Accept the sender; an authenticated user may only use their own addresses.

        Those are the user's address, its subaddresses and the aliases that deliver to the
        user (``Recipients.may_send_as``); the null sender is not one of them."""
        if self.user is None:
            return origin
        recipients = self._session().recipients
        if origin is None or not recipients.may_send_as(self.user, str(origin)):
            raise CommandError(replies.SENDER_NOT_OWNED)
        return origin

    def validateTo(self, user: Mailbox) -> tuple[str, ...]:
        """Return the users that get a copy for this recipient, or raise CommandError.

        Only for local domains, through ``mailgw.recipients`` (a domain-less ``postmaster`` is
        the first local domain's); another domain is refused unless ``relays`` says yes."""
        recipients = self._session().recipients
        if user.domain and not recipients.is_local(user.domain):
            raise CommandError(replies.RELAY_DENIED)
        try:
            return recipients.resolve(str(user))
        except UnknownRecipient:
            raise CommandError(replies.NO_SUCH_USER) from None
        except PostmasterUnavailable:
            raise CommandError(replies.MISCONFIGURED) from None

    def relays(self, user: Mailbox) -> bool:
        """Is ``user`` a recipient in another domain that this session may send to?

        Only an authenticated user of a submission service may (``Session.relay``); the MX
        service never relays, whoever asks."""
        session = self._session()
        return bool(
            self.user is not None
            and session.relay
            and user.domain
            and not session.recipients.is_local(user.domain)
        )

    def receivedHeader(
        self, helo: tuple, origin: Mailbox | None, recipients: list, *, transaction_id: str = ""
    ) -> bytes:
        """The ``Received:`` trace header (RFC 5321 4.4), folded, without the final CRLF.

        Written as Postfix writes it: ``from HELO (unknown [IP])`` (no reverse DNS lookup is
        made, which Postfix writes as ``unknown``), then the TLS in use and the authenticated
        sender, each on its own line, and the protocol named as RFC 3848 says (ESMTP, ESMTPS,
        ESMTPA, ESMTPSA).  ``helo`` is (EHLO/HELO name, client IP, True if EHLO); the ``for``
        clause names the recipient only when there is one, so Bcc recipients stay hidden."""
        name, client_ip, extended = helo
        session = self._session()
        protocol = "ESMTP" if extended else "SMTP"
        if extended:
            protocol += ("S" if session.tls else "") + ("A" if self.user else "")
        lines = [f"Received: from {name} (unknown [{client_ip}])"]
        if session.tls:
            lines.append(f"\t(using {session.tls})")
        if self.user:
            lines.append(f"\t(Authenticated sender: {self.user})")
        lines.append(
            f"\tby {session.hostname} (mailgw) with {protocol}"
            + (f" id {transaction_id}" if transaction_id else "")
        )
        if len(recipients) == 1:
            lines.append(f"\tfor <{recipients[0]}>; {formatdate(localtime=True)}")
        else:
            lines[-1] += ";"
            lines.append(f"\t{formatdate(localtime=True)}")
        return "\r\n".join(lines).encode("ascii")

    def _session(self) -> Session:
        if self.session is None:
            raise CommandError(replies.LOCAL_ERROR)
        return self.session


def make_avatar(store: object, address: str) -> tuple[Delivery, object]:
    """The IMessageDelivery for a user who logged in over SMTP, and its logout callable."""
    return Delivery(user=address), _logout


def _logout() -> None:
    """SMTP avatars hold nothing to release."""


class MessageWriter:
    """Streams the lines of one DATA into an IIncomingMessage and commits it.

    Lines arrive without CRLF and still dot-stuffed; the end-of-data line ``.`` is recognised
    only as a whole line, so a bare LF or CR never ends DATA; a message containing one is refused
    whole (``550 5.5.2``), as Postfix's ``smtpd_forbid_bare_newline`` does, so that no reading of
    its line ends can differ from another server's (SMTP smuggling).  Past the
    size or line limit, or after a store error, the data is discarded and the transaction fails
    at the final dot with the matching reply.

    ``incoming`` (the store's, for local users) and ``queue`` (the outbound queue, for other
    domains' recipients) may each be None; the commit puts the message in both or in neither.
    With ``complete_headers`` (submission), a ``Message-ID`` and ``Date`` are added to a
    message that lacks them, with ``hostname`` in the Message-ID."""

    def __init__(
        self,
        incoming: object | None,
        max_size: int,
        max_line: int,
        transaction_id: str,
        queue: object | None = None,
        complete_headers: bool = False,
        hostname: str = "localhost",
    ):
        self._incoming = incoming
        self._queue = queue
        self._outgoing = queue.incoming() if queue is not None else None
        self._sinks = [sink for sink in (incoming, self._outgoing) if sink is not None]
        self._header: bytearray | None = bytearray() if complete_headers else None
        self._hostname = hostname
        #: The outbound queue's id for the message, once committed there.
        self.queue_id: str | None = None
        self._max_size = max_size
        self._max_line = max_line
        self._open = True
        self.transaction_id = transaction_id
        #: Octets of client data stored so far (added headers not counted).
        self.size = 0
        #: The reply that ends the transaction, once something went wrong.
        self.failure: Reply | None = None
        #: {address: uid} once committed.
        self.delivered: dict = {}

    def write_header(self, header: bytes, local_only: bool = False) -> None:
        """Prepend a header line (without CRLF) that mailgw adds; raise StoreError/QueueError.

        ``local_only``: for the local mailboxes only (Return-Path), not for the next hop."""
        for sink in [self._incoming] if local_only else self._sinks:
            if sink is not None:
                sink.write(header + b"\r\n")

    def _put(self, data: bytes) -> None:
        """Write message data to every sink, holding the header while it may need completing."""
        if self._header is not None:
            start = max(len(self._header) - 3, 0)  # only the new data can end the header
            self._header += data
            ended = _HEADER_END.search(self._header, start)
            if not ended and len(self._header) <= HEADER_HOLD:
                return
            data = self._completed_header()
        for sink in self._sinks:
            sink.write(data)

    def _completed_header(self) -> bytes:
        """The held data, with the Message-ID and Date it lacks in front; stop holding."""
        held = bytes(self._header)
        self._header = None
        match = _HEADER_END.search(held)
        header = held[: match.start()] if match else held
        extra = b""
        if not _HAS_MESSAGE_ID.search(header):
            unique = f"{self.transaction_id}.{os.urandom(6).hex()}"
            extra += f"Message-ID: <{unique}@{self._hostname}>\r\n".encode("ascii")
        if not _HAS_DATE.search(header):
            extra += f"Date: {formatdate(localtime=True)}\r\n".encode("ascii")
        return extra + held

    def feed(self, line: bytes) -> bool:
        """Take one DATA line; return True once it was the end-of-data line."""
        if line == b".":
            return True
        if self.failure is not None:
            return False
        if len(line) > self._max_line - 2:
            self._fail(replies.LINE_TOO_LONG.with_text("Message line too long"))
            return False
        if b"\r" in line or b"\n" in line:
            self._fail(replies.BARE_LINE_END)
            return False
        if line.startswith(b"."):
            line = line[1:]
        data = line + b"\r\n"
        if self.size + len(data) > self._max_size:
            self._fail(replies.MESSAGE_TOO_BIG)
            return False
        self._write(data)
        return False

    def feed_lines(self, lines: list[bytes]) -> bool:
        """Take several DATA lines, none the end-of-data line, as ``feed`` would one by one.

        Return False, having taken nothing, when they need ``feed``'s line-by-line handling (a
        line over the limit, a bare CR or LF, the size limit reached); this is the fast path for
        the usual message, which costs one join and one replace instead of a call per line."""
        if self.failure is not None:
            return True
        block = b"\r\n".join(lines)
        joints = len(lines) - 1
        if (
            max(map(len, lines)) > self._max_line - 2
            or block.count(b"\r") != joints
            or block.count(b"\n") != joints
        ):
            return False
        data = block.replace(b"\r\n.", b"\r\n")
        if data[:1] == b".":
            data = data[1:]
        data += b"\r\n"
        if self.size + len(data) > self._max_size:
            return False
        self._write(data)
        return True

    def _write(self, data: bytes) -> None:
        """Store message data; a store or queue error fails the transaction (451 at the end)."""
        try:
            self._put(data)
        except (StoreError, QueueError, OSError):
            _log.failure("Cannot write incoming message {id}", id=self.transaction_id)
            self._fail(replies.LOCAL_ERROR)
            return
        self.size += len(data)

    def finish(
        self, sender: Mailbox | None, addresses: list[str], remote: list[str] = ()
    ) -> Deferred:
        """Commit in a thread to every local address and, for the ``remote`` recipients, to
        the outbound queue; fire with the reply to send for the DATA (250 only once both
        are durable; if either fails, neither keeps the message)."""
        if self.failure is None and self._header is not None:
            try:
                data = self._completed_header()
                for sink in self._sinks:
                    sink.write(data)
            except (StoreError, QueueError, OSError):
                _log.failure("Cannot write incoming message {id}", id=self.transaction_id)
                self._fail(replies.LOCAL_ERROR)
        if self.failure is not None:
            return succeed(self.failure)
        self._open = False
        committed = deferToThread(self._commit, str(sender or ""), addresses, list(remote))
        committed.addCallbacks(
            self._committed, self._commit_failed, callbackArgs=(sender, addresses, remote)
        )
        return committed

    def _commit(self, sender: str, addresses: list[str], remote: list[str]) -> dict:
        """In a thread: queue for ``remote``, then deliver to ``addresses``; undo the first
        if the second fails.  Return {address: uid}."""
        if self._outgoing is not None:
            self.queue_id = self._outgoing.commit(sender, remote)
        if self._incoming is None:
            return {}
        try:
            return self._incoming.commit(addresses)
        except BaseException:
            if self.queue_id is not None:
                self._queue.delete(self.queue_id)
                self.queue_id = None
            raise

    def abort(self) -> None:
        """Throw the message away (connection lost, RSET impossible mid-DATA, errors)."""
        if self._open:
            self._open = False
            self._header = None
            for sink in self._sinks:
                try:
                    sink.abort()
                except (StoreError, QueueError, OSError):
                    _log.failure("Cannot remove incoming message {id}", id=self.transaction_id)

    def _fail(self, reply: Reply) -> None:
        self.failure = reply
        self.abort()

    def _committed(
        self, uids: dict, sender: Mailbox | None, addresses: list[str], remote: list[str]
    ) -> Reply:
        self.delivered = uids
        if addresses:
            _log.info(
                "Delivered {id} ({size} octets) from <{sender}> to {recipients}",
                id=self.transaction_id,
                size=self.size,
                sender=str(sender or ""),
                recipients=", ".join(addresses),
            )
        if self.queue_id is not None:
            _log.info(
                "Queued {id} ({size} octets) from <{sender}> as {queue_id} for {recipients}",
                id=self.transaction_id,
                size=self.size,
                sender=str(sender or ""),
                queue_id=self.queue_id,
                recipients=", ".join(remote),
            )
            self._queue.announce(self.queue_id)
        return replies.QUEUED.with_text(f"OK: queued as {self.transaction_id}")

    def _commit_failed(self, failure: Failure) -> Reply:
        _log.failure("Cannot deliver {id}", failure, id=self.transaction_id)
        self._open = True
        self.abort()
        return replies.LOCAL_ERROR
