"""Dovecot's passwd-file format: parsing and formatting lines, nothing of the disk.

A line is ``user:password[:uid:gid:gecos:home:shell:extra_fields]``; the password field is
``{SCHEME}hash``.  Lines starting with ``#`` and blank lines are comments.  Every line keeps its
original text, so rewriting the file after a change leaves comments, unknown lines and untouched
users byte for byte as they were.

mailgw's login names are full addresses.  They are compared case-insensitively: the domain is
lower-cased as DNS requires, and so is the local part, as Dovecot's ``%Lu`` does, so
``Bob@Example.ORG`` and ``bob@example.org`` are the same user and the same Maildir.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from mailgw.auth.errors import InvalidAddress

#: The longest address accepted (RFC 5321 4.5.3.1.3 path limit less the angle brackets).
MAX_ADDRESS_LENGTH = 254

#: The fields after the password, in order; the last one takes the rest of the line.
OPTIONAL_FIELDS = ("uid", "gid", "gecos", "home", "shell", "extra_fields")


def _unsafe_part(part: str) -> bool:
    """Is this local part or domain unusable as one directory name?"""
    return not part or part in (".", "..") or part.startswith(".") or "/" in part or "\\" in part


def canonical_address(address: str) -> str:
    """Return ``address`` stripped and lower-cased; raise InvalidAddress if it is not usable.

    Refused: no ``@`` or more than one, ``:`` (the field separator), whitespace, control and
    other invisible characters, a leading ``#`` (it would read as a comment), and a local part or
    domain that is not safe as a directory name (empty, ``.``, ``..``, a leading ``.``, ``/``).
    """
    text = address.strip()
    if not text:
        raise InvalidAddress("empty address")
    if len(text) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress(f"address longer than {MAX_ADDRESS_LENGTH} characters")
    for char in text:
        if char.isspace() or unicodedata.category(char).startswith("C"):
            raise InvalidAddress(f"address contains the character {char!r}")
    if ":" in text:
        raise InvalidAddress("address contains ':'")
    if text.startswith("#"):
        raise InvalidAddress("address starts with '#'")
    if text.count("@") != 1:
        raise InvalidAddress("address must contain exactly one '@'")
    local, _, domain = text.partition("@")
    if _unsafe_part(local) or _unsafe_part(domain):
        raise InvalidAddress(f"{text!r} has a local part or domain unsafe as a directory name")
    return f"{local.lower()}@{domain.lower()}"


def split_scheme(password_field: str) -> tuple[str | None, str]:
    """Split ``{SCHEME}hash`` into ``("SCHEME", "hash")``; no prefix gives ``(None, field)``.

    Scheme names are case-insensitive and returned upper-cased.
    """
    if password_field.startswith("{"):
        end = password_field.find("}")
        if end > 1:
            return password_field[1:end].upper(), password_field[end + 1 :]
    return None, password_field


@dataclass(frozen=True)
class PasswdEntry:
    """One user line, its fields as written."""

    user: str
    password: str
    #: The optional fields present on the line (uid, gid, gecos, home, shell, extra_fields).
    rest: tuple = ()

    def with_password(self, password: str) -> PasswdEntry:
        """The same line with another password field."""
        return PasswdEntry(self.user, password, self.rest)


@dataclass(frozen=True)
class PasswdLine:
    """One line of the file: its text, and the entry or the reason it is not one."""

    number: int
    text: str
    #: The user entry, or None for a comment, a blank line or a line in error.
    entry: PasswdEntry | None = None
    #: Why the line is not usable, or None.
    error: str | None = None


class PasswdSyntaxError(ValueError):
    """A line is not in the passwd-file format."""


def parse_line(line: str) -> PasswdEntry | None:
    """Parse one line (without its line end); None for a comment or blank line.

    Raise PasswdSyntaxError when the line has no password field or an unusable user name.
    """
    text = line.rstrip("\r")
    if not text.strip() or text.lstrip().startswith("#"):
        return None
    fields = text.split(":")
    if len(fields) < 2:
        raise PasswdSyntaxError("no ':' separating the user from the password")
    fixed = len(OPTIONAL_FIELDS) + 1
    if len(fields) > fixed + 1:
        fields = fields[:fixed] + [":".join(fields[fixed:])]
    try:
        canonical_address(fields[0])
    except InvalidAddress as e:
        raise PasswdSyntaxError(f"bad user name: {e}") from None
    return PasswdEntry(fields[0], fields[1], tuple(fields[2:]))


def format_line(entry: PasswdEntry) -> str:
    """The line for ``entry``, without a line end; ``parse_line`` reads it back as equal."""
    return ":".join((entry.user, entry.password, *entry.rest))


def parse_text(text: str) -> list[PasswdLine]:
    """Parse a whole file; a line in error is kept with its reason, never raised."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    parsed = []
    for number, line in enumerate(lines, start=1):
        try:
            parsed.append(PasswdLine(number, line, entry=parse_line(line)))
        except PasswdSyntaxError as e:
            parsed.append(PasswdLine(number, line, error=str(e)))
    return parsed


def format_text(lines: list[PasswdLine]) -> str:
    """The file text for ``lines``, each ended by a newline."""
    return "".join(line.text + "\n" for line in lines)


def entry_line(number: int, entry: PasswdEntry) -> PasswdLine:
    """A new PasswdLine holding ``entry``."""
    return PasswdLine(number, format_line(entry), entry=entry)
