"""The Maildir store: delivery, sizes, flags in file names, UIDs, concurrency, other readers."""

from __future__ import annotations

import errno
import mailbox
import os
import threading
import time
from pathlib import Path

import pytest

from mailgw.store import MaildirStore, NoSuchMessage, StoreError
from mailgw.store.folder import SETTLE_NS
from mailgw.store.interfaces import IFolder, IMailStore, IMessageInfo
from mailgw.store.maildir import MEMORY_SPOOL

USER = "alice@example.test"


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    """A store over a fresh data directory."""
    return MaildirStore(tmp_path / "mail", tmp_path / "tmp", "mx.example.test")


def reopen(store: MaildirStore) -> MaildirStore:
    """A new store instance over the same directories (as after a restart)."""
    return MaildirStore(store.mail_dir, store.tmp_dir, store.hostname)


def inbox_dir(store: MaildirStore, address: str = USER) -> Path:
    """The INBOX directory of ``address``."""
    return store.user_dir(address)


def files_in(directory: Path) -> list[str]:
    """Names of the files in ``directory``."""
    return sorted(os.listdir(directory))


def test_provides_the_interfaces(store):
    folder = store.folder(USER)
    folder.append(b"x\r\n")
    assert IMailStore.providedBy(store)
    assert IFolder.providedBy(folder)
    assert IMessageInfo.providedBy(folder.messages()[0])


def test_append_reads_back_byte_identical(store):
    data = b"From: a@b\r\nSubject: hi\r\n\r\n" + bytes(range(256)).replace(b"\n", b"") + b"\r\n"
    folder = store.folder(USER)
    uid = folder.append(data)
    with folder.open_message(uid) as f:
        assert f.read() == data
    [name] = files_in(inbox_dir(store) / "new")
    assert (inbox_dir(store) / "new" / name).read_bytes() == data
    assert files_in(inbox_dir(store) / "tmp") == []


def test_append_normalises_bare_lf_and_reports_crlf_size(store):
    folder = store.folder(USER)
    uid = folder.append(b"Subject: x\n\nline one\r\nline two\n")
    stored = b"Subject: x\r\n\r\nline one\r\nline two\r\n"
    info = folder.get(uid)
    [name] = files_in(inbox_dir(store) / "new")
    path = inbox_dir(store) / "new" / name
    assert path.read_bytes() == stored
    assert info.size == len(stored) == path.stat().st_size
    assert name.endswith(f",S={len(stored)},W={len(stored)}")


def test_unique_name_format_escapes_hostname(tmp_path):
    store = MaildirStore(tmp_path / "mail", tmp_path / "tmp", "mx/odd:host")
    store.folder(USER).append(b"x\r\n")
    [name] = files_in(store.user_dir(USER) / "new")
    sec, rest = name.split(".", 1)
    assert sec.isdigit() and rest.startswith("M")
    assert "P" in rest and "Q" in rest and "R" in rest
    assert ".mx\\057odd\\072host,S=3,W=3" in name
    assert "/" not in name and ":" not in name


def test_internal_date_is_kept(store):
    folder = store.folder(USER)
    uid = folder.append(b"x\r\n", internal_date=1_000_000_000.25)
    assert folder.get(uid).internal_date == pytest.approx(1_000_000_000.25, abs=1e-5)
    assert reopen(store).folder(USER).get(uid).internal_date == pytest.approx(
        1_000_000_000.25, abs=1e-5
    )


