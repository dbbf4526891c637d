"""Bounces: RFC 3464 delivery status notifications, read back with the email package."""

from __future__ import annotations

import email
import email.policy
from email.message import Message

import pytest

from mailgw.relay.bounce import make_bounce
from mailgw.relay.queue import QueueEntry

ORIGINAL_HEADERS = (
    b"Received: from client (unknown [127.0.0.1])\r\n\tby mx.example.test (mailgw)\r\n"
    b"From: Alice <alice@example.test>\r\n"
    b"To: bob@remote.test, carol@remote.test\r\n"
    b"Subject: quarterly figures\r\n"
    b"Message-ID: <figures.1@example.test>\r\n"
)

ENTRY = QueueEntry(
    id="18c0ffee000-0123456789abcdef",
    sender="alice@example.test",
    recipients=["bob@remote.test", "carol@remote.test"],
    created=1_700_000_000.0,
)


def parse(data: bytes) -> Message:
    """The bounce as a mail client reads it."""
    assert b"\n" not in data.replace(b"\r\n", b""), "every line ends in CRLF"
    return email.message_from_bytes(data, policy=email.policy.default)


def parts(bounce: Message) -> tuple[Message, list[Message], Message]:
    """The human text, the delivery-status field groups, the original headers part."""
    assert bounce.get_content_type() == "multipart/report"
    assert bounce.get_param("report-type") == "delivery-status"
    text, status, headers = bounce.get_payload()
    assert text.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    assert headers.get_content_type() == "text/rfc822-headers"
    return text, status.get_payload(), headers


def test_permanent_failure_report() -> None:
    failures = {
        "bob@remote.test": "550 5.1.1 <bob@remote.test>: Recipient address rejected",
        "carol@remote.test": "554 Transaction failed",
    }
    bounce = parse(make_bounce(ENTRY, ORIGINAL_HEADERS, failures, "mx.example.test", False))
    assert bounce["To"].addresses[0].addr_spec == "alice@example.test"
    assert bounce["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.example.test"
    assert bounce["Auto-Submitted"] == "auto-replied"
    assert bounce["Message-ID"] and bounce["Date"]
    text, (per_message, bob, carol), headers = parts(bounce)
    body = text.get_content()
    assert "<bob@remote.test>: 550 5.1.1" in body and "<carol@remote.test>: 554" in body
    assert per_message["Reporting-MTA"] == "dns; mx.example.test"
    assert per_message["Arrival-Date"]
    assert bob["Final-Recipient"] == "rfc822; bob@remote.test"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Diagnostic-Code"] == "smtp; " + failures["bob@remote.test"]
    assert carol["Final-Recipient"] == "rfc822; carol@remote.test"
    assert carol["Status"] == "5.0.0", "no enhanced code in the reply: the generic one"
    original = headers.get_payload()
    assert "Subject: quarterly figures" in original
    assert "Message-ID: <figures.1@example.test>" in original


def test_expiry_report() -> None:
    failures = {"bob@remote.test": "connection refused", "carol@remote.test": "451 4.3.0 later"}
    bounce = parse(make_bounce(ENTRY, ORIGINAL_HEADERS, failures, "mx.example.test", True))
    text, (_, bob, carol), _ = parts(bounce)
    assert "in time" in text.get_content()
    assert bob["Status"] == carol["Status"] == "4.4.7"
    assert bob["Action"] == "failed"
    assert bob["Diagnostic-Code"] == "x-mailgw; connection refused"
    assert carol["Diagnostic-Code"] == "smtp; 451 4.3.0 later"


def test_a_remote_reply_cannot_add_fields() -> None:
    failures = {"bob@remote.test": "550 no\r\nAction: delivered\r\n\r\nX-Evil: yes"}
    bounce = parse(make_bounce(ENTRY, ORIGINAL_HEADERS, failures, "mx.example.test", False))
    _, (_, bob), _ = parts(bounce)
    assert bob.get_all("Action") == ["failed"]
    assert bob["X-Evil"] is None
    assert "550 no Action: delivered X-Evil: yes" in bob["Diagnostic-Code"]


def test_no_failures_no_bounce() -> None:
    with pytest.raises(ValueError):
        make_bounce(ENTRY, ORIGINAL_HEADERS, {}, "mx.example.test", False)
