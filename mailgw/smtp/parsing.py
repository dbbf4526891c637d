"""Parsing of SMTP command lines into typed values; pure, no I/O and no Twisted transport.

Reuses Twisted's ``twisted.mail.smtp.Address`` (its RFC 5321 tokenizer and address parser) and
replaces the ``mail_re``/``rcpt_re`` matching of ``twisted.mail.smtp.SMTP``: Twisted silently
strips source routes, accepts ``%`` and quoted ``@`` in local parts and ignores unknown ESMTP
parameters, all of which matter for relay control.  Errors are raised as ``CommandError`` holding
the reply to send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from twisted.mail.smtp import Address, AddressError

from mailgw.smtp import replies
from mailgw.smtp.replies import Reply

_VERB = re.compile(rb"[A-Za-z]{1,16}")
_DOMAIN = re.compile(
    rb"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
    rb"(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?"
)
_ADDRESS_LITERAL = re.compile(rb"\[(?:IPv6:[0-9A-Fa-f:.]{2,45}|[0-9.]{7,15})\]")
_MAIL = re.compile(rb"FROM:[ \t]*<([^<>]*)>(?:[ \t]+(.*))?", re.I | re.S)
_RCPT = re.compile(rb"TO:[ \t]*<([^<>]*)>(?:[ \t]+(.*))?", re.I | re.S)
_PARAM = re.compile(rb"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e]+))?")
_SIZE = re.compile(rb"[0-9]{1,20}")
_BODY_TYPES = {b"7BIT": "7BIT", b"8BITMIME": "8BITMIME"}
_DOT_ATOM = re.compile(rb"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
#: Local-part characters that route mail elsewhere: percent hack, bang path, quoted '@'.
_ROUTING = (b"%", b"!", b"@")


class CommandError(Exception):
    """A command could not be accepted; ``reply`` says why."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


@dataclass(frozen=True)
class Mailbox:
    """A parsed envelope address: the local part as sent, the domain lower-cased ('' if none)."""

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}" if self.domain else self.local


@dataclass(frozen=True)
class MailCommand:
    """``MAIL FROM:<sender>`` with its parameters; ``sender`` is None for the null path."""

    sender: Mailbox | None
    size: int | None = None
    body: str | None = None


def split_command(line: bytes) -> tuple[bytes, bytes]:
    """Split a command line into its upper-cased verb and its argument (stripped).

    An empty or non-alphabetic verb gives ``(b"", line)``."""
    parts = line.strip().split(None, 1)
    if not parts or not _VERB.fullmatch(parts[0]):
        return b"", line
    return parts[0].upper(), parts[1].strip() if len(parts) == 2 else b""


def parse_helo(argument: bytes) -> str:
    """The domain or address literal given to EHLO/HELO."""
    if _DOMAIN.fullmatch(argument) or _ADDRESS_LITERAL.fullmatch(argument):
        return argument.decode("ascii")
    raise CommandError(replies.SYNTAX.with_text("Invalid domain name in EHLO/HELO"))


def parse_mail(argument: bytes) -> MailCommand:
    """Parse the argument of MAIL: ``FROM:<path> [SIZE=n] [BODY=7BIT|8BITMIME]``."""
    match = _MAIL.fullmatch(argument)
    if not match:
        raise CommandError(replies.SYNTAX.with_text("Syntax: MAIL FROM:<address>"))
    path, params = match.group(1), _parse_params(match.group(2) or b"")
    size = body = None
    for key, value in params.items():
        if key == b"SIZE" and value is not None and _SIZE.fullmatch(value):
            size = int(value)
        elif key == b"BODY" and value is not None and value.upper() in _BODY_TYPES:
            body = _BODY_TYPES[value.upper()]
        elif key in (b"SIZE", b"BODY"):
            raise CommandError(replies.SYNTAX.with_text(f"Bad {key.decode()} parameter"))
        else:
            raise CommandError(replies.UNKNOWN_PARAMETER)
    if not path:
        return MailCommand(None, size, body)
    try:
        sender = _parse_path(path, for_delivery=False)
    except CommandError:
        raise CommandError(replies.BAD_SENDER_SYNTAX) from None
    if not sender.domain:
        raise CommandError(replies.BAD_SENDER_SYNTAX)
    return MailCommand(sender, size, body)


def parse_rcpt(argument: bytes) -> Mailbox:
    """Parse the argument of RCPT: ``TO:<path>``, refusing any address that routes elsewhere.

    A source route, ``%``/``!`` in the local part, a quoted ``@`` or a second ``@`` raise
    ``CommandError(RELAY_DENIED)``; a domain-less address is allowed only for ``postmaster``."""
    match = _RCPT.fullmatch(argument)
    if not match:
        raise CommandError(replies.SYNTAX.with_text("Syntax: RCPT TO:<address>"))
    if _parse_params(match.group(2) or b""):
        raise CommandError(replies.UNKNOWN_PARAMETER)
    mailbox = _parse_path(match.group(1), for_delivery=True)
    if not mailbox.domain and mailbox.local.lower() != "postmaster":
        raise CommandError(replies.BAD_RECIPIENT_SYNTAX)
    return mailbox


def _parse_params(text: bytes) -> dict[bytes, bytes | None]:
    """ESMTP parameters ``KEY[=VALUE]``, keys upper-cased; a repeated key is a syntax error."""
    params: dict[bytes, bytes | None] = {}
    for word in text.split():
        match = _PARAM.fullmatch(word)
        if not match or match.group(1).upper() in params:
            raise CommandError(replies.SYNTAX.with_text("Bad ESMTP parameter"))
        params[match.group(1).upper()] = match.group(2)
    return params


def _parse_path(path: bytes, for_delivery: bool) -> Mailbox:
    """Parse the address inside ``<...>`` with Twisted's tokenizer and ``Address``."""
    bad = replies.BAD_RECIPIENT_SYNTAX
    tokens = [token for token in Address.tstring.split(path) if token]
    if not tokens:
        raise CommandError(bad)
    if for_delivery:
        source_route = tokens[0] == b"@" and b":" in tokens
        local_tokens = tokens[: tokens.index(b"@")] if b"@" in tokens else tokens
        if (
            source_route
            or tokens.count(b"@") > 1
            or any(mark in token for token in local_tokens for mark in _ROUTING)
        ):
            raise CommandError(replies.RELAY_DENIED)
    try:
        address = Address(path, defaultDomain=b"")
    except AddressError:
        raise CommandError(bad) from None
    local, domain = address.local, address.domain
    if local.startswith(b'"') and local.endswith(b'"') and _DOT_ATOM.fullmatch(local[1:-1]):
        local = local[1:-1]  # "alice"@example.org is alice@example.org (RFC 5321 4.1.2)
    if not local or len(local) > 64 or len(local) + len(domain) > 253:
        raise CommandError(bad)
    if domain and not _DOMAIN.fullmatch(domain):
        raise CommandError(bad)
    return Mailbox(local.decode("ascii"), domain.rstrip(b".").decode("ascii").lower())
