"""Telling listeners (IFolderListener) about changes to folders, through a dispatcher."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

FolderId = tuple[str, str]


class Expunged(list):
    """UIDs removed from a folder (a list), with ``modseq``: the modseq of their expunge."""

    def __init__(self, uids: Iterable[int] = (), modseq: int = 0) -> None:
        """The UIDs ``uids``, expunged at ``modseq`` (0: the folder itself was deleted)."""
        super().__init__(uids)
        self.modseq = modseq

    def copy(self) -> Expunged:
        """Another Expunged with the same UIDs and modseq."""
        return Expunged(self, self.modseq)


def call_now(fn: Callable, *args: object) -> None:
    """The default dispatcher: call at once, in the calling thread."""
    fn(*args)


class Listeners:
    """Listeners per folder id; ``dispatch(fn, *args)`` makes every call (e.g. on the reactor)."""

    def __init__(self, dispatch: Callable = call_now) -> None:
        """Make listener calls through ``dispatch``."""
        self._dispatch = dispatch
        self._lock = threading.Lock()
        self._by_folder: dict[FolderId, list] = {}

    def add(self, folder_id: FolderId, listener: object) -> None:
        """Start telling ``listener`` about ``folder_id``."""
        with self._lock:
            self._by_folder.setdefault(folder_id, []).append(listener)

    def remove(self, folder_id: FolderId, listener: object) -> None:
        """Stop telling ``listener`` about ``folder_id`` (no error if it was not listening)."""
        with self._lock:
            listeners = self._by_folder.get(folder_id, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners:
                self._by_folder.pop(folder_id, None)

    def notify(self, folder_id: FolderId, event: str, items: list) -> None:
        """Call ``listener.<event>(folder_id, items)`` for each listener of ``folder_id``."""
        if not items:
            return
        with self._lock:
            listeners = list(self._by_folder.get(folder_id, ()))
        for listener in listeners:
            copy = items.copy() if isinstance(items, Expunged) else list(items)
            self._dispatch(getattr(listener, event), folder_id, copy)
