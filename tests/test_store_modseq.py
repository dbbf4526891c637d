"""Modification sequences in the store (RFC 7162 CONDSTORE/QRESYNC): every change takes a new
modseq, HIGHESTMODSEQ never goes back, expunges are remembered for VANISHED, changes by other
programs are picked up, and Dovecot's own files stay as they were."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from mailgw.store import MaildirStore, StoreError
from mailgw.store import modseq as modseq_index
from mailgw.store.interfaces import FLAGS_ADD, FLAGS_REMOVE, IFolder, ModifiedSince

USER = "alice@example.test"
SEEN, FLAGGED, DELETED = "\\Seen", "\\Flagged", "\\Deleted"


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    """A store over a fresh data directory."""
    return MaildirStore(tmp_path / "mail", tmp_path / "tmp", "mx.example.test")


def reopen(store: MaildirStore) -> MaildirStore:
    """A new store instance over the same directories (as after a restart)."""
    return MaildirStore(store.mail_dir, store.tmp_dir, store.hostname)


def modseqs(folder) -> dict[int, int]:
    """uid -> modseq of every message."""
    return {m.uid: m.modseq for m in folder.messages()}


def log_path(store: MaildirStore) -> Path:
    """The INBOX's modseq index."""
    return store.user_dir(USER) / modseq_index.MODSEQ_FILE


def fill(folder, count: int) -> list[int]:
    """Append ``count`` small messages; their UIDs."""
    return [folder.append(f"Subject: {n}\r\n\r\nbody {n}\r\n".encode()) for n in range(count)]


