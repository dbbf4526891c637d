"""SIGKILL at every durable step of every store write path: nothing acknowledged is lost.

Each case starts the real server (``twistd -n mailgw``) with ``MAILGW_CRASH_AT=STEP:N``
(``mailgw.crashpoint``), drives one write path with the real client (smtplib, imaplib, poplib)
until the server kills itself at that step (the N-th time it is reached), records what the
client saw acknowledged (a 250, a tagged OK, a +OK), checks that the process died by SIGKILL and
logged ``mailgw crash point: STEP`` (a step never reached fails the case), checks that the disk
holds what ``mailgw.crashpoint.STEPS`` says for that step, restarts the server without the
variable, delivers one message to alice and bob (timed) and APPENDs one to alice's Archive, and
checks, over IMAP (EXAMINE, which changes nothing), POP3 and on disk:

- every acknowledged message is present and byte-exact (SMTP: the message as sent, after the
  ``Return-Path:`` and ``Received:`` the server adds; APPEND: the very bytes, and its
  APPENDUID and flags);
- no half message is visible anywhere (every body ends with the digest of its payload), in
  IMAP, in POP3 or as a file in new/ or cur/, and no message is there twice in one folder;
- no UID is reused: every message indexed at the crash keeps its UID, so do the seeds, each
  folder's UIDVALIDITY is unchanged, and the new message after the restart gets, in every
  folder, a UID above every UID that folder's index had handed out at the crash (a UID given to
  a file that never arrived, or compacted away, counts);
- a change is done or not, never half: a STOREd message has its old flags or its new ones
  exactly; each message of a multi-message EXPUNGE, POP3 QUIT or MOVE is gone or whole (a MOVEd
  one in at least one of the two folders), kept ones with their acknowledged \\Deleted;
- the first delivery after the restart is answered within 1 s: a dot lock left by the crash
  (``[lock left]`` in the table) must not hold it up;
- what the crash left in a tmp/ directory (an APPENDed file never renamed, the spool file of a
  delivery), once older than Maildir's 36 hours, is removed by the restarted server.  The dot
  lock's content file in tmp/ is not aged (it is the lock itself, by a hard link), nor is a
  rewrite's temp file beside the index (removed by the next rewrite of that file).

A crash after a step made something durable but before the reply may leave it either way (the
client saw no acknowledgement): if present it must be whole, not doubled, with a fresh UID.
This is a process crash: the page cache survives, so the order of the steps is tested, not
that each fsync happened (that needs a power cut).

The paths, their steps (``STEPS`` says what is on disk at each) and what the cases prove:

``smtp``: two messages to alice, crash at the 2nd pass of ``delivery.file_written``,
    ``file_synced``, ``linked``, ``indexed``, ``dir_synced``, ``replied``: the first (acked)
    message survives; the second is absent while no link exists, present and whole from
    ``linked`` on (a link whose index line was not written gets a UID at the next scan);
    at ``replied`` the 250 is still in the transport's buffer, so the client never sees it.
``smtp-2rcpt``: two messages to alice and bob, crash at ``delivery.next_folder:2``: alice's
    copy is committed, bob's not made (not acknowledged: a retry doubles alice's, as SMTP
    allows); the first message is in both.
``append``: two IMAP APPENDs, crash at the 2nd ``append.file_synced``, ``indexed``,
    ``renamed``, ``dir_synced``: the first keeps its APPENDUID and flags; a UID given to a file
    still in tmp/ (``indexed``) is never handed out again.
``copy``: UID COPY of two messages to Archive, crash after the first copy is whole
    (``append.dir_synced:1``) and when the second has its UID (``append.indexed:2``): the
    originals are untouched, the first copy is whole, the second not shown.
``move``: UID MOVE of two messages, crash once both are copied (``append.dir_synced:2``) and
    between the removals of the originals (``expunge.unlinked:1``): no message is lost.
``store``: UID STORE +FLAGS (\\Flagged $Work) on one message, a new keyword, crash at
    ``keywords.written``, ``keywords.renamed`` (flags old), ``flags.renamed``,
    ``flags.dir_synced`` (flags new): never anything between.
``recent``: SELECT claims two new messages (new/ to cur/), crash at ``recent.moved`` (one
    moved) and ``recent.dir_synced``: both keep their UIDs, contents and (no) flags.
``expunge``: \\Deleted on three messages (acked), EXPUNGE, crash between the first and second
    unlink (``expunge.unlinked:1``) and after the fsync (``expunge.dir_synced``): each is gone
    or whole with \\Deleted.
``pop3``: DELE of three messages then QUIT, crash at ``expunge.unlinked:1`` and
    ``expunge.dir_synced``: each is gone or whole.
``compact``: an index with 999 dead lines, EXPUNGE of two of three messages (then dead lines
    outnumber live ones past ``COMPACT_MIN_DEAD``), crash at ``compact.written`` (the old index
    in force) and ``compact.renamed`` (the compacted one): the survivor keeps its UID and
    UIDNEXT is not lowered.

The crash, restart and shared checks are in ``crash_harness.py``; this file holds the cases.

The table of steps and outcomes (path, step, was the crashing operation acknowledged, outcome
after the restart with what the crash left behind, time of the next delivery) is printed by
each case and, whole, by the last test: see it with ``pytest tests/test_crash_points.py -s``,
or ``-rA`` (the PASSES section shows each test's output).  It is also written to
``crash-points.txt`` in pytest's base temporary directory (``--basetemp`` to choose it).
"""

