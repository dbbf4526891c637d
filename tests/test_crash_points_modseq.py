"""SIGKILL at every durable step of the store's write paths, seen through modseqs.

Each case seeds alice's INBOX (three messages, the first \\Seen), then runs a driver in a child
process with ``MAILGW_CRASH_AT=STEP`` (``mailgw.crashpoint``): it opens the folder, reports
what a client would sync (HIGHESTMODSEQ, every message's modseq and flags), and makes one
change until it kills itself at that step.  A fresh process then opens the folder over the
same Maildir, reports again, and appends a message and sets its flags.  The checks, against the
report made before the crash (the last thing a client saw):

- HIGHESTMODSEQ never went back, and the next change gets a modseq above it;
- no modseq was reused: a message still at a modseq it was reported with has the very flags it
  was reported with; one whose flags or modseq changed (the crashed change, done or not, or its
  undoing) is above the reported HIGHESTMODSEQ, and so is a message that was not there;
- a reported message that is gone is in ``vanished_since`` the reported HIGHESTMODSEQ;
- a change is done or not, per message: old flags or new ones, present or gone.

The paths: ``create`` (the index made at a folder's first open), ``append``, ``deliver`` (the
group commit), ``flags`` (a STORE on three messages), ``expunge`` (three messages), ``external``
(a flag change by another program, found by a rescan) and ``compact`` (the index rewritten,
its thresholds lowered in the driver).  The table of outcomes is printed by the last test
(``-s`` or ``-rA``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mailgw.crashpoint import STEPS
from mailgw.store import MaildirStore
from mailgw.store import modseq as modseq_index

USER = "alice@example.test"
HOST = "mx.example.test"
SEEN, FLAGGED = "\\Seen", "\\Flagged"
ROOT = Path(__file__).resolve().parent.parent

#: The child process: ``python -c DRIVER ARGS`` (ARGS as JSON); prints one JSON report per line.
DRIVER = r"""
import json, os, sys
from mailgw.store import MaildirStore
from mailgw.store import modseq as modseq_index

args = json.loads(sys.argv[1])
if args["op"] == "compact":
    modseq_index.COMPACT_MIN_TAIL = 0
    modseq_index.COMPACT_TAIL_PER_MESSAGE = 0
store = MaildirStore(args["mail"], args["tmp"], "mx.example.test")
folder = store.folder("alice@example.test")


def report():
    messages = {m.uid: [m.modseq, sorted(m.flags)] for m in folder.messages()}
    highest = folder.highest_modseq
    print(json.dumps({"highest": highest, "messages": messages,
                      "vanished": folder.vanished_since(args["since"] or highest)}), flush=True)


report()
op = args["op"]
if op == "append":
    folder.append(b"Subject: appended\r\n\r\nx\r\n", ["\\Flagged"])
elif op == "deliver":
    message = store.incoming()
    message.write(b"Subject: delivered\r\n\r\nx\r\n")
    message.commit(["alice@example.test"])
elif op in ("flags", "compact"):
    folder.set_flags_many([1, 2, 3], ["\\Flagged"], "add")
elif op == "expunge":
    folder.expunge([1, 2, 3])
elif op == "external":
    info = folder.get(2)
    os.rename(folder.path / info.subdir / info.filename,
              folder.path / "cur" / (info.key + ":2,F"))
    folder.messages()
elif op == "next":
    uid = folder.append(b"Subject: next\r\n\r\nx\r\n")
    folder.set_flags(uid, ["\\Draft"])