def test_flags_are_in_the_file_names(store):
    folder = store.folder(USER)
    uid = folder.append(b"x\r\n")
    info = folder.set_flags(uid, {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})
    assert info.flags == {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"}
    assert not info.recent
    [name] = files_in(inbox_dir(store) / "cur")
    assert name.endswith(":2,DFRST")
    assert files_in(inbox_dir(store) / "new") == []
    folder.set_flags(uid, ["\\seen"])
    [name] = files_in(inbox_dir(store) / "cur")
    assert name.endswith(":2,S")
    folder.set_flags(uid, [])
    [name] = files_in(inbox_dir(store) / "cur")
    assert name.endswith(":2,")
    assert reopen(store).folder(USER).get(uid).flags == frozenset()


def test_keywords_are_kept_dovecot_style(store):
    folder = store.folder(USER)
    uid = folder.append(b"x\r\n", flags=["$Junk", "\\Seen"])
    folder.set_flags(uid, ["\\Seen", "$Junk", "Work"])
    [name] = files_in(inbox_dir(store) / "cur")
    assert name.endswith(":2,Sab")
    keywords = (inbox_dir(store) / "dovecot-keywords").read_text()
    assert keywords == "0 $Junk\n1 Work\n"
    assert reopen(store).folder(USER).get(uid).flags == {"\\Seen", "$Junk", "Work"}


@pytest.mark.parametrize("flag", ["\\Recent", "\\Bogus", "bad keyword", "a(b", "", "x" * 101])
def test_unstorable_flags_are_refused(store, flag):
    folder = store.folder(USER)
    uid = folder.append(b"x\r\n")
    with pytest.raises(StoreError):
        folder.set_flags(uid, [flag])
    assert folder.get(uid).flags == frozenset()
    assert files_in(inbox_dir(store) / "cur") == []


def test_more_than_26_keywords_refused(store):
    folder = store.folder(USER)
    uid = folder.append(b"x\r\n")
    folder.set_flags(uid, [f"k{i}" for i in range(26)])
    with pytest.raises(StoreError):
        folder.set_flags(uid, ["one-too-many"])
    assert len(folder.get(uid).flags) == 26


def test_mark_seen_by_client_moves_to_cur(store):
    folder = store.folder(USER)
    uid = folder.append(b"x\r\n")
    assert folder.get(uid).recent
    folder.mark_seen_by_client([uid])
    assert not folder.get(uid).recent
    [name] = files_in(inbox_dir(store) / "cur")
    assert name.endswith(":2,")
    assert files_in(inbox_dir(store) / "new") == []


def test_uids_ascend_and_are_never_reused(store):
    folder = store.folder(USER)
    uids = [folder.append(f"m{i}\r\n".encode()) for i in range(5)]
    assert uids == [1, 2, 3, 4, 5]
    assert folder.expunge([4, 5, 99]) == [4, 5]
    assert [m.uid for m in folder.messages()] == [1, 2, 3]
    assert folder.append(b"again\r\n") == 6
    folder.expunge([6])
    again = reopen(store).folder(USER)
    assert again.uid_next == 7
    assert again.append(b"after restart\r\n") == 7
    with pytest.raises(NoSuchMessage):
        again.open_message(4)
    with pytest.raises(NoSuchMessage):
        again.get(6)


def test_uidvalidity_and_uids_stable_across_restart(store):
    folder = store.folder(USER)
    for i in range(3):
        folder.append(f"m{i}\r\n".encode(), flags=["\\Seen"] if i else [])
    before = [(m.uid, m.key, m.flags, m.size) for m in folder.messages()]
    again = reopen(store).folder(USER)
    assert again.uid_validity == folder.uid_validity > 0
    assert [(m.uid, m.key, m.flags, m.size) for m in again.messages()] == before


def test_expunge_removes_the_files(store):
    folder = store.folder(USER)
    a = folder.append(b"a\r\n")
    b = folder.append(b"b\r\n", flags=["\\Seen"])
    assert folder.expunge([a, b]) == [a, b]
    assert files_in(inbox_dir(store) / "new") == files_in(inbox_dir(store) / "cur") == []
    assert folder.messages() == ()


def test_concurrent_delivery_400_distinct_messages(store):
    folder = store.folder(USER)
    errors = []

    def worker(n: int) -> None:
        try:
            for i in range(50):
                body = f"Subject: {n}-{i}\r\n\r\n{'x' * (n * 50 + i)}\r\n".encode()
                if i % 2:
                    folder.append(body)
                else:
                    incoming = store.incoming()
                    incoming.write(body)
                    incoming.commit([USER])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    messages = folder.messages()
    assert len(messages) == 400
    assert [m.uid for m in messages] == list(range(1, 401))
    bodies = set()
    for m in messages:
        with folder.open_message(m.uid) as f:
            data = f.read()
        assert len(data) == m.size
        bodies.add(data)
    expected = {
        f"Subject: {n}-{i}\r\n\r\n{'x' * (n * 50 + i)}\r\n".encode()
        for n in range(8)
        for i in range(50)
    }
    assert bodies == expected
    assert len(files_in(inbox_dir(store) / "new")) == 400
    assert files_in(inbox_dir(store) / "tmp") == []
    assert files_in(store.tmp_dir) == []
    assert len(reopen(store).folder(USER).messages()) == 400


def test_python_mailbox_reads_our_folders(store):
    folder = store.create_folder(USER, "Archive.2024")
    first = folder.append(b"Subject: one\r\n\r\nbody one\r\n")
    second = folder.append(b"Subject: two\r\n\r\nbody two\r\n", flags=["\\Seen", "\\Flagged"])
    folder.set_flags(first, ["\\Answered"])
    inbox = store.folder(USER)
    inbox.append(b"Subject: in\r\n\r\nin\r\n")
    reader = mailbox.Maildir(inbox_dir(store), factory=None, create=False)
    assert reader.list_folders() == ["Archive", "Archive.2024"]
    sub = reader.get_folder("Archive.2024")
    seen = {}
    for key in sub.keys():
        message = sub.get_message(key)
        seen[message["Subject"]] = (message.get_flags(), sub.get_bytes(key))
    assert seen == {
        "one": ("R", b"Subject: one\r\n\r\nbody one\r\n"),
        "two": ("FS", b"Subject: two\r\n\r\nbody two\r\n"),
    }
    assert {m.key for m in folder.messages()} == set(sub.keys())
    assert [m.uid for m in folder.messages()] == [first, second]
    assert len(reader) == 1


def test_incoming_to_three_recipients_shares_one_file(store):
    recipients = ["a@example.test", "b@example.test", "C@Example.TEST"]
    incoming = store.incoming()
    incoming.write(b"Subject: hello\r\n\r\n")
    incoming.write(b"body\r\n")
    assert incoming.size == 24
    uids = incoming.commit(recipients)
    assert uids == {address: 1 for address in recipients}
    inodes = set()
    for address in recipients:
        folder = store.folder(address)
        [info] = folder.messages()
        assert info.recent and info.size == 24
        with folder.open_message(info.uid) as f:
            assert f.read() == b"Subject: hello\r\n\r\nbody\r\n"
        [name] = files_in(store.user_dir(address) / "new")
        st = (store.user_dir(address) / "new" / name).stat()
        inodes.add(st.st_ino)
        assert st.st_nlink == 3
    assert len(inodes) == 1
    assert files_in(store.tmp_dir) == []
    with pytest.raises(StoreError):
        incoming.commit(recipients)


@pytest.mark.parametrize("size", [100, MEMORY_SPOOL + 1])
def test_incoming_abort_leaves_nothing(store, size):
    """A small message waits in memory, a large one spills to a file: abort drops either."""
    incoming = store.incoming()
    incoming.write(b"Subject: never\r\n\r\n" + b"x" * size)
    assert len(files_in(store.tmp_dir)) == (1 if size > MEMORY_SPOOL else 0)
    incoming.abort()
    incoming.abort()
    assert files_in(store.tmp_dir) == []
    assert store.folder(USER).messages() == ()
    with pytest.raises(StoreError):
        incoming.write(b"more")


def test_incoming_bad_recipient_delivers_nothing(store):
    incoming = store.incoming()
    incoming.write(b"x\r\n")
    with pytest.raises(StoreError):
        incoming.commit([USER, "../../etc@example.test"])
    assert store.folder(USER).messages() == ()
    assert files_in(store.tmp_dir) == []


def test_failure_during_commit_leaves_nothing_visible(store, monkeypatch):
    recipients = ["a@example.test", "b@example.test", "c@example.test"]
    for address in recipients:
        store.folder(address)
    real_link = os.link
    calls = []

    def link(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", link)
    incoming = store.incoming()
    incoming.write(b"Subject: lost\r\n\r\n")
    with pytest.raises(StoreError, match="ENOSPC"):
        incoming.commit(recipients)
    monkeypatch.undo()
    for address in recipients:
        assert files_in(store.user_dir(address) / "new") == []
        assert store.folder(address).messages() == ()
    assert files_in(store.tmp_dir) == []
    fresh = reopen(store)
    for address in recipients:
        assert fresh.folder(address).messages() == ()
    # The UIDs given to the withdrawn copies are skipped, never reused.
    assert store.folder("a@example.test").append(b"next\r\n") == 2


def test_failure_during_append_leaves_nothing_visible(store, monkeypatch):
    folder = store.folder(USER)

    def rename(src, dst):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(StoreError, match="EACCES"):
        folder.append(b"x\r\n")
    monkeypatch.undo()
    assert folder.messages() == ()
    for sub in ("new", "cur", "tmp"):
        assert files_in(inbox_dir(store) / sub) == []


def test_failure_writing_the_file_raises_store_error(store, monkeypatch):
    folder = store.folder(USER)

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(StoreError, match="ENOSPC"):
        folder.append(b"x\r\n")
    monkeypatch.undo()
    assert folder.messages() == ()
    assert files_in(inbox_dir(store) / "tmp") == []


def test_unchanged_folder_hands_out_the_same_listing(store):
    """messages() costs nothing while nothing changed: the same tuple, rebuilt after a change."""
    folder = store.folder(USER)
    uid = folder.append(b"Subject: one\r\n\r\n1\r\n")
    first = folder.messages()
    assert folder.messages() is first
    folder.set_flags(uid, {"\\Seen"})
    second = folder.messages()
    assert second is not first and second[0].flags == {"\\Seen"}
    folder.append(b"Subject: two\r\n\r\n2\r\n")
    assert len(folder.messages()) == 2


def test_fresh_listing_without_waiting_or_scanning(store):
    """open_folder/messages_if_fresh answer only when no scan and no wait is needed."""
    assert store.open_folder(USER) is None  # not open yet: the caller must use folder()
    folder = store.folder(USER)
    folder.append(b"Subject: one\r\n\r\n1\r\n")
    assert store.open_folder(USER) is folder
    assert folder.messages_if_fresh() is folder.messages()
    (store.user_dir(USER) / "new" / "1.dropped.by.hand").write_bytes(b"Subject: x\r\n\r\nx\r\n")
    assert folder.messages_if_fresh() is None  # new/ changed on disk: a scan is needed
    assert len(folder.messages()) == 2
    # A scan of a directory changed in the last SETTLE_NS is not trusted: one scan more after.
    time.sleep(SETTLE_NS / 1e9)
    assert len(folder.messages()) == 2
    assert folder.messages_if_fresh() is folder.messages()
    held, release = threading.Event(), threading.Event()

    def hold():  # another thread busy in the folder (e.g. a delivery's fsync)
        with folder._lock:
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        assert folder.messages_if_fresh() is None  # answered at once, without waiting
    finally:
        release.set()
        holder.join()
    assert folder.messages_if_fresh() is folder.messages()
