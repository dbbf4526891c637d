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

The table of steps and outcomes (path, step, was the crashing operation acknowledged, outcome
after the restart with what the crash left behind, time of the next delivery) is printed by
each case and, whole, by the last test: see it with ``pytest tests/test_crash_points.py -s``,
or ``-rA`` (the PASSES section shows each test's output).  It is also written to
``crash-points.txt`` in pytest's base temporary directory (``--basetemp`` to choose it).
"""

from __future__ import annotations

import email
import hashlib
import imaplib
import os
import poplib
import re
import shutil
import signal
import smtplib
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import argon2
import pytest
from mailgw_process import ServerProcess, mailgw, write_config

from mailgw.crashpoint import STEPS

ALICE = "alice@example.test"
BOB = "bob@example.test"
SENDER = "someone@elsewhere.test"
PASSWORD = "pw-for-crash-points"
HOST = "127.0.0.1"
CRASH_ENV = "MAILGW_CRASH_AT"
#: The folders every case looks at: (user, folder name) -> directory under data/mail/.
FOLDERS = {
    (ALICE, "INBOX"): "example.test/alice",
    (ALICE, "Archive"): "example.test/alice/.Archive",
    (BOB, "INBOX"): "example.test/bob",
}
INBOX = (ALICE, "INBOX")
ARCHIVE = (ALICE, "Archive")
BOB_INBOX = (BOB, "INBOX")
#: The write paths' step prefixes in mailgw.crashpoint.STEPS that this file must cover.
STORE_PREFIXES = ("delivery.", "append.", "flags.", "keywords.", "recent.", "expunge.", "compact.")
#: What a client raises when the server dies under it.
CLIENT_ERRORS = (OSError, EOFError, smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto)
NEXT_DELIVERY_LIMIT = 1.0
#: Older than the 36 hours after which the store removes a crash's temporary files.
STALE_AGE = 37 * 3600

#: Rows of the table, in the order the cases ran.
ROWS: list[tuple[str, str, str, str, str]] = []


# -- messages that prove they are whole


def _message(tag: str) -> bytes:
    """A message whose last line is the digest of its payload, so a torn copy is seen."""
    payload = b"".join(
        hashlib.sha256(f"{tag}/{i}".encode()).hexdigest().encode() + b"\r\n" for i in range(60)
    )
    digest = hashlib.sha256(payload).hexdigest().encode()
    header = f"From: {SENDER}\r\nSubject: {tag}\r\n\r\n".encode()
    return header + payload + b"digest " + digest + b"\r\n"


def _is_whole(data: bytes) -> bool:
    body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    payload, _, last = body.rpartition(b"digest ")
    return last.strip() == hashlib.sha256(payload).hexdigest().encode()


def _same_message(stored: bytes, sent: bytes) -> bool:
    """Is ``stored`` the message ``sent``, byte for byte, after only the trace headers the
    server adds (``Return-Path:``, ``Received:``)?"""
    if not stored.endswith(sent):
        return False
    added = stored[: len(stored) - len(sent)]
    return all(
        line[:1] in (b" ", b"\t") or line.startswith((b"Return-Path: ", b"Received: "))
        for line in added.split(b"\r\n")[:-1]
    )


def _tag(data: bytes) -> str:
    return email.message_from_bytes(data)["Subject"] or "?"


# -- what the client saw before the crash


@dataclass
class Before:
    """What the driver did: acknowledged messages, attempts, and the crashing operation."""

    #: folder -> tag -> the message as the client handed it over, for acknowledged messages.
    acked: dict = field(default_factory=dict)
    #: folder -> tag -> UID the server acknowledged (APPENDUID).
    acked_uids: dict = field(default_factory=dict)
    #: folder -> tags the client tried to add without seeing the acknowledgement (yet).
    attempted: dict = field(default_factory=dict)
    #: Did the client see the crashing operation acknowledged?
    op_acked: bool = False

    def attempt(self, folder, tag: str) -> None:
        self.attempted.setdefault(folder, set()).add(tag)

    def ack(self, folder, tag: str, data: bytes, uid: int | None = None) -> None:
        self.acked.setdefault(folder, {})[tag] = data
        if uid is not None:
            self.acked_uids.setdefault(folder, {})[tag] = uid


# -- what the server shows


@dataclass
class Listing:
    """One folder over IMAP: UIDVALIDITY and uid -> (tag, flags, message)."""

    uid_validity: int
    messages: dict

    def by_tag(self) -> dict:
        return {tag: (uid, flags, data) for uid, (tag, flags, data) in self.messages.items()}

    def tags(self) -> list:
        return [tag for tag, _, _ in self.messages.values()]

    def old_tags(self) -> set:
        """The tags of the messages that were there before the restart."""
        return set(self.tags()) - {"next"}


def _parse_fetch(data: list) -> dict:
    items: list[list] = []
    for item in data:
        if isinstance(item, tuple):
            items.append([item[0], item[1]])
        elif item and items:
            items[-1][0] += item
    messages = {}
    for meta, body in items:
        uid = int(re.search(rb"UID (\d+)", meta).group(1))
        flags_text = re.search(rb"FLAGS \(([^)]*)\)", meta).group(1).decode()
        flags = frozenset(flags_text.split()) - {"\\Recent"}
        messages[uid] = (_tag(body), flags, body)
    return messages


def _imap_login(port: int, user: str = ALICE) -> imaplib.IMAP4:
    imap = imaplib.IMAP4(HOST, port, timeout=10)
    imap.login(user, PASSWORD)
    return imap


def _imap_state(port: int) -> dict:
    """Every folder of FOLDERS, read with EXAMINE (which changes nothing)."""
    state = {}
    for user in (ALICE, BOB):
        imap = _imap_login(port, user)
        try:
            for folder, _ in FOLDERS.items():
                if folder[0] != user:
                    continue
                typ, _ = imap.select(folder[1], readonly=True)
                assert typ == "OK", f"EXAMINE {folder}: {typ}"
                validity = int(imap.response("UIDVALIDITY")[1][0])
                typ, data = imap.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
                assert typ == "OK"
                state[folder] = Listing(validity, _parse_fetch(data))
        finally:
            imap.logout()
    return state


def _pop3_messages(port: int, user: str) -> list:
    pop = poplib.POP3(HOST, port, timeout=10)
    try:
        pop.user(user)
        pop.pass_(PASSWORD)
        count, _ = pop.stat()
        return [b"\r\n".join(pop.retr(i)[1]) + b"\r\n" for i in range(1, count + 1)]
    finally:
        pop.quit()


def _send(port: int, recipients: list, data: bytes, timeout: float = 10) -> None:
    with smtplib.SMTP(HOST, port, timeout=timeout) as smtp:
        smtp.sendmail(SENDER, recipients, data)


# -- what is on disk


@dataclass
class DiskFolder:
    """A folder's files and index as the crash left them."""

    #: tag -> [(key, "new" or "cur")] of every file in new/ and cur/.
    files: dict
    #: key -> UID of every index line.
    index: dict
    #: The least UID the next new message may get: above every UID the index handed out.
    uid_floor: int
    uid_validity: int
    path: Path
    lock_left: bool
    #: Files a crash left that are neither messages nor the index: in tmp/, or temporary
    #: files of a rewrite in the folder itself.
    leftovers: list


def _leftovers(path: Path) -> list:
    found = list((path / "tmp").iterdir())
    found += [p for p in path.iterdir() if p.name.endswith((".tmp", ".new"))]
    return sorted(found)


def _age(paths, seconds: float) -> None:
    """Make these files look ``seconds`` old."""
    when = time.time() - seconds
    for path in paths:
        os.utime(path, (when, when))


def _read_index(path: Path) -> tuple[int, int, dict]:
    lines = path.read_text().splitlines()
    header = dict((f[0], f[1:]) for f in lines[0].split()[1:])
    index = {}
    for line in lines[1:]:
        head, sep, key = line.partition(" :")
        if sep and head.split()[0].isdigit():
            index[key] = int(head.split()[0])
    floor = max([int(header.get("N", "1")), *(uid + 1 for uid in index.values())])
    return int(header["V"]), floor, index


def _disk_state(mail_dir: Path) -> dict:
    state = {}
    for folder, relative in FOLDERS.items():
        path = mail_dir / relative
        files = {}
        for sub in ("new", "cur"):
            for entry in (path / sub).iterdir():
                data = entry.read_bytes()
                files.setdefault(_tag(data), []).append((entry.name.partition(":")[0], sub))
        validity, floor, index = _read_index(path / "dovecot-uidlist")
        leftovers = _leftovers(path)
        state[folder] = DiskFolder(
            files,
            index,
            floor,
            validity,
            path,
            (path / "dovecot-uidlist.lock").exists(),
            leftovers,
        )
    return state


# -- the template: users and seed messages, made once and copied per case


@dataclass
class Template:
    """The data directory every case starts from, as IMAP and the disk show it."""

    data: Path
    state: dict
    disk: dict


def _cheapen_hashes(passwd: Path) -> None:
    """Give every user an Argon2id hash of the lowest cost (a login then takes a millisecond,
    not 0.25 s: the cases log in about a hundred times)."""
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    lines = []
    for line in passwd.read_text().splitlines():
        fields = line.split(":")
        fields[1] = "{ARGON2ID}" + hasher.hash(PASSWORD)
        lines.append(":".join(fields))
    passwd.write_text("".join(line + "\n" for line in lines))


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Template:
    """alice (INBOX: seed-1..3, read once so they are in cur/; the Archive every user gets,
    empty), bob (one message), all with their UIDs, made by the real server once."""
    root = tmp_path_factory.mktemp("template")
    config = write_config(root)
    (root / "data").mkdir()
    for user in (ALICE, BOB):
        added = mailgw(config, "user", "add", user, "--password-stdin", stdin=PASSWORD)
        assert added.returncode == 0, added.stderr
    _cheapen_hashes(root / "data" / "passwd")
    seeds = {f"seed-{n}": _message(f"seed-{n}") for n in (1, 2, 3)}
    seeds["seed-bob"] = _message("seed-bob")
    server = ServerProcess(config, env={CRASH_ENV: ""}).start()
    try:
        for tag, data in seeds.items():
            _send(server.ports["smtp"], [BOB if tag == "seed-bob" else ALICE], data)
        imap = _imap_login(server.ports["imap"])
        assert imap.select("INBOX")[0] == "OK"
        new = root / "data" / "mail" / FOLDERS[INBOX] / "new"
        deadline = time.monotonic() + 10
        while any(new.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.01)  # the claim of \Recent moves them to cur/ in a thread
        imap.logout()
        state = _imap_state(server.ports["imap"])
    finally:
        assert server.stop() == 0
    assert sorted(state[INBOX].tags()) == ["seed-1", "seed-2", "seed-3"]
    assert sorted(state[INBOX].messages) == [1, 2, 3]
    disk = _disk_state(root / "data" / "mail")
    return Template(root / "data", state, disk)


@pytest.fixture(scope="module", autouse=True)
def table(tmp_path_factory):
    """Write the table to crash-points.txt once the module is done."""
    yield
    if ROWS:
        (tmp_path_factory.getbasetemp() / "crash-points.txt").write_text(_table() + "\n")


def _table() -> str:
    header = ("path", "step", "acked", "outcome after restart", "next delivery")
    widths = [max(len(row[i]) for row in [header, *ROWS]) for i in range(len(header))]
    rows = [header, *ROWS]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


# -- one case: crash, restart, check


@dataclass
class After:
    """What a check sees: the state before the crash, at the crash, and after the restart."""

    template: Template
    before: Before
    disk: dict  # at the crash
    state: dict  # over IMAP after the restart
    next_uid: int
    #: The files the crash left besides messages and indexes (those in tmp/ are removed
    #: once 36 hours old; a rewrite's temp file by the next rewrite of that file).
    leftovers: list
    #: Names of the files the crash left in the spool (DATA/tmp).
    spool_left: list

    def tmp_files(self, folder) -> list:
        """Message files the crash left in the folder's tmp/ (lock temps not counted)."""
        return [
            p.name
            for p in self.leftovers
            if p.parent == self.disk[folder].path / "tmp" and ".lock." not in p.name
        ]


def _run_case(path: str, armed: str, drive, tmp_path: Path, template: Template, prepare=None):
    """Crash at ``armed`` while ``drive(ports, before)`` runs; restart; return an After."""
    step = armed.partition(":")[0]
    assert step in STEPS
    shutil.copytree(template.data, tmp_path / "data")
    config = write_config(tmp_path)
    mail_dir = tmp_path / "data" / "mail"
    floors = {folder: disk.uid_floor for folder, disk in template.disk.items()}
    if prepare is not None:
        floors.update(prepare(mail_dir))
    before = Before()
    crashing = ServerProcess(config, env={CRASH_ENV: armed}).start()
    try:
        drive(crashing.ports, before)
    except CLIENT_ERRORS:
        pass  # the server died under the client: only what was acknowledged counts
    try:
        status = crashing.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        crashing.kill()
        pytest.fail(f"crash point {armed} was never reached")
    log = crashing.log.read_text(errors="replace")
    assert status == -signal.SIGKILL, f"server exited {status}, not by SIGKILL:\n{log}"
    assert f"mailgw crash point: {step}\n" in log, log

    disk = _disk_state(mail_dir)
    spool = tmp_path / "data" / "tmp"
    leftovers = [*spool.iterdir(), *(p for d in disk.values() for p in d.leftovers)]
    # Not the lock's content file: it is the lock itself (a hard link), whose age would make it
    # stale, and the restart must cope with a fresh one.
    in_tmp = [p for p in leftovers if p.parent.name == "tmp" and ".lock." not in p.name]
    _age(in_tmp, STALE_AGE)
    server = ServerProcess(config, env={CRASH_ENV: ""}).start()
    clean = False
    try:
        started = time.monotonic()
        try:
            _send(server.ports["smtp"], [ALICE, BOB], _message("next"), timeout=5)
        except (OSError, smtplib.SMTPException) as e:
            pytest.fail(f"the first delivery after the restart failed: {e!r}")
        took = time.monotonic() - started
        imap = _imap_login(server.ports["imap"])
        assert imap.append("Archive", None, None, _message("next"))[0] == "OK"
        imap.logout()
        state = _imap_state(server.ports["imap"])
        pop3 = {user: _pop3_messages(server.ports["pop3"], user) for user in (ALICE, BOB)}
        clean = True
    finally:
        if clean:
            assert server.stop() == 0
        else:
            server.kill()
    # The server removes what a crash left in tmp/ once it is old (Maildir's 36 hours).
    kept = [str(p.relative_to(tmp_path)) for p in in_tmp if p.exists()]
    assert not kept, f"crash left-overs in tmp/ never removed: {kept}"

    _check_common(template, before, disk, state, pop3, floors, mail_dir)
    next_uid = state[INBOX].by_tag()["next"][0]
    spool_left = [p.name for p in leftovers if p.parent == spool]
    after = After(template, before, disk, state, next_uid, leftovers, spool_left)
    assert took < NEXT_DELIVERY_LIMIT, f"the next delivery took {took:.2f}s"
    return after, took


def _check_common(template, before, disk, state, pop3, floors, mail_dir) -> None:
    """The invariants every case must keep (see the module docstring)."""
    for folder, listing in state.items():
        tags = listing.tags()
        assert len(tags) == len(set(tags)), f"{folder}: a message is there twice: {sorted(tags)}"
        for uid, (_, _, data) in listing.messages.items():
            assert _is_whole(data), f"{folder}: half message visible over IMAP: UID {uid}"
        # UIDVALIDITY unchanged.
        assert listing.uid_validity == template.state[folder].uid_validity, folder
        assert listing.uid_validity == disk[folder].uid_validity, folder
        # Every message indexed (and on disk) at the crash keeps its UID.
        by_tag = listing.by_tag()
        for tag, copies in disk[folder].files.items():
            for key, _ in copies:
                if key in disk[folder].index and tag in by_tag:
                    assert by_tag[tag][0] == disk[folder].index[key], (
                        f"{folder}: {tag} had UID {disk[folder].index[key]} before the crash, "
                        f"now {by_tag[tag][0]}"
                    )
        # The seeds keep their UIDs.
        for uid, (tag, _, _) in template.state[folder].messages.items():
            if tag in by_tag:
                assert by_tag[tag][0] == uid, f"{folder}: {tag} changed UID"
            assert uid not in listing.messages or listing.messages[uid][0] == tag, (
                f"{folder}: UID {uid} reused"
            )
        # Acknowledged messages present, byte-exact, with the UID the server gave.
        for tag, sent in before.acked.get(folder, {}).items():
            assert tag in by_tag, f"{folder}: acknowledged message {tag} lost"
            stored = by_tag[tag][2]
            assert _same_message(stored, sent), f"{folder}: {tag} differs from what was sent"
        for tag, uid in before.acked_uids.get(folder, {}).items():
            assert by_tag[tag][0] == uid, f"{folder}: {tag} acknowledged as UID {uid}"
        # Nothing appears that nobody sent.
        known = {tag for tag, _, _ in template.state[folder].messages.values()}
        known |= set(before.acked.get(folder, {})) | before.attempted.get(folder, set())
        known.add("next")
        assert set(tags) <= known, f"{folder}: unexpected {sorted(set(tags) - known)}"
    # A new message's UID is above every UID handed out before the crash, in every folder.
    for folder, listing in state.items():
        next_uid = listing.by_tag()["next"][0]
        floor = max(floors[folder], disk[folder].uid_floor)
        assert next_uid >= floor, f"{folder}: a new message got UID {next_uid} < {floor}"
    # POP3 shows INBOX as IMAP does, all whole.
    for user in (ALICE, BOB):
        messages = pop3[user]
        assert all(_is_whole(m) for m in messages), f"{user}: half message over POP3"
        assert sorted(_tag(m) for m in messages) == sorted(state[(user, "INBOX")].tags())
    # On disk: every file in new/ and cur/ is whole (nothing torn is ever visible).
    for relative in FOLDERS.values():
        for sub in ("new", "cur"):
            for entry in (mail_dir / relative / sub).iterdir():
                assert _is_whole(entry.read_bytes()), f"torn file in {sub}/: {entry.name}"


def _record(path: str, armed: str, outcome: str, took: float, after: After) -> None:
    """Add a row to the table (and print it)."""
    notes = []
    if any(disk.lock_left for disk in after.disk.values()):
        notes.append("lock left")
    if after.leftovers:
        kinds = sorted({_kind(p.name) for p in after.leftovers})
        notes.append(f"left: {', '.join(kinds)}")
    if notes:
        outcome += f" [{'; '.join(notes)}]"
    row = (path, armed, "yes" if after.before.op_acked else "no", outcome, f"{took * 1000:.0f} ms")
    ROWS.append(row)
    print("  ".join(row))


def _kind(name: str) -> str:
    """What a left-over file is, from its name."""
    if name.startswith("incoming-"):
        return "spool file"
    if name.startswith("."):
        return name.split(".")[1] + " temp"
    if ".lock." in name:
        return "lock temp"
    return "tmp/ file"


def _presence(listing: Listing, tags) -> str:
    have = set(listing.tags())
    return ", ".join(f"{tag} {'present' if tag in have else 'absent'}" for tag in tags)


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
    first, second = _message("a"), _message("b")

    def drive(ports, before):
        with smtplib.SMTP(HOST, ports["smtp"], timeout=10) as smtp:
            smtp.sendmail(SENDER, [ALICE], first)
            before.ack(INBOX, "a", first)
            before.attempt(INBOX, "b")
            smtp.sendmail(SENDER, [ALICE], second)
            before.ack(INBOX, "b", second)
            before.op_acked = True

    after, took = _run_case("smtp", armed, drive, tmp_path, template)
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
    _record("smtp", armed, outcome, took, after)


def test_smtp_two_recipients(tmp_path, template):
    """Two deliveries to alice and bob; the second dies between alice's folder and bob's."""
    armed = "delivery.next_folder:2"
    first, second = _message("a"), _message("b")

    def drive(ports, before):
        with smtplib.SMTP(HOST, ports["smtp"], timeout=10) as smtp:
            smtp.sendmail(SENDER, [ALICE, BOB], first)
            before.ack(INBOX, "a", first)
            before.ack(BOB_INBOX, "a", first)
            before.attempt(INBOX, "b")
            before.attempt(BOB_INBOX, "b")
            smtp.sendmail(SENDER, [ALICE, BOB], second)
            before.op_acked = True

    after, took = _run_case("smtp-2rcpt", armed, drive, tmp_path, template)
    alice, bob = set(after.state[INBOX].tags()), set(after.state[BOB_INBOX].tags())
    assert "b" in alice, "alice's folder was committed before the crash"
    assert "b" not in bob, "bob's folder was not reached before the crash"
    _record("smtp-2rcpt", armed, "b: alice present, bob absent", took, after)


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
    first, second = _message("a"), _message("b")

    def drive(ports, before):
        imap = _imap_login(ports["imap"])
        typ, data = imap.append("INBOX", r"(\Flagged)", None, first)
        assert typ == "OK"
        before.ack(INBOX, "a", first, _append_uid(data))
        before.attempt(INBOX, "b")
        typ, data = imap.append("INBOX", None, None, second)
        if typ == "OK":
            before.ack(INBOX, "b", second, _append_uid(data))
            before.op_acked = True

    after, took = _run_case("append", armed, drive, tmp_path, template)
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
    _record("append", armed, outcome, took, after)


@pytest.mark.parametrize("armed", ["append.dir_synced:1", "append.indexed:2"])
def test_imap_copy(armed, tmp_path, template):
    """UID COPY of seed-1 and seed-2 to Archive dies at ``armed``."""

    def drive(ports, before):
        imap = _imap_login(ports["imap"])
        assert imap.select("INBOX")[0] == "OK"
        before.attempt(ARCHIVE, "seed-1")
        before.attempt(ARCHIVE, "seed-2")
        typ, _ = imap.uid("COPY", "1:2", "Archive")
        before.op_acked = typ == "OK"

    after, took = _run_case("copy", armed, drive, tmp_path, template)
    inbox, archive = after.state[INBOX], after.state[ARCHIVE]
    assert sorted(inbox.tags()) == ["next", "seed-1", "seed-2", "seed-3"], "COPY changed INBOX"
    for tag, _, data in archive.messages.values():
        if tag != "next":
            assert data == template.state[INBOX].by_tag()[tag][2], f"copy of {tag} differs"
    assert archive.old_tags() == {"seed-1"}, "the first copy was whole, the second not shown"
    _record(
        "copy",
        armed,
        "Archive: " + _presence(archive, ["seed-1", "seed-2"]),
        took,
        after,
    )


@pytest.mark.parametrize("armed", ["append.dir_synced:2", "expunge.unlinked:1"])
def test_imap_move(armed, tmp_path, template):
    """UID MOVE of seed-1 and seed-2 to Archive dies at ``armed``: nothing may be lost."""

    def drive(ports, before):
        imap = _imap_login(ports["imap"])
        assert imap.select("INBOX")[0] == "OK"
        before.attempt(ARCHIVE, "seed-1")
        before.attempt(ARCHIVE, "seed-2")
        typ, _ = imap.uid("MOVE", "1:2", "Archive")
        before.op_acked = typ == "OK"

    after, took = _run_case("move", armed, drive, tmp_path, template)
    inbox, archive = after.state[INBOX].old_tags(), after.state[ARCHIVE].old_tags()
    for tag in ("seed-1", "seed-2", "seed-3"):
        assert tag in inbox | archive, f"MOVE lost {tag}"
    assert "seed-3" in inbox
    assert archive == {"seed-1", "seed-2"}, "the crash came after both copies were made"
    if armed.startswith("expunge.unlinked"):
        assert inbox & {"seed-1", "seed-2"} == {"seed-2"}, "one original was removed"
    outcome = "INBOX: " + _presence(after.state[INBOX], ["seed-1", "seed-2"]) + "; Archive both"
    _record("move", armed, outcome, took, after)


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
        imap = _imap_login(ports["imap"])
        assert imap.select("INBOX")[0] == "OK"
        typ, _ = imap.uid("STORE", "1", "+FLAGS", r"(\Flagged $Work)")
        before.op_acked = typ == "OK"

    after, took = _run_case("store", armed, drive, tmp_path, template)
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
    _record(
        "store",
        armed,
        "flags " + ("new" if flags == new_flags else "old"),
        took,
        after,
    )


@pytest.mark.parametrize("armed", ["recent.moved:1", "recent.dir_synced:1"])
def test_imap_select_claims_recent(armed, tmp_path, template):
    """Two new messages; SELECT claims them (new/ to cur/) and the move dies at ``armed``."""
    messages = {"r1": _message("r1"), "r2": _message("r2")}

    def drive(ports, before):
        for tag, data in messages.items():
            _send(ports["smtp"], [ALICE], data)
            before.ack(INBOX, tag, data)
        imap = _imap_login(ports["imap"])
        imap.select("INBOX")
        imap.noop()

    after, took = _run_case("recent", armed, drive, tmp_path, template)
    files = after.disk[INBOX].files
    in_cur = [tag for tag in messages if files[tag][0][1] == "cur"]
    if armed.startswith("recent.moved"):
        assert len(in_cur) == 1, "the crash came after the first of two moves"
    for tag in messages:
        assert after.state[INBOX].by_tag()[tag][1] == frozenset(), f"{tag} gained flags"
    _record(
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
        imap = _imap_login(ports["imap"])
        assert imap.select("INBOX")[0] == "OK"
        assert imap.uid("STORE", "1:3", "+FLAGS.SILENT", r"(\Deleted)")[0] == "OK"
        typ, _ = imap.expunge()
        before.op_acked = typ == "OK"

    after, took = _run_case("expunge", armed, drive, tmp_path, template)
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
    _record("expunge", armed, _gone_or_kept(after.state[INBOX], seeds), took, after)


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

    after, took = _run_case("pop3", armed, drive, tmp_path, template)
    seeds = ["seed-1", "seed-2", "seed-3"]
    have = set(after.state[INBOX].tags())
    if armed.startswith("expunge.unlinked"):
        assert have & set(seeds) == {"seed-2", "seed-3"}
    else:
        assert not have & set(seeds)
    _record("pop3", armed, _gone_or_kept(after.state[INBOX], seeds), took, after)


DEAD_LINES = 999


def _add_dead_lines(mail_dir: Path) -> dict:
    """Give alice's INBOX index 999 lines of messages long gone (UIDs 4..1002)."""
    index = mail_dir / FOLDERS[INBOX] / "dovecot-uidlist"
    _, floor, _ = _read_index(index)
    lines = "".join(f"{uid} :gone-{uid}\n" for uid in range(floor, floor + DEAD_LINES))
    with open(index, "a") as f:
        f.write(lines)
    return {INBOX: floor + DEAD_LINES}


@pytest.mark.parametrize("armed", ["compact.written:1", "compact.renamed:1"])
def test_index_compaction(armed, tmp_path, template):
    """EXPUNGE of seed-1 and seed-2 leaves 1001 dead lines to 1 live: the compaction that
    follows dies at ``armed``."""

    def drive(ports, before):
        imap = _imap_login(ports["imap"])
        assert imap.select("INBOX")[0] == "OK"
        assert imap.uid("STORE", "1:2", "+FLAGS.SILENT", r"(\Deleted)")[0] == "OK"
        typ, _ = imap.expunge()
        before.op_acked = typ == "OK"

    after, took = _run_case("compact", armed, drive, tmp_path, template, _add_dead_lines)
    have = set(after.state[INBOX].tags())
    assert not have & {"seed-1", "seed-2"}, "the expunge was durable before the compaction"
    assert after.state[INBOX].by_tag()["seed-3"][0] == 3
    lines = len(after.disk[INBOX].index)
    assert lines == (1 + DEAD_LINES + 2 if armed.startswith("compact.written") else 1), lines
    temps = [p.name for p in after.leftovers if p.name.startswith(".dovecot-uidlist.")]
    assert bool(temps) == armed.startswith("compact.written"), temps
    outcome = f"seed-3 kept as UID 3; index at crash: {lines} lines; next UID {after.next_uid}"
    _record(
        "compact",
        armed,
        outcome,
        took,
        after,
    )


# -- the table


def test_every_store_step_has_a_case():
    """Each store step of mailgw.crashpoint.STEPS is crashed at by some case above."""
    armed = {
        a.partition(":")[0]
        for a in [
            *SMTP_STEPS,
            "delivery.next_folder",
            *APPEND_STEPS,
            *STORE_STEPS,
            "recent.moved",
            "recent.dir_synced",
            *EXPUNGE_STEPS,
            "compact.written",
            "compact.renamed",
        ]
    }
    store_steps = {step for step in STEPS if step.startswith(STORE_PREFIXES)}
    assert store_steps <= armed, f"no case for {sorted(store_steps - armed)}"


def test_table_of_steps_and_outcomes():
    """Print the table of every case run in this session (``-s`` or ``-rA`` shows it)."""
    if not ROWS:
        pytest.skip("no crash case ran")
    print()
    print(_table())
