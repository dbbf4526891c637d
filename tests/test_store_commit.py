"""Group commit: concurrent deliveries are committed together, each still all or nothing."""

from __future__ import annotations

import threading

import pytest

from mailgw.store import MaildirStore, StoreError

A = "a@example.test"
B = "b@example.test"


@pytest.fixture
def store(tmp_path):
    return MaildirStore(tmp_path / "mail", tmp_path / "tmp", "mx.example.test")


def _body(tag: str) -> bytes:
    return f"Subject: {tag}\r\n\r\nbody of {tag}\r\n".encode()


def _contents(store: MaildirStore, address: str) -> list[bytes]:
    folder = store.folder(address)
    result = []
    for info in folder.messages():
        with folder.open_message(info.uid) as f:
            result.append(f.read())
    return result


def test_concurrent_commits_arrive_once_each_with_durable_uids(store, tmp_path):
    """16 threads deliver 20 messages each, half of them to two users: all arrive, once."""
    errors = []

    def sender(n: int) -> None:
        try:
            for i in range(20):
                message = store.incoming()
                message.write(_body(f"{n}-{i}"))
                recipients = [A, B] if i % 2 else [A]
                uids = message.commit(recipients)
                assert sorted(uids) == sorted(recipients)
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    expected_a = sorted(_body(f"{n}-{i}") for n in range(16) for i in range(20))
    expected_b = sorted(_body(f"{n}-{i}") for n in range(16) for i in range(1, 20, 2))
    assert sorted(_contents(store, A)) == expected_a
    assert sorted(_contents(store, B)) == expected_b
    # A fresh store reads the same UIDs back from the index (nothing re-indexed by a scan).
    fresh = MaildirStore(store.mail_dir, store.tmp_dir, store.hostname)
    for address in (A, B):
        before = [(m.uid, m.key) for m in store.folder(address).messages()]
        assert [(m.uid, m.key) for m in fresh.folder(address).messages()] == before
        assert len({uid for uid, _ in before}) == len(before)
    assert list(store.tmp_dir.iterdir()) == []


def test_a_failure_in_a_batch_fails_only_its_own_message(store, monkeypatch):
    """Five deliveries queued behind a running commit go in one batch; the one whose file
    vanished fails alone, the four others are delivered with consecutive UIDs."""
    folder = store.folder(A)
    real_deliver = type(folder).deliver_links
    release = threading.Event()
    batches = []

    def deliver_links(self, sources):
        batches.append(len(sources))
        if len(batches) == 1:
            release.wait(timeout=30)
        return real_deliver(self, sources)

    monkeypatch.setattr(type(folder), "deliver_links", deliver_links)
    results: dict[int, object] = {}
    messages = {}

    def sender(n: int) -> None:
        message = messages[n] = store.incoming()
        message.write(_body(f"queued-{n}"))
        try:
            results[n] = message.commit([A])
        except StoreError as e:
            results[n] = e

    first = threading.Thread(target=sender, args=(0,))
    first.start()
    while not batches:
        first.join(timeout=0.01)
    queued = [threading.Thread(target=sender, args=(n,)) for n in range(1, 6)]
    for t in queued:
        t.start()
    committer = store.committer
    while True:  # wait until all five wait in the queue, their files fsync'd
        with committer._ready:
            if len(committer._queue) == 5:
                break
        first.join(timeout=0.01)
    messages[3].source.unlink()
    release.set()
    for t in [first, *queued]:
        t.join(timeout=30)

    assert batches == [1, 5]
    assert isinstance(results[3], StoreError)
    assert sorted(results[n][A] for n in (0, 1, 2, 4, 5)) == [1, 2, 3, 4, 5]
    assert sorted(_contents(store, A)) == sorted(_body(f"queued-{n}") for n in (0, 1, 2, 4, 5))
    assert list(store.tmp_dir.iterdir()) == []
