"""SASL for POP3 AUTH (RFC 5034): the mechanisms offered; decoding is ``mailgw.auth.sasl``.

Twisted's POP3 has no AUTH command of this form (its ``AUTH`` predates RFC 5034 and answers
challenges with ``+`` plus NUL-terminated strings).  PLAIN is the only mechanism: the user
database holds password hashes, so challenge-response mechanisms that need the plaintext secret on
the server (CRAM-MD5, and APOP for the same reason) cannot be offered.
"""

from __future__ import annotations

from mailgw.auth.sasl import Cancelled, SaslError, decode_response, plain_credentials

__all__ = ["MECHANISMS", "Cancelled", "SaslError", "decode_response", "plain_credentials"]

#: The mechanisms offered, in CAPA order.
MECHANISMS = (b"PLAIN",)
