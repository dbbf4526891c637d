"""RFC 3501's examples (sections 6.1 to 6.4 and 7) replayed over real sockets, one test per
example: the mailbox each example assumes is built first (folders, messages with the flags,
numbers and UIDs it shows), the client's lines are sent as the example has them, and the
server's lines compared byte for byte with the example's after ``normalise``, which replaces
only what is the server's own choice (see there).  Where mailgw legitimately answers otherwise
(an optional mechanism it does not offer, a policy, '.' as its hierarchy delimiter), the test
asserts mailgw's answer and its docstring says why."""

from __future__ import annotations

import os
import re

#: What ``normalise`` puts where the server chooses the words.
TEXT = b"<text>"


def normalise(answer: bytes) -> list[bytes]:
    """The lines of ``answer`` with what RFC 3501 leaves to the server replaced: the
    human-readable text of status responses (tagged or untagged OK, NO, BAD, BYE, PREAUTH;
    the response code kept), the UIDVALIDITY value, the PERMANENTFLAGS list and the
    capability list (``* CAPABILITY`` and ``[CAPABILITY ...]``), each asserted on its own
    where a test cares."""
    out = []
    for line in answer.split(b"\r\n"):
        if not line:
            continue
        line = re.sub(rb"\[UIDVALIDITY \d+\]", b"[UIDVALIDITY n]", line)
        line = re.sub(rb"\[PERMANENTFLAGS \([^)]*\)\]", b"[PERMANENTFLAGS (...)]", line)
        line = re.sub(rb"^\* CAPABILITY .*", b"* CAPABILITY ...", line)
        line = re.sub(rb"\[CAPABILITY [^\]]*\]", b"[CAPABILITY ...]", line)
        found = re.fullmatch(rb"(\S+ (?:OK|NO|BAD|BYE|PREAUTH))( \[[^\]]*\])?( .*)?", line)
        if found:
            line = found.group(1) + (found.group(2) or b"") + b" " + TEXT
        out.append(line)
    return out


def next_uid(folder, uid: int) -> None:
    """Make ``uid`` the next UID ``folder`` gives, as if the ones before had been used and
    expunged: the ``N`` of its Dovecot uidlist header, written as Dovecot would (a new file)."""
    path = folder.path / "dovecot-uidlist"
    header, rest = path.read_bytes().split(b"\n", 1)
    header = re.sub(rb" N\d+", b" N%d" % uid, header)
    temp = path.with_name("uidlist.new")
    temp.write_bytes(header + b"\n" + rest)
    os.replace(temp, path)
