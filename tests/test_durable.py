"""mailgw.durable: what a writer killed in ``replace_file`` leaves, and who removes it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from mailgw.durable import STALE_TEMP_SECONDS, remove_stale_temps, replace_file

KILLED_WRITER = """
import sys
from pathlib import Path
from mailgw.durable import replace_file
replace_file(Path(sys.argv[1]), b"half done\\n", crash_steps=("passwd.temp_written", ""))
"""


OUTPUT = {"capture_output": True, "text": True, "check": True, "timeout": 30}


def temps(path: Path) -> list[str]:
    """The temp files beside ``path``."""
    return sorted(n for n in os.listdir(path.parent) if n.startswith(f".{path.name}."))


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_bytes(b"old\n")
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path)],
        env={**os.environ, "MAILGW_CRASH_AT": "passwd.temp_written"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == -9 and "mailgw crash point: passwd.temp_written" in done.stderr
    [left] = temps(path)
    assert re.fullmatch(r"\.passwd\.\d+\.\d+\.tmp", left)
    assert (tmp_path / left).read_bytes() == b"half done\n"
    assert path.read_bytes() == b"old\n", "the file itself is untouched"
    replace_file(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert temps(path) == [], "the dead writer's temp file is gone"


def test_own_name_left_by_a_dead_process_with_the_same_pid_does_not_block(tmp_path) -> None:
    """A restarted server can get the pid (and thread id) of the one that died (a container's
    pid 1): the temp name it makes is then taken, and is necessarily stale."""
    path = tmp_path / "subscriptions"
    own = tmp_path / f".subscriptions.{os.getpid()}.{threading.get_ident()}.tmp"
    own.write_bytes(b"from the previous life\n")
    replace_file(path, b"INBOX\n")
    assert path.read_bytes() == b"INBOX\n" and temps(path) == []


def test_live_writers_temp_files_stay_until_they_are_an_hour_old(tmp_path: Path) -> None:
    path = tmp_path / "dovecot-keywords"
    alive = os.getppid()
    other_thread = tmp_path / f".dovecot-keywords.{os.getpid()}.1.tmp"
    other_process = tmp_path / f".dovecot-keywords.{alive}.2.tmp"
    stuck = tmp_path / f".dovecot-keywords.{alive}.3.tmp"
    unrelated = [tmp_path / ".dovecot-keywords.x.tmp", tmp_path / ".dovecot-keywords.1.2.3.tmp"]
    for temp in (other_thread, other_process, stuck, *unrelated):
        temp.write_bytes(b"")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stuck, (old, old))
    remove_stale_temps(path)
    assert temps(path) == sorted(p.name for p in (other_thread, other_process, *unrelated))


def test_ports_file_and_tls_temp_names_are_swept_too(tmp_path: Path) -> None:
    """``.<name>.<pid>.tmp``, as the ports file and the generated TLS files are written."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **OUTPUT)
    dead = child.stdout.strip()
    path = tmp_path / "key.pem"
    (tmp_path / f".key.pem.{dead}.tmp").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    remove_stale_temps(path)
    assert temps(path) == []
