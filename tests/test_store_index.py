"""The UID index (dovecot-uidlist), files from other programs, rescans, locks and compaction."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailgw.store import MaildirStore, StoreBusy, uidlist
from mailgw.store import folder as folder_module
from mailgw.store.files import STALE_TMP_SECONDS

USER = "alice@example.test"


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    """A store over a fresh data directory."""
    return MaildirStore(tmp_path / "mail", tmp_path / "tmp", "mx.example.test")


def reopen(store: MaildirStore) -> MaildirStore:
    """A new store instance over the same directories (as after a restart)."""
    return MaildirStore(store.mail_dir, store.tmp_dir, store.hostname)


def index_lines(store: MaildirStore, address: str = USER) -> list[str]:
    """The lines of the INBOX's dovecot-uidlist."""
    return (store.user_dir(address) / "dovecot-uidlist").read_text().splitlines()


def test_index_is_dovecot_format(store):
    folder = store.folder(USER)
    folder.append(b"a\r\n")
    folder.append(b"b\r\n")
    header, *lines = index_lines(store)
    version, validity, next_uid, guid = header.split()
    assert version == "3" and validity == f"V{folder.uid_validity}" and next_uid == "N1"
    assert guid.startswith("G") and len(guid) == 33
    keys = [m.key for m in folder.messages()]
    assert lines == [f"1 :{keys[0]}", f"2 :{keys[1]}"]


def test_torn_last_line_is_ignored_and_cut_away(store):
    folder = store.folder(USER)
    folder.append(b"a\r\n")
    folder.append(b"b\r\n")
    path = store.user_dir(USER) / "dovecot-uidlist"
    with open(path, "ab") as f:
        f.write(b"3 :17000000.M1P1Q1")
    again = reopen(store).folder(USER)
    assert [m.uid for m in again.messages()] == [1, 2]
    assert again.append(b"c\r\n") == 3
    lines = index_lines(store)
    assert len(lines) == 4
    assert all(line.split(" :")[0].isdigit() for line in lines[1:])
    assert "17000000.M1P1Q1" not in path.read_text()


def test_index_line_without_file_is_skipped_not_reused(store):
    folder = store.folder(USER)
    folder.append(b"a\r\n")
    with open(store.user_dir(USER) / "dovecot-uidlist", "a") as f:
        f.write("2 :1700000000.M1P1Q1Rdead.elsewhere,S=3,W=3\n")
    again = reopen(store).folder(USER)
    assert [m.uid for m in again.messages()] == [1]
    assert again.append(b"b\r\n") == 3


def test_message_file_removed_by_hand_disappears(store):
    folder = store.folder(USER)
    uid = folder.append(b"a\r\n")
    new = store.user_dir(USER) / "new"
    [name] = os.listdir(new)
    os.unlink(new / name)
    assert folder.messages() == ()
    assert folder.append(b"b\r\n") == uid + 1


def test_file_dropped_in_new_by_hand_gets_a_uid(store):
    folder = store.folder(USER)
    folder.append(b"ours\r\n")
    new = store.user_dir(USER) / "new"
    (new / "1700000000.12345_1.otherhost").write_bytes(b"Subject: mutt\n\nlf only\n")
    (store.user_dir(USER) / "cur" / "1700000001.999.otherhost:2,RS").write_bytes(b"seen\n")
    messages = folder.messages()
    assert [m.uid for m in messages] == [1, 2, 3]
    dropped, seen = messages[1], messages[2]
    assert dropped.recent and dropped.flags == frozenset()
    assert dropped.size == len(b"Subject: mutt\r\n\r\nlf only\r\n")
    assert dropped.internal_date == 1700000000
    with folder.open_message(dropped.uid) as f:
        assert f.read() == b"Subject: mutt\r\n\r\nlf only\r\n"
    assert seen.flags == {"\\Answered", "\\Seen"} and seen.size == 6
    assert index_lines(store)[2] == f"2 W{dropped.size} :1700000000.12345_1.otherhost"
    again = reopen(store).folder(USER)
    assert [(m.uid, m.size) for m in again.messages()] == [(m.uid, m.size) for m in messages]


