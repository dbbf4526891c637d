"""The Maildir mail store: users' folders, UID index, delivery (see interfaces.py)."""

from mailgw.store.interfaces import (
    FLAGS_ADD,
    FLAGS_REMOVE,
    FLAGS_REPLACE,
    SYSTEM_FLAGS,
    FlagsSet,
    FolderExists,
    InvalidFolderName,
    ModifiedSince,
    NoSuchFolder,
    NoSuchMessage,
    StoreBusy,
    StoreError,
)
from mailgw.store.maildir import IncomingMessage, MaildirStore

__all__ = [
    "FLAGS_ADD",
    "FLAGS_REMOVE",
    "FLAGS_REPLACE",
    "SYSTEM_FLAGS",
    "FlagsSet",
    "FolderExists",
    "IncomingMessage",
    "InvalidFolderName",
    "MaildirStore",
    "ModifiedSince",
    "NoSuchFolder",
    "NoSuchMessage",
    "StoreBusy",
    "StoreError",
]
