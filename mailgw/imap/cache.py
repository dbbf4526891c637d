"""Serialised ENVELOPE, BODY and BODYSTRUCTURE items, shared by every session of the process.

A message's content never changes under its UID, so what was computed for
``(address, folder name, UIDVALIDITY, UID)`` stays true for as long as the folder keeps that
UIDVALIDITY (a new one makes new keys; the old entries are never asked for again and age
out).  The cache is a least-recently-used map bounded by the octets it holds (``LIMIT``), safe
to use from the reactor and from worker threads at once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

#: Octets of cached items (keys and values, estimated) held at most.
LIMIT = 32 * 1024 * 1024
#: What one entry costs beside its value's octets (key tuple, dict slot, bytes header).
_OVERHEAD = 200


class ItemCache:
    """A bounded LRU map from ``((address, folder name, UIDVALIDITY), UID, item name)`` to
    the item's serialised bytes."""

    def __init__(self, limit: int = LIMIT) -> None:
        """Hold at most ``limit`` octets (an item larger than that is never kept)."""
        self.limit = limit
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """The octets the cache holds now (as it counts them: at most ``limit``)."""
        return self._size

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple) -> bytes | None:
        """The item stored under ``key``, or None; a hit makes it the most recently used."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple, value: bytes) -> None:
        """Keep ``value`` under ``key``, dropping the least recently used items as needed."""
        cost = len(value) + _OVERHEAD
        if cost > self.limit:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old) + _OVERHEAD
            self._items[key] = value
            self._size += cost
            while self._size > self.limit:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped) + _OVERHEAD

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._items.clear()
            self._size = 0


#: The cache every session of this process uses.
items = ItemCache()
