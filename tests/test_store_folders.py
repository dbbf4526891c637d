"""Folders and names in the store: Maildir++ layout, create/delete/rename, refused names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailgw.store import (
    FolderExists,
    InvalidFolderName,
    MaildirStore,
    NoSuchFolder,
    StoreError,
)

USER = "alice@example.test"


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    """A store over a fresh data directory."""
    return MaildirStore(tmp_path / "mail", tmp_path / "tmp", "mx.example.test")


def tree(root: Path) -> set[str]:
    """Every path under ``root``, relative."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_layout_on_disk(store, tmp_path):
    store.folder("Alice@Example.TEST")
    store.create_folder(USER, "Archive.2024")
    user = tmp_path / "mail" / "example.test" / "alice"
    assert {"new", "cur", "tmp"} <= set(os.listdir(user))
    sub = user / ".Archive.2024"
    assert {"new", "cur", "tmp", "maildirfolder", "dovecot-uidlist"} <= set(os.listdir(sub))
    assert (user / ".Archive" / "maildirfolder").exists()
    assert (tmp_path / "mail" / "example.test" / "Alice").is_dir()
    assert store.list_folders(USER) == ["INBOX", "Archive", "Archive.2024"]


def test_inbox_in_any_case_is_the_top_maildir(store):
    uid = store.folder(USER, "inbox").append(b"x\r\n")
    assert store.folder(USER, "InBoX").get(uid).size == 3
    assert store.folder(USER).name == "INBOX"
    with pytest.raises(FolderExists):
        store.create_folder(USER, "Inbox")


def test_folders_keep_their_own_uids(store):
    sent = store.create_folder(USER, "Sent")
    inbox = store.folder(USER)
    assert sent.append(b"a\r\n") == 1
    assert inbox.append(b"b\r\n") == 1
    assert sent.uid_validity != 0 and inbox.uid_validity != 0
    assert store.folder(USER, "Sent") is sent


def test_missing_folder(store):
    with pytest.raises(NoSuchFolder):
        store.folder(USER, "Nope")
    with pytest.raises(NoSuchFolder):
        store.delete_folder(USER, "Nope")
    with pytest.raises(NoSuchFolder):
        store.rename_folder(USER, "Nope", "Other")


def test_create_existing_folder(store):
    store.create_folder(USER, "Sent")
    with pytest.raises(FolderExists):
        store.create_folder(USER, "Sent")


def test_delete_folder_and_recreate_gets_larger_uidvalidity(store):
    folder = store.create_folder(USER, "Trash")
    folder.append(b"x\r\n")
    validity = folder.uid_validity
    store.delete_folder(USER, "Trash")
    assert store.list_folders(USER) == ["INBOX"]
    with pytest.raises(NoSuchFolder):
        folder.messages()
    again = store.create_folder(USER, "Trash")
    assert again.uid_validity > validity
    assert again.messages() == ()
    assert os.listdir(store.tmp_dir) == []


def test_delete_inbox_refused(store):
    store.folder(USER).append(b"x\r\n")
    with pytest.raises(StoreError):
        store.delete_folder(USER, "INBOX")
    assert len(store.folder(USER).messages()) == 1


def test_delete_keeps_subfolders(store):
    store.create_folder(USER, "A.B")
    store.delete_folder(USER, "A")
    assert store.list_folders(USER) == ["INBOX", "A.B"]


def test_rename_folder_with_children(store):
    work = store.create_folder(USER, "Work")
    uid = work.append(b"keep me\r\n")
    validity = work.uid_validity
    store.create_folder(USER, "Work.2023").append(b"old\r\n")
    store.create_folder(USER, "Workshop")
    store.rename_folder(USER, "Work", "Old.Work")
    assert store.list_folders(USER) == ["INBOX", "Old", "Old.Work", "Old.Work.2023", "Workshop"]
    moved = store.folder(USER, "Old.Work")
    assert moved.uid_validity == validity
    with moved.open_message(uid) as f:
        assert f.read() == b"keep me\r\n"
    assert len(store.folder(USER, "Old.Work.2023").messages()) == 1
    with pytest.raises(NoSuchFolder):
        work.messages()


