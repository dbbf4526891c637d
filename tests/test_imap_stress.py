"""Issue 11's stress test: 50 IMAP clients for 60 s on shared mailboxes, every response checked
against a model of the mailbox (tests/imap_model.py): 0 protocol errors, 0 disconnects, no state
divergence.

The server is the real one, ``twistd -n mailgw`` in its own process (its reactor does not share
a GIL with the client threads), on a loopback port.  5 users with 10 clients each (the default
``sessions_per_user_ip`` is 10; the config allows one more for the final fresh look); each
user's INBOX and Shared are the shared mailboxes.  Each client is a thread with a raw socket
doing random SELECT/EXAMINE, (UID) FETCH, (UID) STORE, APPEND, (UID) EXPUNGE, (UID) SEARCH,
NOOP, IDLE and a few bad commands.  A client owns the messages it APPENDs and is the only one to
change their flags, so every flag state any client is shown must be one its owner set, never an
older one than shown before, and to the owner exactly the last.  At the end a fresh session per
mailbox must hold every message not \\Deleted with its bytes and flags, and every client's view
after a NOOP must equal it.

Two faults it found are failures now that they are fixed: \\Recent of one message shown to
several read-write sessions (test_recent_goes_to_one_session_only), and a session that never
learnt of a message APPENDed while it SELECTed (a divergence of its view).

``MAILGW_STRESS_SECONDS`` shortens the run (default 60); ``MAILGW_STRESS_SEED`` replays a
workload (the seed is printed; thread interleaving is not replayed).  Run with ``-s`` to see the
counters and latencies.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
from imap_model import (
    DELETED,
    Connection,
    Disconnected,
    Message,
    ProtocolError,
    Registry,
    Response,
    View,
    flag_state,
    parse_response,
)
from mailgw_process import ServerProcess, write_config

SECONDS = float(os.environ.get("MAILGW_STRESS_SECONDS") or 60)
SEED = int(os.environ.get("MAILGW_STRESS_SEED") or random.SystemRandom().randrange(2**32))
USERS = [f"stress{n}@example.test" for n in range(5)]
CLIENTS_PER_USER = 10
PASSWORD = "stress-Pa55word"
FOLDERS = ("INBOX", "Shared")
KEYWORDS = ("$Stress", "KwA", "kwb")
FLAG_POOL = ("\\Seen", "\\Flagged", "\\Answered", "\\Draft", *KEYWORDS)
#: Seconds a client waits for any response before it counts the server as gone.
TIMEOUT = 60.0
#: Deliberately bad commands per client: the server hangs up after 20 protocol errors.
BAD_COMMANDS = 3
#: Mailbox size around which owners \Deleted more and more of their messages.
TARGET_SIZE = 60
_TEXT = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?-=+*/()[]<>'\"%"


def make_message(rng: random.Random, user: str, msgid: str) -> tuple[bytes, bytes]:
    """A message with a unique X-Stress-Id and random body lines (some ending like a literal's
    ``{n}``, starting with a dot or ``From``, or UTF-8); returns (bytes, its Subject line)."""
    subject = f"Subject: stress {msgid} {rng.choice(['hello', 'Re: plan', 'Grüße'])}".encode()
    head = (
        f"From: load@remote.test\r\nTo: {user}\r\n".encode()
        + subject
        + f"\r\nX-Stress-Id: {msgid}\r\nMessage-ID: <{msgid}@remote.test>\r\n\r\n".encode()
    )
    size = rng.choice([rng.randrange(400), rng.randrange(400, 4000), rng.randrange(4000, 40000)])
    lines, total = [], 0
    while total < size:
        line = "".join(rng.choice(_TEXT) for _ in range(rng.randrange(120)))
        line = rng.choice(["", "", "", ".", "From ", "Grüße ✓ "]) + line
        line += rng.choice(["", "", "", "", " {12}", "*"])
        lines.append(line.encode() + b"\r\n")
        total += len(lines[-1])
    return head + b"".join(lines), subject


class Stats:
    """Counters and latencies of all clients (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.operations: Counter = Counter()
        self.latency: dict[str, list[float]] = {}
        self.errors: list[tuple[str, str, str]] = []

    def timed(self, kind: str, seconds: float) -> None:
        """One command of ``kind`` answered in ``seconds``."""
        with self.lock:
            self.operations[kind] += 1
            self.latency.setdefault(kind, []).append(seconds)

    def error(self, category: str, who: str, detail: str) -> None:
        """A protocol error, disconnect or divergence."""
        with self.lock:
            self.errors.append((category, who, detail))

    def count(self, category: str) -> int:
        """How many errors of ``category``."""
        return sum(1 for error in self.errors if error[0] == category)

    def summary(self, examples: int = 3) -> str:
        """The errors by kind (numbers blanked out), then the first few with transcripts."""
        kinds = Counter(
            re.sub(r"\d+", "N", f"{category}: {detail.splitlines()[0]}")[:160]
            for category, _, detail in self.errors
        )
        lines = [f"{count:5} x {kind}" for kind, count in kinds.most_common()]
        lines += [
            f"\n{category} ({who}): {detail}" for category, who, detail in self.errors[:examples]
        ]
        return "\n".join(lines)

    def report(self, clients: int, seconds: float) -> str:
        """The table printed at the end of the run."""
        rows = [f"IMAP stress: seed {SEED}, {clients} clients, {seconds:.0f} s"]
        rows.append(f"  {'command':<12}{'count':>8}{'p50 ms':>10}{'p99 ms':>10}")
        for kind in sorted(self.latency):
            times = sorted(self.latency[kind])
            p50, p99 = times[len(times) // 2], times[min(len(times) - 1, len(times) * 99 // 100)]
            rows.append(f"  {kind:<12}{len(times):>8}{p50 * 1000:>10.1f}{p99 * 1000:>10.1f}")
        rows.append(f"  operations {sum(self.operations.values())}")
        rows.append(
            f"  protocol errors {self.count('protocol')}, disconnects {self.count('disconnect')},"
            f" divergences {self.count('divergence')}"
        )
        return "\n".join(rows)


class StressClient:
    """One raw IMAP session of ``user`` doing random commands and checking every response."""

    def __init__(self, number: int, user: str, port: int, registry: Registry, stats: Stats):
        self.number = number
        self.user = user
        self.port = port
        self.registry = registry
        self.stats = stats
        self.rng = random.Random(f"{SEED}/{number}")
        self.positions: dict = {}
        self.view: View | None = None
        self.conn: Connection | None = None
        self.tags = 0
        self.appended = 0
        self.bad_left = BAD_COMMANDS
        self.transcript: deque = deque(maxlen=20)
        self.failed = False
        self.operations = 0

    # -- the wire -------------------------------------------------------------------------

    def receive(self) -> Response:
        """The next response, parsed strictly."""
        raw = self.conn.read()
        self.transcript.append(b"S: " + raw[:200])
        return parse_response(raw)

    def send(self, data: bytes) -> None:
        """Send bytes, noted in the transcript."""
        self.transcript.append(b"C: " + data[:200])
        self.conn.send(data)

    def handle(self, response: Response, command: str | None) -> None:
        """Check one untagged response and update the view from it."""
        if response.kind != "untagged":
            raise ProtocolError(f"unexpected {response.kind} response during {command}")
        if response.name == "BYE" and command != "LOGOUT":
            raise Disconnected(f"BYE during {command}: {response.raw!r}")
        if response.name in ("NO", "BAD"):
            raise ProtocolError(f"untagged {response.name} during {command}")
        if response.code == "CLOSED" and command in ("SELECT", "EXAMINE"):
            self.view.uids, self.view.flags = [], {}
        elif self.view is not None and response.name != "BYE":
            self.view.apply(response, command)
        elif response.name not in ("OK", "CAPABILITY", "BYE"):
            raise ProtocolError(f"{response.name} with no mailbox selected")

    def drain(self) -> None:
        """Take what the server sent between commands (EXPUNGE then is a protocol error)."""
        while self.conn.ready():
            self.handle(self.receive(), None)

    def run(
        self,
        kind: str,
        command: bytes,
        allowed: tuple = ("OK",),
        literal: bytes | None = None,
        sync: bool = False,
        hook: Callable[[Response], None] | None = None,
    ) -> tuple[Response, list[Response]]:
        """Send ``command`` (its literal as ``{n+}`` or, with ``sync``, ``{n}``), check every
        response until the tagged one, whose status must be in ``allowed``; ``hook`` sees each
        untagged response after the view took it.  Return (tagged, untagged list)."""
        context = kind
        self.drain()
        self.tags += 1
        tag = b"c%d.%d" % (self.number, self.tags)
        if self.view is not None:
            self.view.fetched = {}
        started = time.monotonic()
        if literal is None:
            self.send(tag + b" " + command + b"\r\n")
        elif sync:
            self.send(tag + b" " + command + b" {%d}\r\n" % len(literal))
            self.wait_continuation(context)
            self.send(literal + b"\r\n")
        else:
            self.send(tag + b" " + command + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        untagged = []
        while True:
            response = self.receive()
            if response.kind == "tagged":
                break
            self.handle(response, context)
            untagged.append(response)
            if hook:
                hook(response)
        self.stats.timed(kind, time.monotonic() - started)
        if response.tag != tag:
            raise ProtocolError(f"tagged reply {response.tag!r} to command {tag!r}")
        if response.name not in allowed:
            raise ProtocolError(f"{command[:100]!r} answered {response.raw[:200]!r}")
        return response, untagged

    def wait_continuation(self, context: str) -> None:
        """Read (and check) untagged responses up to a ``+`` continuation request."""
        while (response := self.receive()).kind != "continue":
            self.handle(response, context)

    def login(self) -> None:
        """Connect, check the greeting and log in."""
        self.conn = Connection(self.port, TIMEOUT)
        greeting = self.receive()
        if greeting.kind != "untagged" or greeting.name != "OK":
            raise ProtocolError(f"greeting {greeting.raw!r}")
        self.run("LOGIN", f"LOGIN {self.user} {PASSWORD}".encode())

    def folder(self, name: str) -> tuple:
        """The registry's key of the user's folder ``name``."""
        return (self.user, name)

    # -- the operations -------------------------------------------------------------------

    def op_select(self, name: str | None = None, readonly: bool | None = None) -> None:
        """SELECT or EXAMINE: UIDVALIDITY unchanged, UIDNEXT past every UID handed out."""
        name = name or self.rng.choice(FOLDERS)
        readonly = self.rng.random() < 0.25 if readonly is None else readonly
        self.drain()
        folder = self.folder(name)
        highest = self.registry.highest_uid(folder)
        self.view = View(self.registry, self.number, folder, readonly, self.positions)
        verb = "EXAMINE" if readonly else "SELECT"
        tagged, untagged = self.run(verb, f"{verb} {name}".encode())
        if tagged.code != ("READ-ONLY" if readonly else "READ-WRITE"):
            raise ProtocolError(f"{verb} answered {tagged.raw!r}")
        codes = {r.code: r.code_data for r in untagged if r.code}
        if "UIDVALIDITY" not in codes or not any(r.name == "EXISTS" for r in untagged):
            raise ProtocolError(f"{verb} without UIDVALIDITY or EXISTS")
        self.registry.check_uidvalidity(folder, codes["UIDVALIDITY"])
        if codes.get("UIDNEXT", highest + 1) <= highest:
            raise ProtocolError(f"UIDNEXT {codes['UIDNEXT']} after APPENDUID {highest}")

    def op_fetch(self) -> None:
        """FETCH of flags, bodies or a header field: every message asked for not \\Deleted is
        answered with every item asked for."""
        count = len(self.view.uids)
        if not count:
            return self.op_append()
        shape = self.rng.random()
        unknown = [n for n, uid in enumerate(self.view.uids, 1) if uid is None]
        if unknown and shape < 0.3:
            first = unknown[0]
            sequence, wanted = {*range(first, count + 1)}, f"{first}:*"
            items = ("UID", "FLAGS")
        elif shape < 0.55:
            low = self.rng.randrange(1, count + 1)
            high = self.rng.randrange(low, count + 1)
            sequence, wanted = {*range(low, high + 1)}, f"{low}:{high}"
            items = ("UID", "FLAGS")
        else:
            sequence = set(self.rng.sample(range(1, count + 1), min(count, 3)))
            wanted = ",".join(map(str, sorted(sequence)))
            items = self.rng.choice(
                [
                    ("UID", "RFC822.SIZE", "BODY[]"),
                    ("UID", "FLAGS", "BODY[HEADER.FIELDS (Subject)]"),
                ]
            )
        asked = " ".join(items).replace("BODY[", "BODY.PEEK[")
        tagged, _ = self.run("FETCH", f"FETCH {wanted} ({asked})".encode(), allowed=("OK", "NO"))
        self.check_answered([self.view.uids[n - 1] for n in sequence], items, tagged)

    def op_uid_fetch(self) -> None:
        """UID FETCH of known UIDs (and one that does not exist): each answered, with its UID."""
        known = [uid for uid in self.view.uids if uid is not None]
        if not known:
            return self.op_fetch()
        uids = self.rng.sample(known, min(len(known), self.rng.choice([1, 2, 3])))
        items = self.rng.choice([("FLAGS",), ("FLAGS", "RFC822.SIZE", "BODY[]")])
        asked = " ".join(items).replace("BODY[", "BODY.PEEK[")
        wanted = ",".join(map(str, sorted(uids) + [4000000000]))
        command = f"UID FETCH {wanted} ({asked})".encode()
        tagged, _ = self.run("UID FETCH", command, allowed=("OK", "NO"))
        self.check_answered(uids, ("UID", *items), tagged)

    def check_answered(self, uids: list, items: tuple, tagged: Response) -> None:
        """Each message of ``uids`` (None: not known) not \\Deleted got all of ``items``; NO
        only if one may be expunged by another session (RFC 2180 4.1.1)."""
        names = {item.upper() for item in items}
        messages = [uid and self.registry.lookup(self.view.folder, uid) for uid in uids]
        if tagged.name == "NO" and all(m and not m.deleted for m in messages):
            raise ProtocolError(f"FETCH of {uids}, none \\Deleted, answered {tagged.raw!r}")
        for uid, message in zip(uids, messages, strict=True):
            if message and not message.deleted and uid in self.view.uids:
                missing = names - set(self.view.fetched.get(uid, {}))
                if missing:
                    raise ProtocolError(f"FETCH of UID {uid} lacked {sorted(missing)}")

    def own_messages(self) -> list[tuple[int, Message]]:
        """(sequence number, message) of the messages in view this client owns, not \\Deleted."""
        out = []
        for n, uid in enumerate(self.view.uids, 1):
            message = uid and self.registry.lookup(self.view.folder, uid)
            if message and message.owner == self.number and not message.deleted:
                out.append((n, message))
        return out

    def op_store(self) -> None:
        """(UID) STORE +FLAGS/-FLAGS/FLAGS[.SILENT] on own messages: the server reports (unless
        silent) exactly the flags the change gives; \\Deleted more often as the mailbox fills."""
        if self.view.readonly:
            return self.op_refused(b"STORE 1 +FLAGS (\\Seen)")
        own = self.own_messages()
        if not own:
            return self.op_append()
        targets = self.rng.sample(own, min(len(own), self.rng.choice([1, 1, 2, 3])))
        mode = self.rng.choice(["+FLAGS", "-FLAGS", "FLAGS"])
        flags = self.rng.sample(FLAG_POOL, self.rng.randrange(0 if mode == "FLAGS" else 1, 4))
        if self.rng.random() < min(0.5, len(self.view.uids) / TARGET_SIZE / 2):
            mode, flags = (
                ("FLAGS", [*flags, "\\Deleted"]) if mode == "FLAGS" else ("+FLAGS", [DELETED])
            )
        silent = self.rng.random() < 0.3
        by_uid = self.rng.random() < 0.5
        change = flag_state([f.lower() for f in flags])
        expected = {}
        for _, message in targets:
            old = message.history[-1]
            new = old | change if mode == "+FLAGS" else old - change if mode == "-FLAGS" else change
            self.registry.set_flags(message, new)
            expected[message.uid] = new
        which = sorted(m.uid if by_uid else n for n, m in targets)
        command = f"{'UID ' if by_uid else ''}STORE {','.join(map(str, which))} "
        command += f"{mode}{'.SILENT' if silent else ''} ({' '.join(flags)})"
        self.run("UID STORE" if by_uid else "STORE", command.encode())
        for uid, new in expected.items():
            got = self.view.fetched.get(uid, {})
            if not silent and DELETED not in new:
                if flag_state(got.get("FLAGS", ["<none>"])) != new or (by_uid and "UID" not in got):
                    raise ProtocolError(f"{command} answered UID {uid} with {got}, not {new}")
            if uid in self.view.uids:
                self.view.flags[uid] = new
            message = self.registry.lookup(self.view.folder, uid)
            self.positions[(self.view.folder, uid)] = len(message.history) - 1

    def op_append(self) -> None:
        """APPEND (LITERAL+ or synchronising, with flags, sometimes a date): APPENDUID given."""
        folder = self.rng.choice(FOLDERS)
        self.appended += 1
        msgid = f"{SEED}-{self.number}-{self.appended}"
        body, subject = make_message(self.rng, self.user, msgid)
        flags = self.rng.sample(FLAG_POOL, self.rng.choice([0, 0, 1, 2]))
        message = Message(msgid, self.folder(folder), self.number, body, subject)
        self.registry.add(message, flag_state([f.lower() for f in flags]))
        command = f"APPEND {folder}" + (f" ({' '.join(flags)})" if flags else "")
        if self.rng.random() < 0.3:
            command += ' "03-Dec-2026 10:00:00 +0100"'
        sync = self.rng.random() < 0.3
        tagged, _ = self.run("APPEND", command.encode(), literal=body, sync=sync)
        if tagged.code != "APPENDUID":
            raise ProtocolError(f"APPEND answered {tagged.raw!r} (UIDPLUS: APPENDUID)")
        self.registry.bind(message, *tagged.code_data)

    def op_expunge(self) -> None:
        """EXPUNGE or UID EXPUNGE: no message this client was told is \\Deleted stays (after a
        NOOP, for those another session expunged first)."""
        if self.view.readonly:
            return self.op_refused(b"EXPUNGE")
        deleted = [u for u in self.view.uids if u and DELETED in self.view.flags.get(u, ())]
        if deleted and self.rng.random() < 0.5:
            gone = self.rng.sample(deleted, min(len(deleted), 3))
            command = f"UID EXPUNGE {','.join(map(str, sorted(gone)))}"
            self.run("UID EXPUNGE", command.encode())
        else:
            gone = deleted
            self.run("EXPUNGE", b"EXPUNGE")
        if set(gone) & set(self.view.uids):
            # Already expunged by another session: its EXPUNGE may come at the next command.
            self.run("NOOP", b"NOOP")
        stayed = set(gone) & set(self.view.uids)
        if stayed:
            raise ProtocolError(f"UIDs {sorted(stayed)} \\Deleted, there after EXPUNGE and NOOP")

    def op_search(self) -> None:
        """(UID) SEARCH ALL/UNSEEN/DELETED: one SEARCH response, consistent with the view."""
        criterion = self.rng.choice(["ALL", "UNSEEN", "DELETED"])
        by_uid = self.rng.random() < 0.5
        found = []

        def check(response: Response) -> None:
            if response.name == "SEARCH":
                found.append(response.data)
                self.view.check_search(response.data, by_uid, criterion)

        kind = "UID SEARCH" if by_uid else "SEARCH"
        self.run(kind, f"{kind} {criterion}".encode(), hook=check)
        if len(found) != 1:
            raise ProtocolError(f"{kind} {criterion} gave {len(found)} SEARCH responses")

    def op_noop(self) -> None:
        """NOOP."""
        self.run("NOOP", b"NOOP")

    def op_idle(self) -> None:
        """IDLE for up to 1.5 s, taking what comes, then DONE: answered OK."""
        self.drain()
        self.tags += 1
        tag = b"c%d.%d" % (self.number, self.tags)
        self.send(tag + b" IDLE\r\n")
        self.wait_continuation("IDLE")
        deadline = time.monotonic() + self.rng.uniform(0.05, 1.5)
        while (left := deadline - time.monotonic()) > 0:
            if self.conn.ready(left):
                self.handle(self.receive(), "IDLE")
        started = time.monotonic()
        self.send(b"DONE\r\n")
        while (response := self.receive()).kind != "tagged":
            self.handle(response, "IDLE")
        self.stats.timed("IDLE", time.monotonic() - started)
        if response.tag != tag or response.name != "OK":
            raise ProtocolError(f"IDLE ... DONE answered {response.raw!r}")

    def op_bad(self) -> None:
        """A command with bad syntax, an unknown one, or a message number out of range: BAD (or
        NO for the number), and the session goes on."""
        if self.bad_left <= 0:
            return self.op_noop()
        self.bad_left -= 1
        kind, command, allowed = self.rng.choice(
            [
                ("BAD", b"XYZZY", ("BAD",)),
                ("FETCH", b"FETCH 1 (FLAGS", ("BAD",)),
                ("FETCH", b"FETCH 4000000000 (FLAGS)", ("BAD", "NO")),
            ]
        )
        self.run(kind, command, allowed=allowed)

    def op_refused(self, command: bytes) -> None:
        """STORE or EXPUNGE in a read-only mailbox: NO (only a few times per client)."""
        if self.bad_left <= 0 or not self.view.uids:
            return self.op_select(readonly=False)
        self.bad_left -= 1
        self.run(command.split()[0].decode(), command, allowed=("NO",))

    # -- the run --------------------------------------------------------------------------

    def work(self, stop: threading.Event) -> None:
        """Random operations until ``stop``; errors recorded, never raised."""
        weighted = [
            (self.op_select, 5),
            (self.op_fetch, 25),
            (self.op_uid_fetch, 10),
            (self.op_store, 20),
            (self.op_append, 12),
            (self.op_expunge, 6),
            (self.op_search, 10),
            (self.op_noop, 5),
            (self.op_idle, 6),
            (self.op_bad, 1),
        ]
        operations, weights = zip(*weighted, strict=True)
        self.guarded(self.login)
        self.guarded(lambda: self.op_select(readonly=False))
        while not self.failed and not stop.is_set():
            self.guarded(self.rng.choices(operations, weights)[0])
            self.operations += 1

    def guarded(self, step: Callable[[], object]) -> None:
        """Run ``step`` unless this client failed; a failure is recorded with the transcript."""
        if self.failed:
            return
        try:
            step()
        except Exception as error:  # a harness bug must fail the test too
            self.failed = True
            if isinstance(error, Disconnected | OSError):
                category = "disconnect"
            else:
                category = "protocol" if isinstance(error, ProtocolError) else "harness"
            tail = b"\n".join(self.transcript).decode(errors="replace")
            self.stats.error(category, f"client {self.number}", f"{error}\n{tail}")

    def compare(self, fresh: dict) -> None:
        """After NOOP, this view is the fresh session's: same UIDs, same flags where known."""
        self.run("NOOP", b"NOOP")
        if None in self.view.uids:
            self.run("FETCH", b"FETCH 1:* (UID)")
        uids, flags = fresh[self.view.folder]
        if self.view.uids != uids:
            gone, new = set(self.view.uids) - set(uids), set(uids) - set(self.view.uids)
            detail = (
                f"UIDs of {self.view.folder}: {sorted(gone, key=str)} still here, {sorted(new)}"
                f" unseen ({len(self.view.uids)} against {len(uids)})"
                + "\n"
                + b"\n".join(self.transcript).decode(errors="replace")
            )
            self.stats.error("divergence", f"client {self.number}", detail)
        for uid, state in self.view.flags.items():
            if flags.get(uid, state) != state:
                detail = (
                    f"UID {uid} of {self.view.folder}: {sorted(state)}, not {sorted(flags[uid])}"
                )
                self.stats.error("divergence", f"client {self.number}", detail)

    def logout(self) -> None:
        """LOGOUT: BYE, then OK."""
        _, untagged = self.run("LOGOUT", b"LOGOUT")
        if [r.name for r in untagged] != ["BYE"]:
            raise ProtocolError(f"LOGOUT answered {[r.raw for r in untagged]}")
        self.conn.close()


def fresh_state(client: StressClient, registry: Registry, stats: Stats) -> dict:
    """A fresh session's EXAMINE and UID FETCH 1:* (FLAGS BODY.PEEK[]) of every mailbox of its
    user, checked against the registry: every message not \\Deleted there with its last flags,
    none seen expunged; {folder: (UIDs, {UID: flags})}."""
    out = {}
    for name in FOLDERS:
        client.op_select(name, readonly=True)
        folder = client.view.folder
        client.run("UID FETCH", b"UID FETCH 1:* (FLAGS BODY.PEEK[])")
        uids, flags = list(client.view.uids), dict(client.view.flags)
        out[folder] = (uids, flags)
        present = set(uids)
        for (where, uid), message in sorted(registry.by_uid.items()):
            if where != folder:
                continue
            if uid in present and (where, uid) in registry.expunged:
                stats.error("divergence", str(folder), f"UID {uid} expunged, and back")
            elif uid in present and flags.get(uid) != message.history[-1]:
                detail = (
                    f"UID {uid}: {sorted(flags.get(uid, ()))}, set {sorted(message.history[-1])}"
                )
                stats.error("divergence", str(folder), detail)
            elif uid not in present and not message.deleted:
                stats.error("divergence", str(folder), f"UID {uid} lost, never \\Deleted")
    return out


@pytest.fixture
def imap_port(tmp_path: Path):
    """The real server (twistd) with the stress users, its IMAP port; its log must hold no
    traceback at the end."""
    extra = f"\n[limits]\nsessions_per_user_ip = {CLIENTS_PER_USER + 1}\n"
    config = write_config(tmp_path, services=("imap",), extra=extra)
    (tmp_path / "data").mkdir()
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    (tmp_path / "data" / "passwd").write_text(
        "".join(f"{user}:{{BLF-CRYPT}}{hashed}\n" for user in USERS)
    )
    server = ServerProcess(config).start()
    yield server.ports["imap"]
    assert server.stop() == 0
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]


@pytest.mark.timeout(int(SECONDS) + 240)
def test_fifty_clients_on_shared_mailboxes_stay_in_sync(imap_port):
    """50 clients for SECONDS on 5 users' INBOX and Shared: 0 protocol errors, 0 disconnects,
    no divergence between any client's view, a fresh session and the model."""
    registry, stats = Registry(), Stats()
    for user in USERS:
        setup = StressClient(-1, user, imap_port, registry, stats)
        setup.login()
        setup.run("CREATE", b"CREATE Shared")
        setup.logout()
    clients = [
        StressClient(n, USERS[n % len(USERS)], imap_port, registry, stats)
        for n in range(len(USERS) * CLIENTS_PER_USER)
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=c.work, args=(stop,), daemon=True) for c in clients]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(SECONDS)
    stop.set()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    elapsed = time.monotonic() - started
    assert not any(thread.is_alive() for thread in threads), "a client hung"
    fresh = {}
    for n, user in enumerate(USERS):
        checker = StressClient(1000 + n, user, imap_port, registry, stats)
        checker.guarded(checker.login)
        checker.guarded(lambda c=checker: fresh.update(fresh_state(c, registry, stats)))
        checker.guarded(checker.logout)
    for client in clients:
        client.guarded(lambda c=client: c.compare(fresh))
        client.guarded(client.logout)
    print("\n" + stats.report(len(clients), elapsed))
    print(f"  \\Recent shown to a second read-write session: {registry.recent_conflicts} times")
    assert not stats.errors, stats.summary()
    assert min(client.operations for client in clients) >= 1, "a client was starved"


def test_recent_goes_to_one_session_only(imap_port):
    """A and B select an empty INBOX; C appends m1; A's NOOP takes it as recent; B appends m2:
    m1 is not \\Recent for B, and m2 is \\Recent for one of A and B only (RFC 3501 2.3.2)."""
    registry, stats = Registry(), Stats()
    a, b, c = (StressClient(900 + n, USERS[0], imap_port, registry, stats) for n in range(3))
    for client in (a, b, c):
        client.login()
    a.op_select("INBOX", readonly=False)
    b.op_select("INBOX", readonly=False)

    def append(writer: StressClient) -> None:
        msgid = f"recent-{writer.number}"
        body, subject = make_message(writer.rng, writer.user, msgid)
        message = Message(msgid, writer.folder("INBOX"), 0, body, subject)
        registry.add(message, frozenset())
        tagged, _ = writer.run("APPEND", b"APPEND INBOX", literal=body)
        registry.bind(message, *tagged.code_data)

    append(c)
    a.op_noop()
    append(b)
    for client in (a, b):
        client.run("FETCH", b"FETCH 1:* (UID FLAGS)")


@pytest.mark.parametrize(
    "raw",
    [
        b"* 0 EXPUNGE",
        b"* 1 FETCH (UID 0)",
        b"* 1 FETCH (FLAGS (\\Seen \\Seen))",
        b"* 1 FETCH (UID 1 UID 1)",
        b"* 1 FETCH (BODY[] {5}\r\nabc)",
        b"* 1 FETCH (MODSEQ (5))",
        b"* 1 FETCH (UID 1",
        b"* 3 EXISTS now",
        b"* VANISHED 1:3",
        b"* FLAGS (\\Recent)",
        b"* SEARCH 1 0",
        b"* OK [UIDVALIDITY 0] zero",
        b"* OK text\nmore",
        b"a+1 OK done",
        b"a1 MAYBE done",
        b"a1 OK",
        b"+",
    ],
)
def test_parser_rejects_responses_off_the_grammar(raw):
    """The checker itself: what no server may send is a ProtocolError."""
    with pytest.raises(ProtocolError):
        parse_response(raw)


def test_parser_reads_fetch_items_literals_and_codes():
    """FETCH items in any order with literals inside, and response codes, parse to values."""
    fetch = parse_response(b"* 2 FETCH (FLAGS (\\Seen KwA) BODY[] {5}\r\nab{3} UID 7)")
    assert fetch.number == 2 and fetch.data == {
        "FLAGS": ["\\seen", "kwa"],
        "BODY[]": b"ab{3}",
        "UID": 7,
    }
    tagged = parse_response(b"t1 OK [APPENDUID 9 12] APPEND completed")
    assert (tagged.tag, tagged.name, tagged.code, tagged.code_data) == (
        b"t1",
        "OK",
        "APPENDUID",
        (9, 12),
    )


def test_model_catches_what_would_desynchronise_a_client():
    """EXPUNGE during FETCH, EXISTS going down, UIDs out of order, flags older than shown, bytes
    other than APPENDed: each a ProtocolError."""
    registry = Registry()
    folder = ("u@example.test", "INBOX")
    message = Message("m1", folder, 1, b"Subject: s\r\n\r\nbody\r\n", b"Subject: s")
    registry.add(message, frozenset())
    registry.bind(message, 5, 10)
    registry.set_flags(message, frozenset({"\\seen"}))
    view = View(registry, 2, folder, False, {})
    view.apply(parse_response(b"* 2 EXISTS"), "NOOP")
    view.apply(parse_response(b"* 2 FETCH (UID 10 FLAGS (\\Seen))"), "FETCH")
    bad = [
        (b"* 1 EXPUNGE", "FETCH"),
        (b"* 1 EXISTS", "NOOP"),
        (b"* 1 FETCH (UID 11)", "FETCH"),
        (b"* 2 FETCH (FLAGS ())", "NOOP"),
        (b"* 2 FETCH (BODY[] {4}\r\nbody)", "FETCH"),
        (b"* 3 FETCH (FLAGS ())", "NOOP"),
    ]
    for raw, command in bad:
        with pytest.raises(ProtocolError):
            view.apply(parse_response(raw), command)