report()
"""

#: (path, armed step) of every case.
CASES = [
    ("create", "modseq.created"),
    ("append", "append.indexed"),
    ("append", "modseq.logged"),
    ("append", "append.renamed"),
    ("append", "append.dir_synced"),
    ("deliver", "delivery.indexed"),
    ("deliver", "modseq.logged"),
    ("deliver", "delivery.dir_synced"),
    ("flags", "modseq.logged"),
    ("flags", "flags.renamed:2"),
    ("flags", "flags.dir_synced"),
    ("expunge", "modseq.logged"),
    ("expunge", "expunge.unlinked:2"),
    ("expunge", "expunge.dir_synced"),
    ("external", "modseq.logged"),
    ("compact", "modseq.compact_written"),
    ("compact", "modseq.compact_renamed"),
]
ROWS: list[tuple[str, str, str]] = []


def seed(root: Path, without_index: bool) -> dict:
    """alice's INBOX with UIDs 1..3, the first \\Seen; the store's arguments for the driver."""
    store = MaildirStore(root / "mail", root / "tmp", HOST)
    folder = store.folder(USER)
    for n in (1, 2, 3):
        folder.append(f"Subject: seed {n}\r\n\r\nbody\r\n".encode())
    folder.mark_seen_by_client([1, 2, 3])
    folder.set_flags(1, {SEEN})
    if without_index:
        (folder.path / modseq_index.MODSEQ_FILE).unlink()
    return {"mail": str(root / "mail"), "tmp": str(root / "tmp")}


def run_driver(args: dict, armed: str = "") -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run DRIVER with ``MAILGW_CRASH_AT=armed``; the process and its reports."""
    env = {**os.environ, "MAILGW_CRASH_AT": armed, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    for report in reports:
        report["messages"] = {int(uid): (m, set(f)) for uid, (m, f) in report["messages"].items()}
    return done, reports


def check(synced: dict, after: dict, path: str) -> str:
    """The invariants of the module docstring; return the outcome for the table."""
    highest = synced["highest"]
    assert after["highest"] >= highest, "HIGHESTMODSEQ went back"
    outcome = []
    for uid, (modseq, flags) in after["messages"].items():
        if uid not in synced["messages"]:
            assert modseq > highest, f"new UID {uid} at modseq {modseq} <= {highest}"
            outcome.append(f"{uid} new")
            continue
        was_modseq, was_flags = synced["messages"][uid]
        assert modseq >= was_modseq, f"UID {uid}: modseq went back"
        if modseq == was_modseq:
            assert flags == was_flags, f"UID {uid}: modseq {modseq} reused for other flags"
        else:
            assert modseq > highest, f"UID {uid} changed at modseq {modseq} <= {highest}"
            assert flags in (was_flags, was_flags | {FLAGGED}), f"UID {uid}: half a change"
            outcome.append(f"{uid} {'flagged' if FLAGGED in flags else 'bumped'}")
    gone = sorted(set(synced["messages"]) - set(after["messages"]))
    if gone:
        assert path == "expunge", f"{path} lost {gone}"
        assert set(gone) <= set(after["vanished"]), f"{gone} not in VANISHED {after['vanished']}"
        outcome.append(f"{','.join(map(str, gone))} gone")
    return "; ".join(outcome) or "unchanged"


@pytest.mark.parametrize(("path", "armed"), CASES, ids=[f"{p}-{a}" for p, a in CASES])
def test_crash_keeps_modseqs_safe(path, armed, tmp_path):
    """The driver dies at ``armed`` during ``path``; a fresh process finds modseqs safe."""
    args = seed(tmp_path, without_index=path == "create")
    crashed, reports = run_driver({**args, "op": path, "since": 0}, armed)
    step = armed.partition(":")[0]
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert f"mailgw crash point: {step}\n" in crashed.stderr, crashed.stderr
    if path == "create":
        reports = [{"highest": 0, "messages": {}}]
    assert len(reports) == 1, "the crashing change was never acknowledged"
    [synced] = reports
    after_run, (after, following) = run_driver({**args, "op": "next", "since": synced["highest"]})
    assert after_run.returncode == 0, after_run.stderr
    outcome = check(synced, after, path)
    assert following["highest"] == after["highest"] + 2, "the next two changes go above"
    ROWS.append((path, armed, outcome))
    print(path, armed, outcome)


def test_every_modseq_step_has_a_case():
    """Each ``modseq.*`` step of mailgw.crashpoint.STEPS is crashed at by some case above."""
    armed = {step.partition(":")[0] for _, step in CASES}
    assert armed <= set(STEPS)
    assert {step for step in STEPS if step.startswith("modseq.")} <= armed


def test_table_of_outcomes():
    """Print the table of every case run in this session."""
    if not ROWS:
        pytest.skip("no crash case ran")
    widths = [max(len(row[i]) for row in ROWS) for i in range(3)]
    print()
    for row in ROWS:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
