"""Reading messages as a folder listing named them: the fast reads protocols send messages with.

An IMessageInfo of a listing names one file (in new/ or cur/).  A ``ListedReader`` opens that
file at once, by name relative to the folder's new/ and cur/ (opened once per reader, so no walk
of the whole path per message), without the folder's lock or a directory check, and trusts it
only if it holds exactly the listed size: the store keeps messages with CRLF line ends, so a
file of another size was renamed or removed since the listing, or stored with bare LF by another
program.  Then the reader asks the folder (``open_message``), which finds the message wherever
it is now and converts its line ends.

The ``cached`` reads never wait for the disk: they read with ``RWF_NOWAIT`` (Linux), which fails
rather than wait, and raise ``NotCached`` instead; a caller on the reactor thread reads what is
in the page cache at once and hands the rest to a worker thread.  A reader is used by one thread
at a time; ``close`` gives back its directories.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from zope.interface import implementer

from mailgw.store.interfaces import IListedReader

#: Linux's "fail rather than wait for the disk" flag for reads (None elsewhere).
NOWAIT = getattr(os, "RWF_NOWAIT", None)
#: Octets a header section is read in.
HEADER_READ = 8192


class NotCached(Exception):
    """A read would have to wait for the disk (or the file is not as listed)."""


def ends_header(data: bytes) -> bool:
    """Whether ``data`` (a message's first octets) holds the empty line that ends the header."""
    return data.startswith((b"\r\n", b"\n")) or b"\n\r\n" in data or b"\n\n" in data


@implementer(IListedReader)
class ListedReader:
    """Reads the messages of one folder as its listings name them (module doc)."""

    __slots__ = ("_folder", "_path", "_fds")

    def __init__(self, folder, path: str) -> None:
        """Read the messages of ``folder``, a Maildir at ``path``."""
        self._folder = folder
        self._path = path
        self._fds: dict[str, int] = {}

    def _open(self, info) -> int:
        subdir = "new" if info.recent else "cur"
        directory = self._fds.get(subdir)
        if directory is None:
            directory = os.open(os.path.join(self._path, subdir), os.O_RDONLY | os.O_DIRECTORY)
            self._fds[subdir] = directory
        return os.open(info.filename, os.O_RDONLY, dir_fd=directory)

    def listed(self, info) -> bytes | None:
        """The message if its file is as listed (one open, one read), else None."""
        try:
            fd = self._open(info)
        except OSError:
            return None
        try:
            data = os.read(fd, info.size + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        return data if len(data) == info.size else None

    def whole(self, info) -> bytes:
        """The whole message (CRLF line ends): as listed, else through the folder."""
        data = self.listed(info)
        if data is None:
            with self._folder.open_message(info.uid) as fp:
                data = fp.read()
        return data

    def head(self, info) -> bytes:
        """The message's first octets, at least through the empty line that ends its header
        (or all of it)."""
        fp = self.stream(info) or self._folder.open_message(info.uid)
        with fp:
            data = fp.read(HEADER_READ)
            while not ends_header(data):
                chunk = fp.read(HEADER_READ)
                if not chunk:
                    break
                data += chunk
        return data

    def stream(self, info) -> BinaryIO | None:
        """The message's file, open for reading, if it is as listed; else None."""
        try:
            fd = self._open(info)
        except OSError:
            return None
        file = os.fdopen(fd, "rb", buffering=0)
        if os.fstat(fd).st_size != info.size:
            file.close()
            return None
        return file

    def cached(self, info, count: int | None = None) -> bytes:
        """The message's first ``count`` octets (all if None) if its file is as listed and
        they are in the page cache; else NotCached.  Never waits for the disk.  A whole
        message is read with one octet more asked than listed, which tells its size too."""
        if NOWAIT is None:
            raise NotCached()
        try:
            fd = self._open(info)
        except OSError:
            raise NotCached() from None
        whole = count is None or count >= info.size
        want = info.size if whole else count
        try:
            if not whole and os.fstat(fd).st_size != info.size:
                raise NotCached()
            buffer = bytearray(want + whole)
            got = os.preadv(fd, [buffer], 0, NOWAIT)
        except OSError:  # BlockingIOError: not in the page cache
            raise NotCached() from None
        finally:
            os.close(fd)
        if got != want:
            raise NotCached()
        return bytes(memoryview(buffer)[:want]) if whole else bytes(buffer)

    def cached_head(self, info) -> bytes:
        """``head`` from the page cache only (NotCached otherwise)."""
        data = self.cached(info, HEADER_READ)
        if len(data) < info.size and not ends_header(data):
            raise NotCached()
        return data

    def close(self) -> None:
        """Give back the directories (the reader may be used again: it reopens them)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> ListedReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
