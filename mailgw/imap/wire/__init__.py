"""The IMAP wire layer: bytes in, typed commands out; response values in, bytes out.

Pure code (no Twisted, no disk, no sockets): ``framing`` finds where a command ends (its line
and literals), ``parser`` turns one whole command into a ``commands`` object or raises
``ParseError``, ``responses`` serialises values and status lines, ``mutf7`` is the modified
UTF-7 of mailbox names (RFC 3501 5.1.3).
"""
