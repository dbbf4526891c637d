"""The pytest plugin, used exactly as another project would: through the pytest11 entry point."""

from __future__ import annotations

pytest_plugins = ["pytester"]

USER_TESTS = """
import smtplib
import pytest

def send(server, to, subject):
    with smtplib.SMTP(server.host, server.smtp_port, timeout=5) as client:
        client.starttls(context=server.ssl_context())
        client.sendmail("app@example.org", [to], f"Subject: {subject}\\r\\n\\r\\nx\\r\\n".encode())

def test_fresh(mail_server):
    send(mail_server, "a@b.org", "one")
    assert mail_server.wait_for(subject="one")[0].address == "a@b.org"

def test_fresh_again(mail_server):
    assert mail_server.messages() == []

def test_session_first(mail_server_session):
    send(mail_server_session, "c@d.org", "two")
    mail_server_session.wait_for(subject="two")

def test_session_cleared(mail_server_session):
    assert mail_server_session.messages() == []

@pytest.mark.mail_server(auth_required=True, services=("smtp",))
def test_marker(mail_server):
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(mail_server, "a@b.org", "refused")
"""


def test_plugin_in_a_fresh_process(pytester):
    """A new process: the entry point loads the plugin, MailServer starts its own reactor thread."""
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=5)


def test_marker_is_registered(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["*mail_server(**options)*"])
