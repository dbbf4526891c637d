"""IMAP flags in Maildir file names: system flags as capital letters, keywords as a..z.

Keywords are kept the way Dovecot keeps them: the ``dovecot-keywords`` file of a folder maps
indexes to names (lines ``<index> <keyword>``) and the letter ``a`` + index stands for the
keyword in the ``:2,`` info part of a file name.  So at most 26 keywords per folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from mailgw.durable import replace_file
from mailgw.store.files import FILE_MODE, store_error
from mailgw.store.interfaces import (
    FLAGS_ADD,
    FLAGS_REMOVE,
    FLAGS_REPLACE,
    SYSTEM_FLAGS,
    StoreError,
)

KEYWORDS_FILE = "dovecot-keywords"
MAX_KEYWORDS = 26
MAX_KEYWORD_LENGTH = 100

_LETTER_FLAGS = {letter: flag for flag, letter in SYSTEM_FLAGS.items()}
_SYSTEM_BY_LOWER = {flag.lower(): flag for flag in SYSTEM_FLAGS}
# Characters that cannot be in an IMAP atom (RFC 3501 atom-specials), plus ']'.
_NOT_IN_ATOM = frozenset('(){ %*"\\]')


class Keywords:
    """A folder's keyword table (``dovecot-keywords``), read when its file changes."""

    def __init__(self, directory: Path) -> None:
        """Use the table in ``directory`` (created on the first new keyword)."""
        self._path = directory / KEYWORDS_FILE
        self._names: list[str | None] = [None] * MAX_KEYWORDS
        self._stamp: tuple[int, int] | None = None
        self._cache: dict[str, frozenset] = {}

    def reload(self) -> None:
        """Re-read the table if its file changed since the last look."""
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            stamp = None
        else:
            stamp = (st.st_ino, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        names: list[str | None] = [None] * MAX_KEYWORDS
        if stamp is not None:
            with open(self._path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    index, _, name = line.rstrip("\n").partition(" ")
                    if index.isdigit() and int(index) < MAX_KEYWORDS and name:
                        names[int(index)] = name
        self._names = names
        self._stamp = stamp
        self._cache.clear()

    def flags_of(self, info: str | None) -> frozenset:
        """Return the IMAP flags an info part (the text after ':' in a file name) stands for."""
        if not info:
            return frozenset()
        cached = self._cache.get(info)
        if cached is None:
            letters = info[2:] if info.startswith("2,") else ""
            flags = set()
            for letter in letters:
                if letter in _LETTER_FLAGS:
                    flags.add(_LETTER_FLAGS[letter])
                elif "a" <= letter <= "z":
                    name = self._names[ord(letter) - ord("a")]
                    if name is not None:
                        flags.add(name)
            cached = self._cache[info] = frozenset(flags)
        return cached

    def info_of(self, flags) -> str:
        """Return the info part ('2,' + sorted letters) for these flags, adding new keywords.

        Raise StoreError for a flag that cannot be stored (``\\Recent``, an unknown system flag,
        a keyword that is not an IMAP atom, or a 27th keyword).
        """
        letters = set()
        for flag in flags:
            if not isinstance(flag, str) or not flag:
                raise StoreError(f"not a flag: {flag!r}")
            if flag.startswith("\\"):
                system = _SYSTEM_BY_LOWER.get(flag.lower())
                if system is None:
                    raise StoreError(f"flag cannot be stored: {flag}")
                letters.add(SYSTEM_FLAGS[system])
            else:
                letters.add(self._letter_for(flag))
        return "2," + "".join(sorted(letters))

    def infos_for(
        self,
        messages: Sequence,
        flags: frozenset,
        mode: str,
        lock: Callable[[], AbstractContextManager],
    ) -> list[tuple[object, str]]:
        """``(message, info part)`` for each message (with ``flags``), the info part its file is
        to have once ``flags`` replace (FLAGS_REPLACE), are added to (FLAGS_ADD) or removed
        from (FLAGS_REMOVE) the message's flags.

        Raise StoreError for a flag that cannot be stored, or an unknown mode.  New keywords
        are added to the table holding ``lock()`` (the writers' lock of the folder)."""
        if mode not in (FLAGS_REPLACE, FLAGS_ADD, FLAGS_REMOVE):
            raise StoreError(f"no such way to set flags: {mode!r}")
        infos: dict[frozenset, str] = {}

        def targets() -> list[tuple[object, str]]:
            result = []
            for message in messages:
                if mode == FLAGS_ADD:
                    wanted = message.flags | flags
                elif mode == FLAGS_REMOVE:
                    wanted = message.flags - flags
                else:
                    wanted = flags
                info = infos.get(wanted)
                if info is None:
                    info = infos[wanted] = self.info_of(wanted)
                result.append((message, info))
            return result

        if mode == FLAGS_REMOVE or all(
            flag.startswith("\\") for flag in flags if isinstance(flag, str)
        ):
            return targets()
        with lock():
            return targets()

    def _letter_for(self, keyword: str) -> str:
        if len(keyword) > MAX_KEYWORD_LENGTH or any(
            ord(c) <= 32 or ord(c) >= 127 or c in _NOT_IN_ATOM for c in keyword
        ):
            raise StoreError(f"keyword not allowed: {keyword!r}")
        self.reload()
        lowered = keyword.lower()
        free = None
        for index, name in enumerate(self._names):
            if name is None:
                free = index if free is None else free
            elif name.lower() == lowered:
                return chr(ord("a") + index)
        if free is None:
            raise StoreError(f"no room for another keyword in this folder ({MAX_KEYWORDS} max)")
        self._names[free] = keyword
        self._save()
        return chr(ord("a") + free)

    def _save(self) -> None:
        text = "".join(f"{i} {name}\n" for i, name in enumerate(self._names) if name is not None)
        try:
            replace_file(
                self._path,
                text.encode("utf-8"),
                FILE_MODE,
                crash_steps=("keywords.written", "keywords.renamed"),
            )
        except OSError as e:
            raise store_error("cannot save the keyword table", e) from e
        st = os.stat(self._path)
        self._stamp = (st.st_ino, st.st_mtime_ns)
        self._cache.clear()