from __future__ import annotations

import poplib
import re
import smtplib
from pathlib import Path

import pytest
from crash_harness import (
    ALICE,
    ARCHIVE,
    BOB,
    BOB_INBOX,
    FOLDERS,
    HOST,
    INBOX,
    PASSWORD,
    ROWS,
    SENDER,
    Listing,
    Template,
    imap_login,
    make_template,
    message,
    presence,
    read_index,
    record,
    run_case,
    send,
    table_text,
)

from mailgw.crashpoint import STEPS

#: The step names of mailgw.crashpoint.STEPS that belong to the store's write paths.
STORE_PREFIXES = ("delivery.", "append.", "flags.", "keywords.", "recent.", "expunge.", "compact.")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Template:
    """alice (INBOX: seed-1..3, read once so they are in cur/; the Archive every user gets,
    empty), bob (one message), all with their UIDs, made by the real server once."""
    return make_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="module", autouse=True)
def table(tmp_path_factory):
    """Write the table to crash-points.txt once the module is done."""
    yield
    if ROWS:
        (tmp_path_factory.getbasetemp() / "crash-points.txt").write_text(table_text() + "\n")


# -- SMTP delivery


SMTP_STEPS = [
    "delivery.file_written:2",
    "delivery.file_synced:2",
    "delivery.linked:2",
    "delivery.indexed:2",
    "delivery.dir_synced:2",
    "delivery.replied:2",
]


