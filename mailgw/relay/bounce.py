"""Bounces: the delivery status notification (RFC 3464) sent back to a message's sender.

``make_bounce`` builds a ``multipart/report; report-type=delivery-status`` message with three
parts: a text for people, the ``message/delivery-status`` fields for programs, and the original
message's headers (``text/rfc822-headers``).  It is sent from the null sender (``MAIL FROM:<>``)
so that it can never bounce in turn; the caller sends no bounce at all for a message whose own
sender is null (``entry.sender == ""``), which is a bounce already (RFC 5321 6.1).
"""

from __future__ import annotations

import email.utils
import os
import re
import time

#: An SMTP reply with an enhanced status code: "550 5.1.1 text" -> ("550", "5.1.1").
_REPLY = re.compile(r"^\s*([245]\d\d)[ -]+([245]\.\d{1,3}\.\d{1,3})?")

#: RFC 3463 4.4.7: delivery time expired.
EXPIRED_STATUS = "4.4.7"


def make_bounce(
    entry: object,
    original_headers: bytes,
    failures: dict[str, str],
    reporting_mta: str,
    expired: bool,
    message_id: str | None = None,
) -> bytes:
    """Return the DSN (CRLF line ends) telling ``entry.sender`` that ``failures`` failed.

    ``entry`` is the ``QueueEntry`` (its ``id``, ``sender``, ``created`` are used);
    ``failures`` maps each failed recipient to the last reply or error text (e.g. "550 5.1.1
    no such user", or "connection refused"); ``expired`` says the message stayed in the
    queue too long rather than being refused; ``message_id`` is its Message-ID (default a new
    one from ``bounce_message_id``).  The caller must not send one when ``entry.sender`` is ''
    (the null sender)."""
    if not failures:
        raise ValueError("a bounce needs at least one failed recipient")
    boundary = f"=_mailgw_{os.urandom(12).hex()}"
    now = time.time()
    why = (
        "it could not be delivered in time (it stayed in the queue too long)"
        if expired
        else "the receiving server refused it"
    )
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{entry.sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {email.utils.formatdate(now)}",
        f"Message-ID: {message_id or bounce_message_id(entry, reporting_mta)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Description: Notification",
        "",
        f"This is the mail system at {reporting_mta}.",
        "",
        f"Your message could not be delivered to the recipients below, because {why}.",
        "It has been removed from the queue.",
        "",
    ]
    for recipient, reason in failures.items():
        lines.append(f"<{_one_line(recipient)}>: {_one_line(reason)}")
    lines += [
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Mailgw-Queue-ID: {entry.id}",
        f"Arrival-Date: {email.utils.formatdate(entry.created)}",
    ]
    for recipient, reason in failures.items():
        code, status = _status(reason, expired)
        lines += [
            "",
            f"Final-Recipient: rfc822; {_one_line(recipient)}",
            "Action: failed",
            f"Status: {status}",
            f"Diagnostic-Code: {'smtp' if code else 'x-mailgw'}; {_one_line(reason)}",
            f"Last-Attempt-Date: {email.utils.formatdate(now)}",
        ]
    head = "\r\n".join(lines).encode("utf-8")
    headers = original_headers.rstrip(b"\r\n")
    tail = [
        b"",
        f"--{boundary}".encode(),
        b"Content-Type: text/rfc822-headers",
        b"Content-Description: Undelivered message headers",
        b"",
        headers,
        b"",
        f"--{boundary}--".encode(),
        b"",
    ]
    return head + b"\r\n" + b"\r\n".join(tail)


def bounce_message_id(entry: object, reporting_mta: str) -> str:
    """A new Message-ID, angle brackets included, for a bounce of queue entry ``entry``."""
    return f"<{entry.id}.bounce.{os.urandom(4).hex()}@{reporting_mta}>"


def _status(reason: str, expired: bool) -> tuple[str | None, str]:
    """(SMTP reply code or None, RFC 3463 status) for one failure text."""
    match = _REPLY.match(reason)
    code = match.group(1) if match else None
    if expired:
        return code, EXPIRED_STATUS
    if match and match.group(2) and match.group(2)[0] == code[0]:
        return code, match.group(2)
    return code, "5.0.0"


def _one_line(text: str) -> str:
    """``text`` on one line of printable characters (a remote reply must not inject fields)."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())
