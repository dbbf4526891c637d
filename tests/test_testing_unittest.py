"""The unittest way: one MailServer for a TestCase class (collected by pytest too)."""

from __future__ import annotations

import smtplib
import unittest

from mailgw.testing import MailServer


class SignupMailTest(unittest.TestCase):
    """An application's "welcome" mail, checked on a real SMTP server."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.mail = MailServer().start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.mail.stop()

    def setUp(self) -> None:
        self.mail.clear()

    def test_welcome_mail_is_sent(self) -> None:
        with smtplib.SMTP(self.mail.host, self.mail.smtp_port, timeout=5) as client:
            client.starttls(context=self.mail.ssl_context())
            client.sendmail("app@example.org", ["new@user.org"], b"Subject: Welcome\r\n\r\nhi\r\n")
        [message] = self.mail.wait_for(address="new@user.org")
        self.assertEqual(message["Subject"], "Welcome")
