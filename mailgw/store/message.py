"""One message's metadata as the store hands it out (IMessageInfo), read from its file name,
and the listing of a Maildir's message files it is read from."""

from __future__ import annotations

import os
from pathlib import Path

from zope.interface import implementer

from mailgw.store.files import crlf_size, store_error
from mailgw.store.interfaces import IMessageInfo, NoSuchFolder


def number_after(key: str, field: str) -> int | None:
    """The number that follows ``field`` (e.g. ``",W="``) in a Maildir base name, if any."""
    start = key.find(field)
    if start < 0:
        return None
    start += len(field)
    end = start
    while end < len(key) and key[end].isdigit():
        end += 1
    return int(key[start:end]) if end > start else None


def date_from_key(key: str) -> float | None:
    """Return the time stamp a Maildir base name starts with (``<sec>[.M<usec>]``), if any."""
    sec, _, rest = key.partition(".")
    if not sec.isdigit():
        return None
    usec = number_after(rest, "M") if rest.startswith("M") else None
    return int(sec) + (usec or 0) / 1_000_000


@implementer(IMessageInfo)
class MessageInfo:
    """An immutable snapshot of one message; size and date are read from the name on demand."""

    __slots__ = ("uid", "key", "flags", "recent", "info", "modseq", "_size", "_date")

    def __init__(
        self,
        uid: int,
        key: str,
        flags: frozenset,
        recent: bool,
        info: str | None,
        size: int | None = None,
        date: float | None = None,
        modseq: int = 1,
    ) -> None:
        """Describe the file ``key[:info]`` in new/ (``recent``) or cur/ with UID ``uid``,
        whose metadata last changed at ``modseq``."""
        self.uid = uid
        self.key = key
        self.flags = flags
        self.recent = recent
        #: The info part of the file name (text after ':'), or None.
        self.info = info
        #: The modseq of the message's last change (delivery, flags).
        self.modseq = modseq
        self._size = size
        self._date = date

    @property
    def size(self) -> int:
        """Size in octets with CRLF line endings (read from the name once, then kept)."""
        if self._size is None:
            self._size = number_after(self.key, ",W=") or 0
        return self._size

    @property
    def internal_date(self) -> float:
        """The internal date (a POSIX time stamp), from the name or the file's mtime."""
        if self._date is not None:
            return self._date
        return date_from_key(self.key) or 0.0

    @property
    def filename(self) -> str:
        """The file's name in new/ or cur/."""
        return f"{self.key}:{self.info}" if self.info is not None else self.key

    @property
    def subdir(self) -> str:
        """'new' or 'cur'."""
        return "new" if self.recent else "cur"

    def __repr__(self) -> str:
        return (
            f"<MessageInfo uid={self.uid} flags={sorted(self.flags)} recent={self.recent} "
            f"modseq={self.modseq}>"
        )


def list_files(path: Path, name: str) -> dict[str, tuple[bool, str | None]]:
    """The message files of the Maildir ``path`` (folder ``name``, for errors): base name ->
    (in new/, info part or None).  Raise NoSuchFolder if it is gone, StoreError."""
    files: dict[str, tuple[bool, str | None]] = {}
    for subdir, recent in (("new", True), ("cur", False)):
        try:
            names = os.listdir(path / subdir)
        except FileNotFoundError:
            raise NoSuchFolder(f"folder {name!r} no longer exists") from None
        except OSError as e:
            raise store_error(f"cannot list folder {name!r}", e) from e
        for entry in names:
            if entry[:1] == ".":
                continue
            key, sep, info = entry.partition(":")
            files[key] = (recent, info if sep else None)
    return files


def foreign_size(path: Path, key: str, recent: bool, info: str | None) -> int:
    """The CRLF size of a message file whose name does not say it (read once), or its S=."""
    name = f"{key}:{info}" if info is not None else key
    try:
        return crlf_size(path / ("new" if recent else "cur") / name)
    except OSError:
        return number_after(key, ",S=") or 0


def foreign_date(path: Path, key: str, recent: bool, info: str | None) -> float:
    """The internal date of a message file whose name does not start with one: its mtime."""
    name = f"{key}:{info}" if info is not None else key
    try:
        return os.stat(path / ("new" if recent else "cur") / name).st_mtime
    except OSError:
        return 0.0