def test_unchanged_folder_is_not_rescanned(store, monkeypatch):
    folder = store.folder(USER)
    for i in range(5):
        folder.append(f"m{i}\r\n".encode())
    folder.set_flags(1, ["\\Seen"])
    folder.expunge([2])
    listed = []
    real = os.listdir

    def counting_listdir(path):
        listed.append(path)
        return real(path)

    monkeypatch.setattr(os, "listdir", counting_listdir)
    for _ in range(3):
        assert len(folder.messages()) == 4
    folder.append(b"more\r\n")
    folder.get(1)
    assert listed == []
    (store.user_dir(USER) / "new" / "1700000000.1.elsewhere").write_bytes(b"x\n")
    assert len(folder.messages()) == 6
    assert len(listed) == 2


def test_two_store_instances_share_one_folder(store):
    other = reopen(store)
    a = store.folder(USER)
    b = other.folder(USER)
    uids = []
    for i in range(6):
        target = a if i % 2 else b
        uids.append(target.append(f"m{i}\r\n".encode()))
    assert uids == [1, 2, 3, 4, 5, 6]
    assert [m.uid for m in a.messages()] == [m.uid for m in b.messages()] == uids
    b.set_flags(3, ["\\Flagged"])
    assert a.get(3).flags == {"\\Flagged"}
    a.expunge([4])
    assert [m.uid for m in b.messages()] == [1, 2, 3, 5, 6]


def test_compaction_keeps_uids(store, monkeypatch):
    monkeypatch.setattr(uidlist, "COMPACT_MIN_DEAD", 5)
    folder = store.folder(USER)
    for i in range(20):
        folder.append(f"m{i}\r\n".encode())
    before = {m.uid: m.key for m in folder.messages() if m.uid in (3, 17, 20)}
    folder.expunge([u for u in range(1, 21) if u not in before])
    lines = index_lines(store)
    assert lines[0].split()[2] == "N21"
    assert [line.split()[0] for line in lines[1:]] == ["3", "17", "20"]
    assert {m.uid: m.key for m in folder.messages()} == before
    again = reopen(store).folder(USER)
    assert {m.uid: m.key for m in again.messages()} == before
    assert again.uid_validity == folder.uid_validity
    assert again.append(b"new\r\n") == 21


def test_no_compaction_while_dead_lines_are_few(store):
    folder = store.folder(USER)
    for i in range(10):
        folder.append(f"m{i}\r\n".encode())
    folder.expunge(list(range(1, 10)))
    assert len(index_lines(store)) == 11


def test_broken_index_header_starts_a_new_index(store):
    folder = store.folder(USER)
    folder.append(b"a\r\n")
    path = store.user_dir(USER) / "dovecot-uidlist"
    path.write_text("garbage\n1 :x\n")
    again = reopen(store).folder(USER)
    assert again.uid_validity > 0
    assert [m.uid for m in again.messages()] == [1]
    assert (store.user_dir(USER) / "dovecot-uidlist.broken").read_text() == "garbage\n1 :x\n"


def test_stale_dotlock_is_removed(store):
    folder = store.folder(USER)
    lock = store.user_dir(USER) / "dovecot-uidlist.lock"
    lock.write_text("12345\n")
    old = time.time() - 300
    os.utime(lock, (old, old))
    assert folder.append(b"a\r\n") == 1
    assert not lock.exists()


def test_dotlock_of_a_killed_process_is_removed_at_once(store, monkeypatch):
    monkeypatch.setattr(uidlist, "LOCK_TIMEOUT", 0.2)
    folder = store.folder(USER)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    lock = store.user_dir(USER) / "dovecot-uidlist.lock"
    lock.write_text(f"{child.pid}:{socket.gethostname()}\n")
    assert folder.append(b"a\r\n") == 1
    assert not lock.exists()


