"""A user's subscribed folders, in Dovecot's ``subscriptions`` file at the top of their Maildir.

One folder name per line, UTF-8, '.' as the hierarchy delimiter (the plain format Dovecot reads
and, for a Maildir++ layout, writes).  Blocking and thread-safe (one lock per file); the file is
replaced atomically and durably on each change.
"""

from __future__ import annotations

import threading
from pathlib import Path

from mailgw.durable import replace_file
from mailgw.store.files import FILE_MODE, store_error
from mailgw.store.names import canonical_folder

SUBSCRIPTIONS_FILE = "subscriptions"

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def read_subscriptions(user_dir: Path) -> list[str] | None:
    """The subscribed names in file order, or None if the user has no file yet."""
    path = user_dir / SUBSCRIPTIONS_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise store_error("cannot read the subscriptions", e) from e
    lines = text.splitlines()
    if lines and lines[0].startswith("V\t"):
        # Dovecot's version 2 header: "V\t2", an empty line, then names with '\t' for hierarchy.
        lines = [line.replace("\t", ".") for line in lines[2:]]
    return [line for line in dict.fromkeys(lines) if line]


def change_subscriptions(user_dir: Path, add=(), remove=()) -> list[str]:
    """Subscribe ``add`` and unsubscribe ``remove`` (folder names); return the new list.

    Names are validated like folder names (so nothing odd reaches the file)."""
    path = user_dir / SUBSCRIPTIONS_FILE
    add = [canonical_folder(name) for name in add]
    remove = {canonical_folder(name) for name in remove}
    with _lock(path):
        names = read_subscriptions(user_dir) or []
        updated = [n for n in names if n not in remove]
        updated += [n for n in add if n not in updated]
        if updated != names or not path.exists():
            data = "".join(f"{name}\n" for name in updated).encode("utf-8")
            try:
                replace_file(path, data, FILE_MODE)
            except OSError as e:
                raise store_error("cannot save the subscriptions", e) from e
        return updated