@pytest.mark.parametrize("armed", SMTP_STEPS)
def test_smtp_delivery(armed, tmp_path, template):
    """Two deliveries to alice; the second dies at ``armed``."""
    first, second = message("a"), message("b")

    def drive(ports, before):
        with smtplib.SMTP(HOST, ports["smtp"], timeout=10) as smtp:
            smtp.sendmail(SENDER, [ALICE], first)
            before.ack(INBOX, "a", first)
            before.attempt(INBOX, "b")
            smtp.sendmail(SENDER, [ALICE], second)
            before.ack(INBOX, "b", second)
            before.op_acked = True

    after, took = run_case(armed, drive, tmp_path, template)
    # What is on disk at the crash is what mailgw.crashpoint.STEPS says.
    at_crash = after.disk[INBOX]
    copies = at_crash.files.get("b", [])
    linked = bool(copies)
    indexed = linked and copies[0][0] in at_crash.index
    assert [sub for _, sub in copies] in ([], ["new"])
    step = armed.partition(":")[0]
    assert linked == (step not in ("delivery.file_written", "delivery.file_synced")), copies
    assert indexed == (
        step not in ("delivery.file_written", "delivery.file_synced", "delivery.linked")
    )
    assert bool(after.spool_left) == (step != "delivery.replied"), after.spool_left
    have = set(after.state[INBOX].tags())
    if armed.startswith(("delivery.file_written", "delivery.file_synced")):
        assert "b" not in have, "a message with no link in any folder cannot be there"
    if armed.startswith(("delivery.indexed", "delivery.dir_synced", "delivery.replied")):
        assert "b" in have, "a message indexed before the crash must survive it"
    outcome = "b " + ("present" if "b" in have else "absent")
    if "b" in have:
        outcome += f" (UID {after.state[INBOX].by_tag()['b'][0]})"
    record("smtp", armed, outcome, took, after)


TWO_RECIPIENT_STEP = "delivery.next_folder:2"


def test_smtp_two_recipients(tmp_path, template):
    """Two deliveries to alice and bob; the second dies between alice's folder and bob's."""
    armed = TWO_RECIPIENT_STEP
    first, second = message("a"), message("b")

    def drive(ports, before):
        with smtplib.SMTP(HOST, ports["smtp"], timeout=10) as smtp:
            smtp.sendmail(SENDER, [ALICE, BOB], first)
            before.ack(INBOX, "a", first)
            before.ack(BOB_INBOX, "a", first)
            before.attempt(INBOX, "b")
            before.attempt(BOB_INBOX, "b")
            smtp.sendmail(SENDER, [ALICE, BOB], second)
            before.op_acked = True

    after, took = run_case(armed, drive, tmp_path, template)
    alice, bob = set(after.state[INBOX].tags()), set(after.state[BOB_INBOX].tags())
    assert "b" in alice, "alice's folder was committed before the crash"
    assert "b" not in bob, "bob's folder was not reached before the crash"
    record("smtp-2rcpt", armed, "b: alice present, bob absent", took, after)


# -- IMAP APPEND, COPY, MOVE


APPEND_STEPS = [
    "append.file_synced:2",
    "append.indexed:2",
    "append.renamed:2",
    "append.dir_synced:2",
]


def _append_uid(response: list) -> int:
    return int(re.search(rb"APPENDUID \d+ (\d+)", response[0]).group(1))


@pytest.mark.parametrize("armed", APPEND_STEPS)
def test_imap_append(armed, tmp_path, template):
    """Two APPENDs to INBOX; the second dies at ``armed``."""
    first, second = message("a"), message("b")

    def drive(ports, before):
        imap = imap_login(ports["imap"])
        typ, data = imap.append("INBOX", r"(\Flagged)", None, first)
        assert typ == "OK"
        before.ack(INBOX, "a", first, _append_uid(data))
        before.attempt(INBOX, "b")
        typ, data = imap.append("INBOX", None, None, second)
        if typ == "OK":
            before.ack(INBOX, "b", second, _append_uid(data))
            before.op_acked = True

    after, took = run_case(armed, drive, tmp_path, template)
    at_crash = after.disk[INBOX]
    step = armed.partition(":")[0]
    in_tmp = after.tmp_files(INBOX)
    lines = len(at_crash.index) - len(template.disk[INBOX].index)
    assert len(in_tmp) == (step in ("append.file_synced", "append.indexed")), in_tmp
    assert lines == (1 if step == "append.file_synced" else 2), "UID lines: a, then b"
    assert ("b" in at_crash.files) == (step in ("append.renamed", "append.dir_synced"))
    by_tag = after.state[INBOX].by_tag()
    assert by_tag["a"][1] == {"\\Flagged"}, "the acknowledged APPEND lost its flags"
    if armed.startswith(("append.file_synced", "append.indexed")):
        assert "b" not in by_tag, "a file still in tmp/ cannot be visible"
    if armed.startswith(("append.renamed", "append.dir_synced")):
        assert "b" in by_tag
    outcome = "b " + ("present" if "b" in by_tag else "absent")
    if "b" in by_tag:
        outcome += f" (UID {by_tag['b'][0]})"
    record("append", armed, outcome, took, after)