class Recorder:
    """An IFolderListener that keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def messages_added(self, folder_id, infos) -> None:
        self.events.append(("added", [(i.uid, i.modseq) for i in infos]))

    def flags_changed(self, folder_id, infos) -> None:
        self.events.append(("flags", [(i.uid, i.modseq) for i in infos]))

    def messages_expunged(self, folder_id, uids) -> None:
        self.events.append(("expunged", (list(uids), uids.modseq)))


# -- every kind of change takes a new modseq


def test_new_empty_folder_has_highest_modseq_1(store):
    folder = store.folder(USER)
    assert IFolder.providedBy(folder)
    assert folder.highest_modseq == 1
    assert folder.vanished_since(1) == []
    assert folder.changed_since(0) == []
    assert store.create_folder(USER, "Archive").highest_modseq == 1


def test_append_and_delivery_take_new_modseqs(store):
    folder = store.folder(USER)
    first = folder.append(b"a\r\n")
    assert modseqs(folder) == {first: 2} and folder.highest_modseq == 2
    message = store.incoming()
    message.write(b"Subject: delivered\r\n\r\nx\r\n")
    uids = message.commit([USER, "bob@example.test"])
    assert folder.get(uids[USER]).modseq == 3 == folder.highest_modseq
    bob = store.folder("bob@example.test")
    assert bob.get(uids["bob@example.test"]).modseq == 2 == bob.highest_modseq


def test_flag_change_takes_a_new_modseq_and_a_no_op_none(store):
    folder = store.folder(USER)
    uid = folder.append(b"a\r\n")
    before = folder.highest_modseq
    info = folder.set_flags(uid, {SEEN})
    assert info.modseq == before + 1 == folder.highest_modseq == folder.get(uid).modseq
    assert folder.set_flags(uid, {SEEN}).modseq == before + 1, "same flags: no new modseq"
    keyword = folder.set_flags(uid, {SEEN, "$Work"})
    assert keyword.modseq == before + 2, "a keyword is a flag change too"
    assert folder.set_flags(uid, {SEEN}).modseq == before + 3


def test_claiming_recent_takes_no_modseq(store):
    folder = store.folder(USER)
    uid = folder.append(b"a\r\n")
    highest = folder.highest_modseq
    folder.mark_seen_by_client([uid])
    assert not folder.get(uid).recent
    assert folder.get(uid).modseq == highest == folder.highest_modseq


def test_expunge_takes_a_new_modseq_and_is_remembered(store):
    folder = store.folder(USER)
    uids = fill(folder, 3)
    highest = folder.highest_modseq
    assert folder.expunge(uids[:2]) == uids[:2]
    assert folder.highest_modseq == highest + 1
    assert folder.vanished_since(highest) == uids[:2]
    assert folder.vanished_since(highest + 1) == []
    assert folder.vanished_since(1) == uids[:2]


def test_listeners_get_the_new_modseqs(store):
    folder = store.folder(USER)
    recorder = Recorder()
    store.add_listener(USER, "INBOX", recorder)
    uid = folder.append(b"a\r\n")
    folder.set_flags(uid, {SEEN})
    folder.expunge([uid])
    assert recorder.events == [
        ("added", [(uid, 2)]),
        ("flags", [(uid, 3)]),
        ("expunged", ([uid], 4)),
    ]


def test_changed_since_lists_what_changed_after(store):
    folder = store.folder(USER)
    uids = fill(folder, 4)
    mark = folder.highest_modseq
    folder.set_flags(uids[1], {SEEN})
    new = folder.append(b"late\r\n")
    assert [m.uid for m in folder.changed_since(mark)] == [uids[1], new]
    assert folder.changed_since(folder.highest_modseq) == []


def test_every_event_is_above_everything_shown_before(store):
    """Concurrent deliveries (committed in batches), appends and flag changes: each event's
    modseqs are above those of every event before it, so a client that synced at any moment
    misses nothing later."""
    folder = store.folder(USER)
    seeds = fill(folder, 8)
    events: list[list[int]] = []

    class Watch:
        def messages_added(self, folder_id, infos):
            events.append([i.modseq for i in infos])

        def flags_changed(self, folder_id, infos):
            events.append([i.modseq for i in infos])

        def messages_expunged(self, folder_id, uids):
            events.append([uids.modseq])

    store.add_listener(USER, "INBOX", Watch())

    def deliver(n):
        message = store.incoming()
        message.write(f"Subject: {n}\r\n\r\nx\r\n".encode())
        message.commit([USER])

    def change(n):
        folder.set_flags(seeds[n], {SEEN})
        folder.append(b"appended\r\n")

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(16)]
    threads += [threading.Thread(target=change, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(folder.messages()) == 8 + 16 + 8
    shown = 0
    for modseqs_of_event in events:
        assert min(modseqs_of_event) > shown, events
        shown = max(modseqs_of_event)
    assert folder.highest_modseq == shown


# -- the batch form and UNCHANGEDSINCE


def test_batch_of_1000_is_one_modseq_and_one_append(store, monkeypatch):
    folder = store.folder(USER)
    uids = fill(folder, 1000)
    folder.mark_seen_by_client(uids)
    size = log_path(store).stat().st_size
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    done = folder.set_flags_many(uids, {SEEN}, FLAGS_ADD)
    monkeypatch.undo()
    assert len(done.infos) == 1000 and done.modified == []
    assert {info.modseq for info in done.infos} == {folder.highest_modseq}
    assert len(fsyncs) == 2, "one fsync of the modseq index, one of cur/"
    grown = log_path(store).read_bytes()[size:]
    assert grown.count(b"\n") == 1, "one line appended for the whole batch"
    assert all(SEEN in m.flags for m in folder.messages())


def test_batch_modes_add_and_remove(store):
    folder = store.folder(USER)
    a, b = fill(folder, 2)
    folder.set_flags(a, {SEEN, FLAGGED})
    done = folder.set_flags_many([a, b, 999], {FLAGGED}, FLAGS_REMOVE)
    assert [info.uid for info in done.infos] == [a, b], "b only moved out of new/; 999 skipped"
    assert folder.get(a).flags == {SEEN}
    assert folder.get(b).modseq < folder.get(a).modseq, "b's flags did not change"


def test_unchanged_since_refuses_a_message_changed_after(store):
    folder = store.folder(USER)
    a, b = fill(folder, 2)
    seen_at = folder.highest_modseq
    folder.set_flags(b, {FLAGGED})
    with pytest.raises(ModifiedSince) as refused:
        folder.set_flags(b, {SEEN}, unchanged_since=seen_at)
    assert refused.value.info.uid == b and refused.value.info.flags == {FLAGGED}
    assert folder.get(b).flags == {FLAGGED}, "a refused change changes nothing"
    done = folder.set_flags_many([a, b], {DELETED}, FLAGS_ADD, unchanged_since=seen_at)
    assert done.modified == [b] and [info.uid for info in done.infos] == [a]
    assert folder.get(a).flags == {DELETED} and folder.get(b).flags == {FLAGGED}
    assert folder.set_flags(b, {SEEN}, unchanged_since=folder.highest_modseq).flags == {SEEN}
    with pytest.raises(ModifiedSince):
        folder.set_flags(a, set(), unchanged_since=0)


def test_bad_flags_or_mode_change_nothing(store):
    folder = store.folder(USER)
    uids = fill(folder, 2)
    highest = folder.highest_modseq
    with pytest.raises(StoreError):
        folder.set_flags_many(uids, {"\\Recent"})
    with pytest.raises(StoreError):
        folder.set_flags_many(uids, {SEEN}, "toggle")
    with pytest.raises(StoreError):
        folder.set_flags(uids[0], {"bad keyword"})
    assert folder.highest_modseq == highest
    assert all(m.flags == frozenset() for m in folder.messages())


# -- persistence: across restarts, never backwards


def test_modseqs_and_highest_survive_a_restart(store):
    folder = store.folder(USER)
    uids = fill(folder, 3)
    folder.set_flags(uids[0], {SEEN})
    folder.expunge([uids[2]])
    before, highest = modseqs(folder), folder.highest_modseq
    again = reopen(store).folder(USER)
    assert modseqs(again) == before
    assert again.highest_modseq == highest
    assert again.vanished_since(highest - 1) == [uids[2]]
    assert again.set_flags(uids[1], {SEEN}).modseq == highest + 1


def test_two_stores_on_one_folder_never_reuse_a_modseq(store):
    """Two processes' views (two stores) of one folder: each change gets a modseq above
    everything either has shown."""
    mine = store.folder(USER)
    uids = fill(mine, 2)
    theirs = reopen(store).folder(USER)
    changed = theirs.set_flags(uids[0], {SEEN}).modseq
    assert mine.get(uids[0]).flags == {SEEN}
    assert mine.get(uids[0]).modseq == changed
    mine_next = mine.set_flags(uids[1], {SEEN}).modseq
    assert mine_next > changed
    assert theirs.get(uids[1]).modseq == mine_next
    assert theirs.set_flags(uids[1], set()).modseq > mine_next


# -- changes by other programs (Dovecot, mutt, a hand)


def _rename_flags(folder, uid: int, letters: str) -> None:
    info = folder.get(uid)
    os.rename(
        folder.path / info.subdir / info.filename, folder.path / "cur" / f"{info.key}:2,{letters}"
    )


def test_external_changes_get_new_modseqs_while_open(store):
    folder = store.folder(USER)
    a, b = fill(folder, 2)
    highest = folder.highest_modseq
    _rename_flags(folder, a, "FS")
    gone = folder.get(b)
    os.unlink(folder.path / gone.subdir / gone.filename)
    (folder.path / "new" / "1700000000.M1P1.elsewhere").write_bytes(b"Subject: dropped\r\n\r\n")
    listing = folder.messages()
    assert folder.get(a).flags == {SEEN, FLAGGED} and folder.get(a).modseq > highest
    [dropped] = [m for m in listing if m.uid not in (a, b)]
    assert dropped.modseq > highest
    assert folder.vanished_since(highest) == [b]
    assert folder.highest_modseq >= max(m.modseq for m in listing)


def test_external_changes_while_stopped_get_new_modseqs(store):
    folder = store.folder(USER)
    a, b, c = fill(folder, 3)
    highest = folder.highest_modseq
    _rename_flags(folder, a, "S")
    gone = folder.get(b)
    os.unlink(folder.path / gone.subdir / gone.filename)
    again = reopen(store).folder(USER)
    assert again.get(a).modseq > highest and again.get(a).flags == {SEEN}
    assert again.get(c).modseq == folder.get(c).modseq, "an unchanged message keeps its modseq"
    assert again.vanished_since(highest) == [b]
    assert again.highest_modseq > highest


def test_dovecots_files_keep_their_format(store):
    folder = store.folder(USER)
    uid = folder.append(b"a\r\n")
    folder.set_flags(uid, {SEEN, "$Work"})
    inbox = store.user_dir(USER)
    [header, line] = (inbox / "dovecot-uidlist").read_text().splitlines()
    assert header.startswith("3 V") and line == f"{uid} :{folder.get(uid).key}"
    assert (inbox / "dovecot-keywords").read_text() == "0 $Work\n"
    assert os.listdir(inbox / "cur") == [f"{folder.get(uid).key}:2,Sa"]
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [
        "dovecot-keywords",
        "dovecot-uidlist",
        "dovecot-uidvalidity",
        "mailgw-modseq",
    ]


# -- a folder without the index, and a damaged index


def test_folder_without_an_index_starts_at_1(store):
    folder = store.folder(USER)
    uids = fill(folder, 3)
    folder.set_flags(uids[0], {SEEN})
    log_path(store).unlink()
    old = reopen(store).folder(USER)
    assert set(modseqs(old).values()) == {1} and old.highest_modseq == 1
    assert old.get(uids[0]).flags == {SEEN}
    assert log_path(store).exists(), "the index is made at the first open"
    assert old.set_flags(uids[1], {SEEN}).modseq == 2


def test_torn_last_line_is_ignored_and_cut_away(store):
    folder = store.folder(USER)
    uids = fill(folder, 2)
    folder.set_flags(uids[0], {SEEN})
    before, highest = modseqs(folder), folder.highest_modseq
    with open(log_path(store), "ab") as f:
        f.write(f"{highest + 1} M {uids[1]}=F".encode())
    again = reopen(store).folder(USER)
    assert modseqs(again) == before and again.highest_modseq == highest
    assert again.set_flags(uids[1], {SEEN}).modseq == highest + 1
    tail = log_path(store).read_bytes().rsplit(b"\n", 2)[-2]
    assert tail == f"{highest + 1} M {uids[1]}=S".encode()
    assert reopen(store).folder(USER).get(uids[1]).flags == {SEEN}


@pytest.mark.parametrize(
    "damage",
    [b"", b"garbage\n", b"mailgw-modseq 1 V1 H1 F1 N5 E0 Gx\n", b"mailgw-modseq 9 V1\n"],
    ids=["empty", "garbage", "short-snapshot", "other-version"],
)
def test_unreadable_index_is_set_aside_and_the_folder_opens(store, damage):
    folder = store.folder(USER)
    uids = fill(folder, 2)
    log_path(store).write_bytes(damage)
    again = reopen(store).folder(USER)
    assert sorted(modseqs(again)) == uids
    assert again.set_flags(uids[0], {SEEN}).modseq == again.highest_modseq > 1
    assert (log_path(store).parent / "mailgw-modseq.broken").read_bytes() == damage


def test_modseqs_go_on_above_a_damaged_index(store):
    """A client that synced before the damage must see every later change as newer."""
    folder = store.folder(USER)
    uids = fill(folder, 2)
    for _ in range(5):
        folder.set_flags(uids[0], {SEEN})
        folder.set_flags(uids[0], set())
    synced = folder.highest_modseq
    log_path(store).write_bytes(b"garbage\n")
    again = reopen(store).folder(USER)
    assert again.highest_modseq > synced and min(modseqs(again).values()) > synced
    assert again.vanished_since(synced) is None, "what vanished before the damage is unknown"
    assert again.set_flags(uids[1], {SEEN}).modseq > synced


def test_index_of_another_uidvalidity_is_not_used(store):
    folder = store.folder(USER)
    uids = fill(folder, 2)
    folder.set_flags(uids[0], {SEEN})
    data = log_path(store).read_bytes()
    log_path(store).write_bytes(data.replace(f"V{folder.uid_validity}".encode(), b"V7", 1))
    again = reopen(store).folder(USER)
    assert set(modseqs(again).values()) == {1} and again.highest_modseq == 1


# -- the bound on remembered expunges, and compaction


def test_vanished_since_is_bounded_and_none_beyond(store, monkeypatch):
    monkeypatch.setattr(modseq_index, "VANISHED_KEPT", 5)
    folder = store.folder(USER)
    uids = fill(folder, 12)
    start = folder.highest_modseq
    for uid in uids[:10]:
        folder.expunge([uid])
    assert folder.vanished_since(start) == uids[:10], "twice the bound: nothing forgotten yet"
    folder.expunge([uids[10]])  # more than twice the bound: compacted to the last 5
    highest = folder.highest_modseq
    assert folder.vanished_since(start) is None
    assert folder.vanished_since(highest - 6) is None
    assert folder.vanished_since(highest - 5) == uids[6:11]
    assert folder.vanished_since(highest + 1) is None, "a modseq never given"
    again = reopen(store).folder(USER)
    assert again.vanished_since(start) is None
    assert again.vanished_since(highest - 5) == uids[6:11]
    assert modseqs(again) == modseqs(folder) and again.highest_modseq == highest


def test_compaction_keeps_every_modseq(store, monkeypatch):
    monkeypatch.setattr(modseq_index, "COMPACT_MIN_TAIL", 200)
    folder = store.folder(USER)
    uids = fill(folder, 5)
    for n in range(20):
        folder.set_flags(uids[n % 5], {SEEN} if n % 2 else {FLAGGED})
    data = log_path(store).read_bytes()
    assert data.count(b"\n") < 20, "the appended lines were compacted"
    again = reopen(store).folder(USER)
    assert modseqs(again) == modseqs(folder)
    assert again.highest_modseq == folder.highest_modseq == 1 + 5 + 20
    assert [p.name for p in again.path.iterdir() if p.name.startswith(".mailgw")] == []
