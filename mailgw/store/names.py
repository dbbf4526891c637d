"""Validation of the names that become paths: user addresses and folder names.

Everything a client can choose and that ends up in a path goes through here first, so nothing
can escape the mail directory (``..``, ``/``, NUL) or clash with the Maildir layout
(``new``/``cur``/``tmp``).
"""

from __future__ import annotations

import base64
import re

from mailgw.store.interfaces import InvalidFolderName, StoreError

#: Longest folder name accepted, in characters.
MAX_FOLDER_NAME = 200
#: Longest folder name accepted, in octets on disk (a directory name is at most 255 octets).
MAX_FOLDER_NAME_OCTETS = 250
#: The Maildir++ hierarchy delimiter.
DELIMITER = "."

_RESERVED = frozenset({"new", "cur", "tmp"})
_FORBIDDEN = frozenset("/\\\0")


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def split_address(address: str) -> tuple[str, str]:
    """Return ``(domain, localpart)`` of ``localpart@domain``, the domain lower-cased.

    Raise StoreError for an address whose parts could not safely be a directory name.
    """
    if not isinstance(address, str) or "@" not in address:
        raise StoreError(f"not an address: {address!r}")
    localpart, _, domain = address.rpartition("@")
    domain = domain.lower()
    for part in (localpart, domain):
        if (
            not part
            or part.startswith(".")
            or len(part) > 255
            or _has_control(part)
            or any(c in _FORBIDDEN for c in part)
        ):
            raise StoreError(f"address not allowed: {address!r}")
    return domain, localpart


def canonical_address(address: str) -> str:
    """Return the address with its domain lower-cased (after validation)."""
    domain, localpart = split_address(address)
    return f"{localpart}@{domain}"


def canonical_folder(name: str) -> str:
    """Return the folder name to use: 'INBOX' for any case of it, else ``name`` itself.

    Raise InvalidFolderName for a name that is not allowed.
    """
    if not isinstance(name, str) or not name:
        raise InvalidFolderName("empty folder name")
    if name.upper() == "INBOX":
        return "INBOX"
    if len(name) > MAX_FOLDER_NAME or len(encode_mutf7(name)) > MAX_FOLDER_NAME_OCTETS:
        raise InvalidFolderName("folder name too long")
    if _has_control(name) or any(c in _FORBIDDEN for c in name):
        raise InvalidFolderName("folder name has a forbidden character")
    for component in name.split(DELIMITER):
        if not component:
            raise InvalidFolderName("folder name has an empty level (leading, trailing or '..')")
        if component.lower() in _RESERVED:
            raise InvalidFolderName(f"folder name may not have a level named {component!r}")
    return name


def folder_dir_name(name: str) -> str:
    """Return the Maildir++ directory name of a (canonical, non-INBOX) folder.

    '.' + the name in modified UTF-7 (RFC 3501 5.1.3), as Dovecot's default Maildir++ layout
    keeps it on disk, so that Dovecot and mutt open every folder mailgw creates."""
    return DELIMITER + encode_mutf7(name)


def folder_from_dir_name(dir_name: str) -> str | None:
    """Return the folder a directory of a user's Maildir holds, or None if it holds none."""
    if not dir_name.startswith(DELIMITER):
        return None
    try:
        name = canonical_folder(decode_mutf7(dir_name[1:]))
    except (InvalidFolderName, ValueError):
        return None
    return None if name == "INBOX" else name


_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]+")
_TO_SHIFT = re.compile(r"&|[^\x20-\x7e]+")
_SHIFTED = re.compile(r"&([A-Za-z0-9+,]*)-")


def encode_mutf7(text: str) -> str:
    """Encode ``text`` in IMAP's modified UTF-7: '&' as '&-', non-ASCII runs as '&base64-'."""

    def shifted(match: re.Match) -> str:
        if match.group() == "&":
            return "&-"
        utf16 = match.group().encode("utf-16-be", "surrogatepass")
        return "&" + base64.b64encode(utf16).decode("ascii").rstrip("=").replace("/", ",") + "-"

    return _TO_SHIFT.sub(shifted, text)


def decode_mutf7(text: str) -> str:
    """Decode IMAP's modified UTF-7; raise ValueError for text that is not valid in it."""

    def unshifted(match: re.Match) -> str:
        run = match.group(1)
        if not run:
            return "&"
        padded = run.replace(",", "/") + "=" * (-len(run) % 4)
        return base64.b64decode(padded, validate=True).decode("utf-16-be")

    unshifted_part = _SHIFTED.sub("", text)
    if "&" in unshifted_part or _NOT_PRINTABLE.search(unshifted_part):
        raise ValueError(f"not modified UTF-7: {text!r}")
    return _SHIFTED.sub(unshifted, text)