def transfer(command: str):
    """A drive that sends ``UID <command> 1:2 Archive`` (COPY or MOVE of seed-1 and seed-2)."""

    def drive(ports, before):
        imap = imap_login(ports["imap"])
        assert imap.select("INBOX")[0] == "OK"
        before.attempt(ARCHIVE, "seed-1")
        before.attempt(ARCHIVE, "seed-2")
        typ, _ = imap.uid(command, "1:2", "Archive")
        before.op_acked = typ == "OK"

    return drive


COPY_STEPS = ["append.dir_synced:1", "append.indexed:2"]


@pytest.mark.parametrize("armed", COPY_STEPS)
def test_imap_copy(armed, tmp_path, template):
    """UID COPY of seed-1 and seed-2 to Archive dies at ``armed``."""

    after, took = run_case(armed, transfer("COPY"), tmp_path, template)
    inbox, archive = after.state[INBOX], after.state[ARCHIVE]
    assert sorted(inbox.tags()) == ["next", "seed-1", "seed-2", "seed-3"], "COPY changed INBOX"
    for tag, _, data in archive.messages.values():
        if tag != "next":
            assert data == template.state[INBOX].by_tag()[tag][2], f"copy of {tag} differs"
    assert archive.old_tags() == {"seed-1"}, "the first copy was whole, the second not shown"
    record(
        "copy",
        armed,
        "Archive: " + presence(archive, ["seed-1", "seed-2"]),
        took,
        after,
    )


MOVE_STEPS = ["append.dir_synced:2", "expunge.unlinked:1"]


@pytest.mark.parametrize("armed", MOVE_STEPS)
def test_imap_move(armed, tmp_path, template):
    """UID MOVE of seed-1 and seed-2 to Archive dies at ``armed``: nothing may be lost."""

    after, took = run_case(armed, transfer("MOVE"), tmp_path, template)
    inbox, archive = after.state[INBOX].old_tags(), after.state[ARCHIVE].old_tags()
    for tag in ("seed-1", "seed-2", "seed-3"):
        assert tag in inbox | archive, f"MOVE lost {tag}"
    assert "seed-3" in inbox
    assert archive == {"seed-1", "seed-2"}, "the crash came after both copies were made"
    if armed.startswith("expunge.unlinked"):
        assert inbox & {"seed-1", "seed-2"} == {"seed-2"}, "one original was removed"
    outcome = "INBOX: " + presence(after.state[INBOX], ["seed-1", "seed-2"]) + "; Archive both"
    record("move", armed, outcome, took, after)


# -- flags


STORE_STEPS = [
    "keywords.written:1",
    "keywords.renamed:1",
    "flags.renamed:1",
    "flags.dir_synced:1",
]


@pytest.mark.parametrize("armed", STORE_STEPS)
def test_imap_store(armed, tmp_path, template):
    """UID STORE 1 +FLAGS (\\Flagged $Work) dies at ``armed``: old flags or new flags."""
    new_flags = frozenset({"\\Flagged", "$Work"})

    def drive(ports, before):
        imap = imap_login(ports["imap"])
        assert imap.select("INBOX")[0] == "OK"
        typ, _ = imap.uid("STORE", "1", "+FLAGS", r"(\Flagged $Work)")
        before.op_acked = typ == "OK"

    after, took = run_case(armed, drive, tmp_path, template)
    inbox = after.disk[INBOX].path
    temps = [p.name for p in after.leftovers if p.name.startswith(".dovecot-keywords.")]
    assert bool(temps) == armed.startswith("keywords.written"), temps
    defined = (inbox / "dovecot-keywords").exists()
    assert defined == (not armed.startswith("keywords.written")), "the keyword table"
    flags = after.state[INBOX].messages[1][1]
    old_flags = template.state[INBOX].messages[1][1]
    assert flags in (old_flags, new_flags), f"half a flag change: {sorted(flags)}"
    if after.before.op_acked:
        assert flags == new_flags
    if armed.startswith("flags."):
        assert flags == new_flags, "the file was renamed to its new flags before the crash"
    else:
        assert flags == old_flags, "no file was renamed before the crash"
    for uid in (2, 3):
        assert after.state[INBOX].messages[uid][1] == template.state[INBOX].messages[uid][1]
    record(
        "store",
        armed,
        "flags " + ("new" if flags == new_flags else "old"),
        took,
        after,
    )


