"""The outbound queue: durable across restarts, cleaned after a crash, safe for threads and
for two processes (the server and ``mailgw queue``) at once."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from mailgw.relay.queue import (
    MEMORY_SPOOL,
    NoSuchEntry,
    OutboundQueue,
    PendingBounce,
    QueueError,
)

MESSAGE = b"From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: hi\r\n\r\nHello\r\n"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def files(queue_dir: Path) -> list[str]:
    """Every file under the queue directory, relative, sorted."""
    return sorted(str(p.relative_to(queue_dir)) for p in queue_dir.rglob("*") if p.is_file())


def test_enqueued_message_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    queue = OutboundQueue(tmp_path / "queue", clock=clock)
    entry_id = queue.enqueue(MESSAGE, "alice@example.test", ["bob@remote.test", "c@other.test"])

    reopened = OutboundQueue(tmp_path / "queue", clock=clock)
    [entry] = reopened.entries()
    assert entry.id == entry_id
    assert (entry.sender, entry.recipients) == (
        "alice@example.test",
        ["bob@remote.test", "c@other.test"],
    )
    assert entry.created == entry.next_attempt == clock.now
    assert (entry.attempts, entry.last_error) == (0, None)
    with reopened.open_message(entry_id) as message:
        assert message.read() == MESSAGE
    assert files(tmp_path / "queue") == [f"msg/{entry_id}.eml", f"msg/{entry_id}.json"]
    for path in (tmp_path / "queue" / "msg").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, "other users must not read mail"


def test_large_message_is_streamed_through_a_file(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    message = queue.incoming()
    chunk = b"x" * 1000 + b"\r\n"
    for _ in range(MEMORY_SPOOL // len(chunk) + 10):
        message.write(chunk)
    assert message.path.exists(), "past MEMORY_SPOOL the message goes to its file"
    entry_id = message.commit("", ["bob@remote.test"])
    with queue.open_message(entry_id) as stored:
        assert len(stored.read()) == message.size
    assert queue.get(entry_id).sender == "", "the null sender of a bounce is kept"
    assert files(tmp_path / "queue" / "tmp") == []


def test_incomplete_enqueue_and_crash_leftovers_are_removed_at_open(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    kept = queue.enqueue(MESSAGE, "alice@example.test", ["bob@remote.test"])
    msg = tmp_path / "queue" / "msg"
    tmp = tmp_path / "queue" / "tmp"
    # A crash between the message's rename and the metadata's: the sender got no 250.
    (msg / "18c0ffee000-0123456789abcdef.eml").write_bytes(MESSAGE)
    # A metadata rewrite cut short, an hour-old write, and one in progress in another process.
    (msg / f".{kept}.json.123.456.tmp").write_bytes(b"{")
    (tmp / "old.eml").write_bytes(MESSAGE)
    os.utime(tmp / "old.eml", (1, 1))
    (tmp / "young.eml").write_bytes(MESSAGE)
    aborted = queue.incoming()
    aborted.write(b"x" * (MEMORY_SPOOL + 1))
    aborted.abort()

    reopened = OutboundQueue(tmp_path / "queue")
    assert [entry.id for entry in reopened.entries()] == [kept]
    assert files(tmp_path / "queue") == [f"msg/{kept}.eml", f"msg/{kept}.json", "tmp/young.eml"]


def test_record_attempt_keeps_failed_and_drops_delivered_recipients(tmp_path: Path) -> None:
    clock = Clock()
    queue = OutboundQueue(tmp_path / "queue", clock=clock)
    recipients = ["a@remote.test", "b@remote.test", "c@remote.test"]
    entry_id = queue.enqueue(MESSAGE, "alice@example.test", recipients)
    assert [e.id for e in queue.due(clock.now)] == [entry_id]

    entry = queue.record_attempt(
        entry_id, {"b@remote.test": "451 4.7.1 greylisted"}, ["A@Remote.Test"], clock.now + 600
    )
    assert entry.recipients == ["b@remote.test", "c@remote.test"]
    assert entry.errors == {"b@remote.test": "451 4.7.1 greylisted"}
    assert entry.last_error == "b@remote.test: 451 4.7.1 greylisted"
    assert entry.attempts == 1
    assert queue.due(clock.now + 599) == []
    assert [e.id for e in queue.due(clock.now + 600)] == [entry_id]
    assert OutboundQueue(tmp_path / "queue").get(entry_id) == entry, "written durably"

    assert queue.record_attempt(entry_id, {}, ["b@remote.test", "c@remote.test"], 0.0) is None
    assert queue.entries() == []
    assert files(tmp_path / "queue") == []
    with pytest.raises(NoSuchEntry):
        queue.record_attempt(entry_id, {}, [], 0.0)


def test_giving_up_removes_the_entry(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    entry_id = queue.enqueue(MESSAGE, "alice@example.test", ["a@remote.test"])
    assert queue.record_attempt(entry_id, {"a@remote.test": "timeout"}, [], None) is None
    assert files(tmp_path / "queue") == []


def test_flush_delete_and_bad_ids(tmp_path: Path) -> None:
    clock = Clock()
    queue = OutboundQueue(tmp_path / "queue", clock=clock)
    first = queue.enqueue(MESSAGE, "alice@example.test", ["a@remote.test"])
    second = queue.enqueue(MESSAGE, "alice@example.test", ["b@remote.test"])
    queue.record_attempt(first, {"a@remote.test": "421 busy"}, [], clock.now + 3600)
    queue.record_attempt(second, {"b@remote.test": "421 busy"}, [], clock.now + 7200)
    assert queue.due(clock.now) == []
    assert queue.flush() == 2
    assert {e.id for e in queue.due(clock.now)} == {first, second}

    queue.delete(first)
    assert [e.id for e in queue.entries()] == [second]
    for bad in (first, "../../../etc/passwd", "", "1234-xyz"):
        with pytest.raises(NoSuchEntry):
            queue.delete(bad)
        with pytest.raises(NoSuchEntry):
            queue.get(bad)
        with pytest.raises(NoSuchEntry):
            queue.open_message(bad)
    with pytest.raises(ValueError):
        queue.enqueue(MESSAGE, "alice@example.test", [])
    assert len(queue.entries()) == 1 and files(tmp_path / "queue" / "tmp") == []


def test_threads_and_a_second_queue_object_lose_no_update(tmp_path: Path) -> None:
    """Enqueues from many threads; attempts recorded by one queue object while another (as
    ``mailgw queue flush`` would, from another process) reschedules the same entry."""
    queue = OutboundQueue(tmp_path / "queue")
    other = OutboundQueue(tmp_path / "queue")
    target = queue.enqueue(MESSAGE, "alice@example.test", ["a@remote.test"])
    made: list[str] = []
    errors: list[BaseException] = []

    def enqueue(n: int) -> None:
        try:
            for i in range(20):
                body = f"Subject: {n}/{i}\r\n\r\n".encode()
                made.append(queue.enqueue(body, f"u{n}@example.test", [f"r{i}@remote.test"]))
        except BaseException as error:  # reported below
            errors.append(error)

    def attempts() -> None:
        for _ in range(50):
            queue.record_attempt(target, {"a@remote.test": "451 later"}, [], 10.0)

    def flushes() -> None:
        for _ in range(50):
            other.reschedule(target, 0.0)

    threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(6)]
    threads += [threading.Thread(target=attempts), threading.Thread(target=flushes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(set(made)) == 120
    assert queue.get(target).attempts == 50, "no record_attempt was overwritten by a flush"
    entries = {entry.id: entry for entry in OutboundQueue(tmp_path / "queue").entries()}
    assert len(entries) == 121
    for entry_id in made:
        entry = entries[entry_id]
        n, i = entry.sender[1:].split("@")[0], entry.recipients[0][1:].split("@")[0]
        with queue.open_message(entry_id) as message:
            assert message.read() == f"Subject: {n}/{i}\r\n\r\n".encode()


def test_a_dead_writers_files_in_tmp_are_removed_at_open_a_live_ones_kept(tmp_path) -> None:
    """tmp/ names carry the writer's pid: a server killed mid-enqueue leaves nothing for
    longer than its restart."""
    queue = OutboundQueue(tmp_path / "queue")
    tmp = tmp_path / "queue" / "tmp"
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    for suffix in ("eml", "json"):
        (tmp / f"18c0ffee000-0123456789abcdef.{dead}.{suffix}").write_bytes(MESSAGE)
    live = queue.incoming()
    live.write(b"x" * (MEMORY_SPOOL + 1))  # in progress in this process: in tmp/ already
    OutboundQueue(tmp_path / "queue")
    assert files(tmp_path / "queue") == [f"tmp/{live.path.name}"]
    live.abort()


def test_pending_bounce_is_kept_until_done(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    entry_id = queue.enqueue(MESSAGE, "alice@example.test", ["bob@remote.test", "c@other.test"])
    bounce = PendingBounce({"bob@remote.test": "550 5.1.1 gone"}, False, "<b@mx>", {"alice": 3})
    entry = queue.fail_recipients(entry_id, ["Bob@Remote.test"], bounce)
    assert entry.recipients == ["c@other.test"] and entry.bounce == bounce
    assert OutboundQueue(tmp_path / "queue").get(entry_id).bounce == bounce, "durable"
    with pytest.raises(QueueError, match="pending already"):
        queue.fail_recipients(entry_id, ["c@other.test"], bounce)
    assert queue.fail_recipients(entry_id, ["c@other.test"], None).recipients == []
    assert [e.id for e in queue.due(0.0)] == [entry_id], "a pending bounce is always due"
    assert queue.bounce_done(entry_id) is None, "nothing left: removed"
    assert files(tmp_path / "queue") == []


def test_enqueue_under_a_given_id_once(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    entry_id = queue.new_id()
    assert queue.enqueue(MESSAGE, "", ["alice@remote.test"], entry_id=entry_id) == entry_id
    assert queue.has(entry_id)
    with pytest.raises(QueueError, match="exists"):
        queue.enqueue(b"other", "", ["alice@remote.test"], entry_id=entry_id)
    with queue.open_message(entry_id) as message:
        assert message.read() == MESSAGE
    assert files(tmp_path / "queue") == [f"msg/{entry_id}.eml", f"msg/{entry_id}.json"]
