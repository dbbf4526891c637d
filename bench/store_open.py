"""Benchmark: opening a 100,000-message Maildir folder, against Python's mailbox.Maildir.

Builds the folder once (message files written directly with the store's own names; the first
open indexes them all through the store's ordinary rescan, in one append to the index), then
measures over several runs (median):

(a) a fresh MaildirStore opening the folder and listing ``messages()``;
(b) ``mailbox.Maildir`` listing the keys and reading each message's flags from its table;

and one ``append()`` into the big folder (median of many), to show that delivery does not
rewrite the index.

    .venv/bin/python bench/store_open.py [--dir DIR] [--messages N] [--runs R]
"""

from __future__ import annotations

import argparse
import mailbox
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailgw.store import MaildirStore  # noqa: E402
from mailgw.store.files import unique_name  # noqa: E402

ADDRESS = "bench@example.test"
HOSTNAME = "bench.example.test"
FLAG_INFOS = ("2,", "2,S", "2,RS", "2,FS", "2,S", "2,DS")


def build(mail_dir: Path, tmp_dir: Path, count: int) -> Path:
    """Create ``count`` messages in the bench user's INBOX unless already there."""
    store = MaildirStore(mail_dir, tmp_dir, HOSTNAME)
    inbox = store.user_dir(ADDRESS)
    store.folder(ADDRESS)
    existing = len(os.listdir(inbox / "new")) + len(os.listdir(inbox / "cur"))
    if existing >= count:
        return inbox
    started = time.perf_counter()
    base = time.time() - count
    for i in range(existing, count):
        body = f"Subject: message {i}\r\nFrom: a@example.test\r\n\r\nbody {i}\r\n".encode()
        key = unique_name(HOSTNAME, len(body), base + i)
        if i % 10 == 0:
            path = inbox / "new" / key
        else:
            path = inbox / "cur" / f"{key}:{FLAG_INFOS[i % len(FLAG_INFOS)]}"
        with open(path, "xb") as f:
            f.write(body)
    os.sync()
    written = time.perf_counter() - started
    started = time.perf_counter()
    messages = MaildirStore(mail_dir, tmp_dir, HOSTNAME).folder(ADDRESS).messages()
    print(
        f"built {count - existing} message files in {written:.1f} s; "
        f"first open indexed {len(messages)} messages in {time.perf_counter() - started:.2f} s"
    )
    return inbox


def time_store_open(mail_dir: Path, tmp_dir: Path) -> tuple[float, int]:
    """Seconds to open a fresh store's folder and list its messages."""
    started = time.perf_counter()
    messages = MaildirStore(mail_dir, tmp_dir, HOSTNAME).folder(ADDRESS).messages()
    flags = sum(1 for m in messages if "\\Seen" in m.flags)
    elapsed = time.perf_counter() - started
    assert flags
    return elapsed, len(messages)


def time_python_mailbox(inbox: Path) -> tuple[float, int]:
    """Seconds for mailbox.Maildir to list keys and read each message's flags.

    Flags come from the table ``keys()`` builds (``_toc``, what ``get_info`` reads in Python
    3.13+); ``get_message(key).get_flags()`` would open every file.
    """
    started = time.perf_counter()
    box = mailbox.Maildir(inbox, factory=None, create=False)
    keys = box.keys()
    seen = 0
    toc = box._toc
    for key in keys:
        info = toc[key].partition(":")[2]
        if "S" in info.partition(",")[2]:
            seen += 1
    elapsed = time.perf_counter() - started
    assert seen
    return elapsed, len(keys)


def main() -> None:
    """Build, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="where to build (kept); default a temp dir")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--appends", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailgw-bench-") as scratch:
        root = args.dir or Path(scratch)
        mail_dir, tmp_dir = root / "mail", root / "tmp"
        inbox = build(mail_dir, tmp_dir, args.messages)

        ours, theirs = [], []
        for _ in range(args.runs):
            elapsed, n_ours = time_store_open(mail_dir, tmp_dir)
            ours.append(elapsed)
            elapsed, n_theirs = time_python_mailbox(inbox)
            theirs.append(elapsed)
        store_median = statistics.median(ours)
        mailbox_median = statistics.median(theirs)

        folder = MaildirStore(mail_dir, tmp_dir, HOSTNAME).folder(ADDRESS)
        index = inbox / "dovecot-uidlist"
        index_before = index.stat().st_size
        appends = []
        uids = []
        for i in range(args.appends):
            started = time.perf_counter()
            uids.append(folder.append(f"Subject: appended {i}\r\n\r\nx\r\n".encode()))
            appends.append(time.perf_counter() - started)
        index_growth = index.stat().st_size - index_before
        started = time.perf_counter()
        listed = len(folder.messages())
        cached = time.perf_counter() - started
        folder.expunge(uids)

    print(f"folder: {n_ours} messages (mailbox.Maildir sees {n_theirs})")
    print(f"(a) MaildirStore open + messages():      median {store_median * 1000:8.1f} ms")
    print(f"(b) mailbox.Maildir keys() + flags:     median {mailbox_median * 1000:8.1f} ms")
    print(f"    ratio (a)/(b): {store_median / mailbox_median:.2f}   ({args.runs} runs each)")
    print(
        f"append() into the big folder: median {statistics.median(appends) * 1000:.2f} ms, "
        f"max {max(appends) * 1000:.2f} ms over {args.appends}; "
        f"index grew {index_growth} octets ({index_growth / args.appends:.0f} per message)"
    )
    print(f"messages() again on the open folder ({listed} messages): {cached * 1000:.1f} ms")


if __name__ == "__main__":
    main()