def test_rename_refusals(store):
    store.create_folder(USER, "A")
    store.create_folder(USER, "B")
    with pytest.raises(StoreError):
        store.rename_folder(USER, "INBOX", "Old")
    with pytest.raises(FolderExists):
        store.rename_folder(USER, "A", "B")
    with pytest.raises(FolderExists):
        store.rename_folder(USER, "A", "inbox")
    with pytest.raises(InvalidFolderName):
        store.rename_folder(USER, "A", "A.inside")
    with pytest.raises(InvalidFolderName):
        store.rename_folder(USER, "A", "../escape")
    assert store.list_folders(USER) == ["INBOX", "A", "B"]


BAD_FOLDER_NAMES = [
    "",
    ".",
    "..",
    "../x",
    "a/../../b",
    "a/b",
    "/etc",
    "a\\b",
    "a\x00b",
    "a\nb",
    "a\rb",
    "tab\there",
    "del\x7f",
    "c1\x85",
    ".hidden",
    "trailing.",
    "a..b",
    "new",
    "CUR",
    "Tmp",
    "a.new",
    "cur.b",
    "x" * 201,
    "\u00e9" * 130,
]


@pytest.mark.parametrize("name", BAD_FOLDER_NAMES)
def test_bad_folder_names_refused(store, tmp_path, name):
    store.folder(USER)
    before = tree(tmp_path)
    with pytest.raises(InvalidFolderName):
        store.create_folder(USER, name)
    with pytest.raises(InvalidFolderName):
        store.folder(USER, name)
    with pytest.raises(InvalidFolderName):
        store.delete_folder(USER, name)
    assert tree(tmp_path) == before


def test_long_but_allowed_folder_name(store):
    name = "x" * 200
    store.create_folder(USER, name)
    assert name in store.list_folders(USER)


def test_foreign_directories_are_not_listed(store):
    user = store.user_dir(USER)
    store.folder(USER)
    (user / ".half-made").mkdir()
    (user / "..evil").mkdir()
    (user / ".new" / "cur").mkdir(parents=True)
    assert store.list_folders(USER) == ["INBOX"]


BAD_ADDRESSES = [
    "noat",
    "@example.test",
    "alice@",
    "../x@example.test",
    "a/b@example.test",
    ".@example.test",
    "..@example.test",
    ".alice@example.test",
    "alice@..",
    "alice@.example.test",
    "alice@exa/mple.test",
    "al\x00ice@example.test",
    "al\nice@example.test",
    "alice@exam\\ple.test",
]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_bad_addresses_refused(store, tmp_path, address):
    before = tree(tmp_path)
    with pytest.raises(StoreError):
        store.folder(address)
    with pytest.raises(StoreError):
        store.list_folders(address)
    incoming = store.incoming()
    incoming.write(b"x\r\n")
    with pytest.raises(StoreError):
        incoming.commit([address])
    assert tree(tmp_path) == before


def test_non_ascii_folder_names_are_modified_utf7_on_disk(store):
    """As Dovecot keeps them: "Entwürfe.Alte & Neue" is ".Entw&APw-rfe.Alte &- Neue" on disk."""
    store.create_folder(USER, "Entwürfe.Alte & Neue")
    user_dir = store.user_dir(USER)
    assert (user_dir / ".Entw&APw-rfe.Alte &- Neue" / "cur").is_dir()
    assert "Entwürfe.Alte & Neue" in store.list_folders(USER)
    uid = store.folder(USER, "Entwürfe.Alte & Neue").append(b"Subject: x\r\n\r\nbody\r\n")
    assert [m.uid for m in store.folder(USER, "Entwürfe.Alte & Neue").messages()] == [uid]


def test_directories_not_in_modified_utf7_are_not_folders(store):
    """A directory another program named in raw UTF-8 or with a stray '&' is left alone."""
    user_dir = store.user_dir(USER)
    for name in (".Entwürfe", ".a&b", ".&Jjo"):
        for sub in ("cur", "new", "tmp"):
            (user_dir / name / sub).mkdir(parents=True)
    assert store.list_folders(USER) == ["INBOX"]
