"""The Maildir mail store: users' folders, UID index, delivery (see interfaces.py)."""

from mailgw.store.interfaces import (
    SYSTEM_FLAGS,
    FolderExists,
    InvalidFolderName,
    NoSuchFolder,
    NoSuchMessage,
    StoreBusy,
    StoreError,
)
from mailgw.store.maildir import IncomingMessage, MaildirStore

__all__ = [
    "SYSTEM_FLAGS",
    "FolderExists",
    "IncomingMessage",
    "InvalidFolderName",
    "MaildirStore",
    "NoSuchFolder",
    "NoSuchMessage",
    "StoreBusy",
    "StoreError",
]
