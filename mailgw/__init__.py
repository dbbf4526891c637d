"""mailgw: an SMTP, POP3 and IMAP4 mail server over one Maildir store, built on Twisted."""

__version__ = "0.1.0"
