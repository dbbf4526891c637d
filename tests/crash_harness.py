"""The harness of ``test_crash_points.py``: crash a real server at a named step, restart it,
and read what the clients and the disk show.

``run_case`` starts ``twistd -n mailgw`` with ``MAILGW_CRASH_AT``, lets a driver work until the
server kills itself, checks the SIGKILL and the log line, reads the disk as the crash left it,
restarts, delivers a timed message, reads every folder over IMAP and POP3, and checks the
invariants every case shares (``check_common``); the cases check the rest.
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
#: What a client raises when the server dies under it.
CLIENT_ERRORS = (OSError, EOFError, smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto)
NEXT_DELIVERY_LIMIT = 1.0
#: Older than the 36 hours after which the store removes a crash's temporary files.
STALE_AGE = 37 * 3600

#: Rows of the table, in the order the cases ran.
ROWS: list[tuple[str, str, str, str, str]] = []


# -- messages that prove they are whole


def message(tag: str) -> bytes:
    """A message whose last line is the digest of its payload, so a torn copy is seen."""
    payload = b"".join(
        hashlib.sha256(f"{tag}/{i}".encode()).hexdigest().encode() + b"\r\n" for i in range(60)
    )
    digest = hashlib.sha256(payload).hexdigest().encode()
    header = f"From: {SENDER}\r\nSubject: {tag}\r\n\r\n".encode()
    return header + payload + b"digest " + digest + b"\r\n"


def is_whole(data: bytes) -> bool:
    """Does the body end with the digest of the payload before it (see ``message``)?"""
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


def tag_of(data: bytes) -> str:
    """The tag a message was made with (its Subject)."""
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
        """The client is about to add ``tag`` to ``folder``."""
        self.attempted.setdefault(folder, set()).add(tag)

    def ack(self, folder, tag: str, data: bytes, uid: int | None = None) -> None:
        """The server acknowledged ``data`` (as UID ``uid``, if it said) in ``folder``."""
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
        """tag -> (uid, flags, message)."""
        return {tag: (uid, flags, data) for uid, (tag, flags, data) in self.messages.items()}

    def tags(self) -> list:
        """The tags of the messages, in UID order."""
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
        messages[uid] = (tag_of(body), flags, body)
    return messages


def imap_login(port: int, user: str = ALICE) -> imaplib.IMAP4:
    """An IMAP session of ``user``."""
    imap = imaplib.IMAP4(HOST, port, timeout=10)
    imap.login(user, PASSWORD)
    return imap


def _imap_state(port: int) -> dict:
    """Every folder of FOLDERS, read with EXAMINE (which changes nothing)."""
    state = {}
    for user in (ALICE, BOB):
        imap = imap_login(port, user)
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


def send(port: int, recipients: list, data: bytes, timeout: float = 10) -> None:
    """Deliver ``data`` over SMTP; raise unless it is acknowledged."""
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


def age(paths, seconds: float) -> None:
    """Make these files look ``seconds`` old."""
    when = time.time() - seconds
    for path in paths:
        os.utime(path, (when, when))


def read_index(path: Path) -> tuple[int, int, dict]:
    """A dovecot-uidlist as (UIDVALIDITY, least UID not yet handed out, {key: UID})."""
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
                files.setdefault(tag_of(data), []).append((entry.name.partition(":")[0], sub))
        validity, floor, index = read_index(path / "dovecot-uidlist")
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


def make_template(root: Path) -> Template:
    """alice (INBOX: seed-1..3, read once so they are in cur/; the Archive every user gets,
    empty), bob (one message), all with their UIDs, made by the real server once."""
    config = write_config(root)
    (root / "data").mkdir()
    for user in (ALICE, BOB):
        added = mailgw(config, "user", "add", user, "--password-stdin", stdin=PASSWORD)
        assert added.returncode == 0, added.stderr
    _cheapen_hashes(root / "data" / "passwd")
    seeds = {f"seed-{n}": message(f"seed-{n}") for n in (1, 2, 3)}
    seeds["seed-bob"] = message("seed-bob")
    server = ServerProcess(config, env={CRASH_ENV: ""}).start()
    try:
        for tag, data in seeds.items():
            send(server.ports["smtp"], [BOB if tag == "seed-bob" else ALICE], data)
        imap = imap_login(server.ports["imap"])
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


def table_text() -> str:
    """The table of ROWS, aligned."""
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


def run_case(armed: str, drive, tmp_path: Path, template: Template, prepare=None):
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
    age(in_tmp, STALE_AGE)
    server = ServerProcess(config, env={CRASH_ENV: ""}).start()
    clean = False
    try:
        started = time.monotonic()
        try:
            send(server.ports["smtp"], [ALICE, BOB], message("next"), timeout=5)
        except (OSError, smtplib.SMTPException) as e:
            pytest.fail(f"the first delivery after the restart failed: {e!r}")
        took = time.monotonic() - started
        imap = imap_login(server.ports["imap"])
        assert imap.append("Archive", None, None, message("next"))[0] == "OK"
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
            assert is_whole(data), f"{folder}: half message visible over IMAP: UID {uid}"
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
        assert all(is_whole(m) for m in messages), f"{user}: half message over POP3"
        assert sorted(tag_of(m) for m in messages) == sorted(state[(user, "INBOX")].tags())
    # On disk: every file in new/ and cur/ is whole (nothing torn is ever visible).
    for relative in FOLDERS.values():
        for sub in ("new", "cur"):
            for entry in (mail_dir / relative / sub).iterdir():
                assert is_whole(entry.read_bytes()), f"torn file in {sub}/: {entry.name}"


def record(path: str, armed: str, outcome: str, took: float, after: After) -> None:
    """Add a row to the table (and print it)."""
    notes = []
    if any(disk.lock_left for disk in after.disk.values()):
        notes.append("lock left")
    if after.leftovers:
        kinds = sorted({leftover_kind(p.name) for p in after.leftovers})
        notes.append(f"left: {', '.join(kinds)}")
    if notes:
        outcome += f" [{'; '.join(notes)}]"
    row = (path, armed, "yes" if after.before.op_acked else "no", outcome, f"{took * 1000:.0f} ms")
    ROWS.append(row)
    print("  ".join(row))


def leftover_kind(name: str) -> str:
    """What a left-over file is, from its name."""
    if name.startswith("incoming-"):
        return "spool file"
    if name.startswith("."):
        return name.split(".")[1] + " temp"
    if ".lock." in name:
        return "lock temp"
    return "tmp/ file"


def presence(listing: Listing, tags) -> str:
    """``tag present`` or ``tag absent`` for each of ``tags``."""
    have = set(listing.tags())
    return ", ".join(f"{tag} {'present' if tag in have else 'absent'}" for tag in tags)