RECENT_STEPS = ["recent.moved:1", "recent.dir_synced:1"]


@pytest.mark.parametrize("armed", RECENT_STEPS)
def test_imap_select_claims_recent(armed, tmp_path, template):
    """Two new messages; SELECT claims them (new/ to cur/) and the move dies at ``armed``."""
    messages = {"r1": message("r1"), "r2": message("r2")}

    def drive(ports, before):
        for tag, data in messages.items():
            send(ports["smtp"], [ALICE], data)
            before.ack(INBOX, tag, data)
        imap = imap_login(ports["imap"])
        imap.select("INBOX")
        imap.noop()

    after, took = run_case(armed, drive, tmp_path, template)
    files = after.disk[INBOX].files
    in_cur = [tag for tag in messages if files[tag][0][1] == "cur"]
    if armed.startswith("recent.moved"):
        assert len(in_cur) == 1, "the crash came after the first of two moves"
    for tag in messages:
        assert after.state[INBOX].by_tag()[tag][1] == frozenset(), f"{tag} gained flags"
    record(
        "recent",
        armed,
        f"r1, r2 present; at the crash in cur/: {', '.join(in_cur) or '-'}",
        took,
        after,
    )


# -- expunge: IMAP EXPUNGE, POP3 QUIT, compaction


EXPUNGE_STEPS = ["expunge.unlinked:1", "expunge.dir_synced:1"]


def _gone_or_kept(listing: Listing, tags) -> str:
    have = set(listing.tags())
    gone = [t for t in tags if t not in have]
    kept = [t for t in tags if t in have]
    return f"gone: {', '.join(gone) or '-'}; kept: {', '.join(kept) or '-'}"


@pytest.mark.parametrize("armed", EXPUNGE_STEPS)
def test_imap_expunge(armed, tmp_path, template):
    """\\Deleted on seed-1..3 (acknowledged), then EXPUNGE dies at ``armed``."""

    def drive(ports, before):
        imap = imap_login(ports["imap"])
        assert imap.select("INBOX")[0] == "OK"
        assert imap.uid("STORE", "1:3", "+FLAGS.SILENT", r"(\Deleted)")[0] == "OK"
        typ, _ = imap.expunge()
        before.op_acked = typ == "OK"

    after, took = run_case(armed, drive, tmp_path, template)
    seeds = ["seed-1", "seed-2", "seed-3"]
    on_disk = set(after.disk[INBOX].files)
    assert ("seed-1" in on_disk, "seed-2" in on_disk) == (
        (False, True) if armed.startswith("expunge.unlinked") else (False, False)
    )
    for tag, (_, flags, _) in after.state[INBOX].by_tag().items():
        if tag in seeds:
            assert flags == {"\\Deleted"}, f"{tag} kept without its acknowledged \\Deleted"
    have = set(after.state[INBOX].tags())
    if armed.startswith("expunge.unlinked"):
        assert have & set(seeds) == {"seed-2", "seed-3"}
    else:
        assert not have & set(seeds)
    record("expunge", armed, _gone_or_kept(after.state[INBOX], seeds), took, after)


