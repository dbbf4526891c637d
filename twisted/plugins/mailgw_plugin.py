"""The ``twistd mailgw`` plugin.

``ServiceMaker`` imports ``mailgw.service`` (its ``Options`` and ``makeService``) only when the
``mailgw`` subcommand is used, so listing twistd's plugins stays cheap.  This directory has no
``__init__.py``: Twisted finds plugins in every ``twisted/plugins/`` directory on sys.path.
"""

from twisted.application.service import ServiceMaker

mailgw = ServiceMaker(
    "mailgw",
    "mailgw.service",
    "An SMTP, POP3 and IMAP4 mail server over one Maildir store",
    "mailgw",
)