def test_fresh_dotlock_held_elsewhere_times_out(store, monkeypatch):
    monkeypatch.setattr(uidlist, "LOCK_TIMEOUT", 0.2)
    folder = store.folder(USER)
    lock = store.user_dir(USER) / "dovecot-uidlist.lock"
    lock.write_text("12345\n")
    with pytest.raises(StoreBusy, match="lock"):  # temporary: IMAP answers NO [UNAVAILABLE]
        folder.append(b"a\r\n")
    lock.unlink()
    assert folder.messages() == ()
    assert os.listdir(store.user_dir(USER) / "tmp") == []
    assert folder.append(b"b\r\n") == 1


def test_stale_tmp_files_removed_when_folder_opened(store):
    tmp = store.user_dir(USER) / "tmp"
    store.folder(USER)
    old, fresh = tmp / "old.file", tmp / "fresh.file"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    then = time.time() - STALE_TMP_SECONDS - 60
    os.utime(old, (then, then))
    reopen(store).folder(USER)
    assert not old.exists() and fresh.exists()


def test_listeners_hear_of_every_change(tmp_path):
    calls = []
    dispatched = []

    def dispatch(fn, *args):
        dispatched.append(fn.__name__)
        fn(*args)

    class Recorder:
        def messages_added(self, folder_id, infos):
            calls.append(("added", folder_id, [i.uid for i in infos]))

        def flags_changed(self, folder_id, infos):
            calls.append(("flags", folder_id, [(i.uid, sorted(i.flags)) for i in infos]))

        def messages_expunged(self, folder_id, uids):
            calls.append(("expunged", folder_id, uids))

    store = MaildirStore(tmp_path / "mail", tmp_path / "tmp", "mx", dispatch=dispatch)
    recorder = Recorder()
    store.add_listener("alice@EXAMPLE.test", "inbox", recorder)
    folder = store.folder(USER)
    folder.append(b"a\r\n")
    incoming = store.incoming()
    incoming.write(b"b\r\n")
    incoming.commit([USER])
    folder.set_flags(1, ["\\Seen"])
    folder.expunge([1])
    (store.user_dir(USER) / "new" / "1700000000.1.elsewhere").write_bytes(b"x\n")
    folder.messages()
    fid = (USER, "INBOX")
    assert calls == [
        ("added", fid, [1]),
        ("added", fid, [2]),
        ("flags", fid, [(1, ["\\Seen"])]),
        ("expunged", fid, [1]),
        ("added", fid, [3]),
    ]
    assert len(dispatched) == len(calls)
    store.remove_listener(USER, "INBOX", recorder)
    folder.append(b"c\r\n")
    assert len(calls) == 5


def test_a_file_another_program_adds_in_the_same_clock_tick_as_a_scan_is_found(store, monkeypatch):
    """A directory's modification time comes from the kernel's coarse clock: a second file
    dropped in the tick of one a scan already saw leaves it unchanged.  A scan of a directory
    changed that recently is not trusted: the next look scans again and finds the file."""
    monkeypatch.setattr(folder_module, "SETTLE_NS", 10 * 10**9)  # a slow machine: no matter
    folder = store.folder(USER)
    new = store.user_dir(USER) / "new"
    (new / "1700000000.M1P1.other").write_bytes(b"Subject: one\r\n\r\n")
    assert len(folder.messages()) == 1  # scanned at once: within the tick
    times = [os.stat(store.user_dir(USER) / d).st_mtime_ns for d in ("new", "cur")]
    (new / "1700000001.M2P1.other").write_bytes(b"Subject: two\r\n\r\n")
    for directory, mtime in zip(("new", "cur"), times, strict=True):  # as if in the same tick
        os.utime(store.user_dir(USER) / directory, ns=(mtime, mtime))
    assert len(folder.messages()) == 2