@pytest.mark.parametrize("armed", EXPUNGE_STEPS)
def test_pop3_quit(armed, tmp_path, template):
    """DELE 1, 2, 3 then QUIT: the UPDATE state's removal dies at ``armed``."""

    def drive(ports, before):
        pop = poplib.POP3(HOST, ports["pop3"], timeout=10)
        pop.user(ALICE)
        pop.pass_(PASSWORD)
        for n in (1, 2, 3):
            pop.dele(n)
        pop.quit()
        before.op_acked = True

    after, took = run_case(armed, drive, tmp_path, template)
    seeds = ["seed-1", "seed-2", "seed-3"]
    have = set(after.state[INBOX].tags())
    if armed.startswith("expunge.unlinked"):
        assert have & set(seeds) == {"seed-2", "seed-3"}
    else:
        assert not have & set(seeds)
    record("pop3", armed, _gone_or_kept(after.state[INBOX], seeds), took, after)


DEAD_LINES = 999


def _add_dead_lines(mail_dir: Path) -> dict:
    """Give alice's INBOX index 999 lines of messages long gone (UIDs 4..1002)."""
    index = mail_dir / FOLDERS[INBOX] / "dovecot-uidlist"
    _, floor, _ = read_index(index)
    lines = "".join(f"{uid} :gone-{uid}\n" for uid in range(floor, floor + DEAD_LINES))
    with open(index, "a") as f:
        f.write(lines)
    return {INBOX: floor + DEAD_LINES}


COMPACT_STEPS = ["compact.written:1", "compact.renamed:1"]


@pytest.mark.parametrize("armed", COMPACT_STEPS)
def test_index_compaction(armed, tmp_path, template):
    """EXPUNGE of seed-1 and seed-2 leaves 1001 dead lines to 1 live: the compaction that
    follows dies at ``armed``."""

    def drive(ports, before):
        imap = imap_login(ports["imap"])
        assert imap.select("INBOX")[0] == "OK"
        assert imap.uid("STORE", "1:2", "+FLAGS.SILENT", r"(\Deleted)")[0] == "OK"
        typ, _ = imap.expunge()
        before.op_acked = typ == "OK"

    after, took = run_case(armed, drive, tmp_path, template, _add_dead_lines)
    have = set(after.state[INBOX].tags())
    assert not have & {"seed-1", "seed-2"}, "the expunge was durable before the compaction"
    assert after.state[INBOX].by_tag()["seed-3"][0] == 3
    lines = len(after.disk[INBOX].index)
    assert lines == (1 + DEAD_LINES + 2 if armed.startswith("compact.written") else 1), lines
    temps = [p.name for p in after.leftovers if p.name.startswith(".dovecot-uidlist.")]
    assert bool(temps) == armed.startswith("compact.written"), temps
    outcome = f"seed-3 kept as UID 3; index at crash: {lines} lines; next UID {after.next_uid}"
    record(
        "compact",
        armed,
        outcome,
        took,
        after,
    )


# -- the table


def test_every_store_step_has_a_case():
    """Each store step of mailgw.crashpoint.STEPS is crashed at by some case above."""
    cases = [
        *SMTP_STEPS,
        TWO_RECIPIENT_STEP,
        *APPEND_STEPS,
        *COPY_STEPS,
        *MOVE_STEPS,
        *STORE_STEPS,
        *RECENT_STEPS,
        *EXPUNGE_STEPS,
        *COMPACT_STEPS,
    ]
    armed = {case.partition(":")[0] for case in cases}
    assert armed <= set(STEPS)
    store_steps = {step for step in STEPS if step.startswith(STORE_PREFIXES)}
    assert store_steps <= armed, f"no case for {sorted(store_steps - armed)}"


def test_table_of_steps_and_outcomes():
    """Print the table of every case run in this session (``-s`` or ``-rA`` shows it)."""
    if not ROWS:
        pytest.skip("no crash case ran")
    print()
    print(table_text())
