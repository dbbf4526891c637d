"""``mailgw queue list | flush | delete ID``, run as the installed command on a real queue."""

from __future__ import annotations

from pathlib import Path

import pytest
from mailgw_process import mailgw, write_config

from mailgw.relay.queue import OutboundQueue

MESSAGE = b"Subject: hi\r\n\r\nHello\r\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration whose data directory is tmp_path/data."""
    return write_config(tmp_path)


def queue_of(config: Path) -> OutboundQueue:
    """The queue the server of ``config`` uses."""
    return OutboundQueue(config.parent / "data" / "queue")


def test_list_shows_envelope_attempts_and_errors(config: Path) -> None:
    done = mailgw(config, "queue", "list")
    assert (done.returncode, done.stdout) == (
        0,
        f"the queue is empty ({config.parent / 'data' / 'queue'} does not exist)\n",
    )
    queue = queue_of(config)
    waiting = queue.enqueue(MESSAGE, "alice@example.test", ["bob@remote.test", "c@other.test"])
    queue.record_attempt(waiting, {"c@other.test": "451 4.7.1 greylisted"}, [], 4102444800.0)
    bounce = queue.enqueue(MESSAGE, "", ["alice@remote.test"])

    done = mailgw(config, "queue", "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{waiting}  {len(MESSAGE)} octets  queued ")
    assert lines[0].endswith("attempts 1  next 2100-01-01 00:00:00 UTC")
    assert lines[1:4] == [
        "  from <alice@example.test>",
        "  to   <bob@remote.test>",
        "  to   <c@other.test>  last error: 451 4.7.1 greylisted",
    ]
    assert lines[4].startswith(f"{bounce}  ") and "attempts 0" in lines[4]
    assert lines[5:] == ["  from <>", "  to   <alice@remote.test>", "2 messages in the queue"]


def test_flush_makes_everything_due_now(config: Path) -> None:
    queue = queue_of(config)
    entry_id = queue.enqueue(MESSAGE, "alice@example.test", ["bob@remote.test"])
    queue.record_attempt(entry_id, {"bob@remote.test": "421 busy"}, [], 4102444800.0)
    assert queue.due(queue.clock()) == []
    done = mailgw(config, "queue", "flush")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("1 message due now; a running server retries")
    [entry] = queue.due(queue.clock())
    assert entry.id == entry_id and entry.attempts == 1 and entry.recipients == ["bob@remote.test"]


def test_delete_removes_one_message(config: Path) -> None:
    queue = queue_of(config)
    gone = queue.enqueue(MESSAGE, "alice@example.test", ["bob@remote.test"])
    kept = queue.enqueue(MESSAGE, "alice@example.test", ["carol@remote.test"])
    done = mailgw(config, "queue", "delete", gone)
    assert (done.returncode, done.stdout) == (
        0,
        f"deleted {gone} (from <alice@example.test> to bob@remote.test)\n",
    )
    assert [entry.id for entry in queue.entries()] == [kept]
    for bad in (gone, "../passwd"):
        done = mailgw(config, "queue", "delete", bad)
        assert done.returncode == 1
        assert done.stderr == f"mailgw: error: {bad}: no such queued message\n"
    assert [entry.id for entry in queue.entries()] == [kept]
    done = mailgw(config, "queue", "delete")
    assert done.returncode == 2 and "ID" in done.stderr
