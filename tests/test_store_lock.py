"""The uidlist dot lock after a crash: never seen empty, never blocking, never broken twice.

A writer killed while holding ``dovecot-uidlist.lock`` (or, before this lock was linked into
place whole, between creating it and writing its pid) must not hold up the next delivery.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mailgw.store import MaildirStore, uidlist

USER = "alice@example.test"


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    """A store over a fresh data directory, its INBOX created."""
    store = MaildirStore(tmp_path / "mail", tmp_path / "tmp", "mx.example.test")
    store.folder(USER)
    return store


def lock_path(store: MaildirStore) -> Path:
    """The INBOX's uidlist lock file."""
    return store.user_dir(USER) / "dovecot-uidlist.lock"


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look ``seconds`` old."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def dead_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid():
    """The pid of a process of this host that runs for the test's duration."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()


def timed_append(store: MaildirStore, data: bytes = b"a\r\n") -> tuple[int, float]:
    """Append ``data`` to the INBOX; return its UID and how long it took."""
    start = time.monotonic()
    uid = store.folder(USER).append(data)
    return uid, time.monotonic() - start


def test_empty_lock_left_by_a_crash_is_broken_at_once(store):
    """The issue's case: an empty lock a few seconds old no longer holds delivery for 2 minutes."""
    lock = lock_path(store)
    lock.write_bytes(b"")
    age(lock, uidlist.UNREADABLE_LOCK_SECONDS + 1)
    uid, took = timed_append(store)
    assert uid == 1
    assert took < 1.0
    assert not lock.exists()


def test_fresh_empty_lock_is_waited_for_then_broken(store, monkeypatch):
    """An empty lock may be Dovecot's, between its O_EXCL create and its write: wait a little."""
    monkeypatch.setattr(uidlist, "UNREADABLE_LOCK_SECONDS", 0.5)
    lock_path(store).write_bytes(b"")
    uid, took = timed_append(store)
    assert uid == 1
    assert 0.3 < took < 3.0


def test_lock_from_before_the_last_boot_is_broken_at_once(store, live_pid):
    """After a power cut the old holder's pid may belong to a new process: the time tells."""
    lock = lock_path(store)
    lock.write_text(f"{live_pid}:{socket.gethostname()}\n")
    then = uidlist._BOOT_TIME - 10
    os.utime(lock, (then, then))
    uid, took = timed_append(store)
    assert uid == 1 and took < 1.0


def test_lock_of_a_live_writer_is_respected(store, monkeypatch, live_pid):
    monkeypatch.setattr(uidlist, "LOCK_TIMEOUT", 0.3)
    lock = lock_path(store)
    lock.write_text(f"{live_pid}:{socket.gethostname()}\n")
    with pytest.raises(uidlist.StoreBusy, match="timed out"):
        store.folder(USER).append(b"a\r\n")
    assert lock.read_text() == f"{live_pid}:{socket.gethostname()}\n"


def test_waiter_outlasts_a_stale_lock():
    """A writer gives up only after a lock of a crashed writer would have been broken."""
    assert uidlist.LOCK_TIMEOUT > uidlist.STALE_LOCK_SECONDS > uidlist.UNREADABLE_LOCK_SECONDS


def test_second_look_spares_a_lock_retaken_meanwhile(store, monkeypatch, live_pid):
    """Two writers find the same lock stale; the first breaks it and takes a new one before the
    second acts.  The second must not remove the first's new lock."""
    lock = lock_path(store)
    lock.write_text(f"{dead_pid()}:{socket.gethostname()}\n")
    judged = uidlist.lock_is_stale
    looks = []

    def other_writer_acts_between_the_looks(path):
        looks.append(path)
        stale = judged(path)
        if len(looks) == 1:
            # The other writer breaks the stale lock and links in its own.
            os.unlink(path)
            path.write_text(f"{live_pid}:{socket.gethostname()}\n")
        return stale

    monkeypatch.setattr(uidlist, "lock_is_stale", other_writer_acts_between_the_looks)
    assert uidlist._break_if_stale(lock) is True
    assert len(looks) == 2
    assert lock.read_text() == f"{live_pid}:{socket.gethostname()}\n"


def test_release_leaves_a_lock_that_is_no_longer_ours(store):
    """A holder whose lock was broken as stale (it stalled) must not remove its successor's."""
    lock = lock_path(store)
    with uidlist.dotlock(lock, timeout=1.0):
        os.unlink(lock)
        lock.write_text("successor\n")
    assert lock.read_text() == "successor\n"


def test_lock_temp_file_is_removed(store):
    with uidlist.dotlock(lock_path(store), timeout=1.0):
        pass
    assert os.listdir(store.user_dir(USER) / "tmp") == []


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mailgw.store import MaildirStore
    root, count, tag = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    store = MaildirStore(root / "mail", root / "tmp", "mx.example.test")
    folder = store.folder("alice@example.test")
    for i in range(count):
        folder.append(f"Subject: {tag}-{i}\\r\\n\\r\\nbody\\r\\n".encode())
    """
)


def writers(store: MaildirStore, count: int, per_writer: int) -> list[subprocess.Popen]:
    """Start ``count`` processes appending ``per_writer`` messages each to the INBOX."""
    root = store.mail_dir.parent
    return [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(per_writer), f"w{n}"])
        for n in range(count)
    ]


def test_lock_is_never_seen_empty(store):
    """While other processes take and release the lock, every look at it finds a holder."""
    procs = writers(store, 2, 300)
    lock = lock_path(store)
    seen = empty = 0
    while any(p.poll() is None for p in procs):
        try:
            content = lock.read_bytes()
        except FileNotFoundError:
            continue
        seen += 1
        empty += not content.strip()
    assert [p.returncode for p in procs] == [0, 0]
    assert seen > 0
    assert empty == 0


def test_processes_racing_past_a_stale_lock_give_no_uid_twice(store):
    """Writers that start together on a crashed writer's lock all break it once, safely."""
    lock = lock_path(store)
    lock.write_text(f"{dead_pid()}:{socket.gethostname()}\n")
    procs = writers(store, 4, 50)
    for p in procs:
        assert p.wait(timeout=60) == 0
    messages = MaildirStore(store.mail_dir, store.tmp_dir, store.hostname).folder(USER).messages()
    assert len(messages) == 200
    assert sorted(m.uid for m in messages) == list(range(1, 201))
